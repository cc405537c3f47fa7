# Two entry points for people: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# cpu or gpu: which FAISS wheel to install (they provide the same module and must not coexist).
FAISS ?= cpu
STAMP := $(VENV)/.installed-$(FAISS)

# The demo: a SynthRS archive, indexed with the shipped default model, served on port 8000.
DEMO_N ?= 1000
DEMO_DATA := data/demo-synth
DEMO_INDEX := data/demo-index
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test lint unit bench-ftf bench-load demo demo-index clean browser compose-check vendor-map

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch and torchvision first, as an exact pair: this machine ships these wheels on disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[$(FAISS),ray,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Debian's Chromium for the search page's end-to-end tests (tests/e2e): Playwright drives it, never
# downloads one. Without root or apt the e2e tests skip, saying why.
browser:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	  echo "chromium not installed: tests/e2e will be skipped (apt-get install chromium)"

unit: $(STAMP) browser
	$(PY) -m pytest -q

test: lint unit

$(DEMO_DATA)/dataset.json: | $(STAMP)
	$(VENV)/bin/rsir synth --n $(DEMO_N) --seed 7 --out $(DEMO_DATA)

$(DEMO_INDEX)/CURRENT: $(DEMO_DATA)/dataset.json
	$(VENV)/bin/rsir build-index --archive $(DEMO_DATA) --out $(DEMO_INDEX) \
		--metadata $(DEMO_DATA)/metadata.jsonl

demo-index: $(DEMO_INDEX)/CURRENT

demo: $(DEMO_INDEX)/CURRENT
	$(VENV)/bin/rsir serve --index $(DEMO_INDEX) --host $(HOST) --port $(PORT)

# The compose stack for real: builds the images, runs `compose up` on the demo, searches, Locust with
# Redis killed mid-run, an API restart, `down -v` (scripts/compose-check.sh; docker/README.md). Needs
# root, a Docker Engine or dockerd, a compose, and minutes; not part of `make test`. PY: a Python with
# locust (the dev install); from a fresh clone, point VENV at an existing one.
compose-check:
	PY="$(abspath $(PY))" scripts/compose-check.sh

# The search page's map (Leaflet, topojson-client, world-atlas) from npm into service/static/vendor/,
# which is committed: run it only to change their versions (scripts/map-vendor/package.json).
vendor-map:
	bash scripts/vendor-map.sh

bench-load: $(STAMP)
	$(PY) -m bench.load_service --index data/index20k

bench-ftf: $(STAMP)
	$(PY) -m bench.ftf_throughput

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The deployment files (docker/, compose.yaml, k8s/) checked statically, and a 20 s Locust run against
# a local `rsir serve`: tests/deploy/, which `make unit` (so `make test`) also runs.
# The device check (docs/gpu-check.md): GPU against CPU on the demo index, one JSON report under $$OUT
# (default logs/gpu-check). Not part of `make test`: without a GPU it runs its CPU side and exits 2.
.PHONY: gpu-check gpu-wheels
gpu-check:
	bash scripts/gpu-check.sh

# The wheels the device machine lacks (it reaches no registry), into .whl/ for the device tool's carry.
gpu-wheels: $(STAMP)
	bash scripts/gpu-wheels.sh

.PHONY: deploy-check
deploy-check: $(STAMP)
	$(PY) -m pytest -q tests/deploy
