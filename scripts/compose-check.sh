#!/usr/bin/env bash
# `make compose-check`: the compose stack for real, on this machine (issue 26). Needs root, a Docker
# Engine (dockerd from Debian's docker.io will do), a compose and minutes; not part of `make test`.
#
#   1. a Docker Engine: the one on DOCKER_HOST / the default socket if it answers, else a private dockerd
#      (its own --data-root, --exec-root and unix socket under $WORK; stopped, and by default deleted,
#      at the end; nothing else is touched)
#   2. base images: the Dockerfile's python base and redis, pulled; where a registry cannot be reached,
#      a local stand-in (debootstrap --variant=minbase of the Debian release the python tag names,
#      imported with `docker import`; redis-server from that release on top of it)
#   3. the CPU image (and the GPU image, when its CUDA base can be pulled: it cannot run here anyway)
#   4. `compose up` on the demo, timed to /readyz; searches; a 60 s Locust run during which the Redis
#      container is killed (0 failed requests required); the API container restarted (the index volume
#      must survive: same CURRENT, same results); `down -v`
#
# One summary at the end; the exit status is 1 when any check failed. Settings (environment):
#   WORK=/var/tmp/rsir-compose-check   scratch: private dockerd, logs, Locust output, base-image cache
#   PY=.venv/bin/python                a Python with locust and PyYAML (the dev install), for the load run
#   DEMO_N=1000                        demo scenes the index-build job makes
#   LOAD_USERS=8 LOAD_TIME=60s         the Locust run
#   COMPARE=0                          1: also Locust against a plain `rsir serve` of the same index
#   KEEP=0                             1: keep the private dockerd's data-root (images, build cache)
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/var/tmp/rsir-compose-check}"
PY="${PY:-$REPO/.venv/bin/python}"
DEMO_N="${DEMO_N:-1000}"
LOAD_USERS="${LOAD_USERS:-8}"
LOAD_TIME="${LOAD_TIME:-60s}"
COMPARE="${COMPARE:-0}"
KEEP="${KEEP:-0}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
PROJECT=rsir

mkdir -p "$WORK/logs" "$WORK/cache"
RESULTS=()
FAILED=0
STARTED_DOCKERD=""
WHEELS_PID=""
COMPOSE_UP=""

log() { printf '[compose-check %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
pass() { RESULTS+=("PASS  $1"); log "PASS $1"; }
skip() { RESULTS+=("SKIP  $1"); log "SKIP $1"; }
fail() { RESULTS+=("FAIL  $1"); FAILED=1; log "FAIL $1"; }
now() { date +%s; }

# shellcheck disable=SC2329  # called from the EXIT trap
summary() {
    echo
    echo "=== make compose-check: summary ($(date -u +%Y-%m-%dT%H:%M:%SZ)) ==="
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then echo "=== compose-check PASSED ==="; else echo "=== compose-check FAILED ==="; fi
}

# shellcheck disable=SC2329  # the EXIT trap
cleanup() {
    set +e
    if [ -n "$COMPOSE_UP" ]; then
        compose down -v --remove-orphans > "$WORK/logs/down.log" 2>&1
    fi
    [ -n "$WHEELS_PID" ] && kill "$WHEELS_PID" 2> /dev/null
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2> /dev/null
        for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2> /dev/null || break; sleep 1; done
        if [ "$KEEP" != 1 ]; then
            # overlay mounts go with the daemon; what is left is plain files
            rm -rf "$WORK/data" "$WORK/exec"
            log "private dockerd stopped; its data-root removed (KEEP=1 keeps it)"
        else
            log "private dockerd stopped; data-root kept in $WORK/data"
        fi
    fi
    summary
}
trap cleanup EXIT
trap 'fail "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------------------------------ 0. tools
[ "$(id -u)" = 0 ] || { fail "root: needed to start dockerd and debootstrap"; exit 1; }
"$PY" -c 'import locust, yaml' 2> /dev/null \
    || { fail "PY=$PY lacks locust/PyYAML (make install, or PY=/path/to/venv/bin/python)"; exit 1; }

# A CLI that can build with BuildKit (needed for the CA build secret): one with the buildx plugin, or
# a pre-23 CLI (Debian's docker.io), whose `docker build` has BuildKit built in.
DOCKER=""
for cli in docker /usr/bin/docker; do
    command -v "$cli" > /dev/null || continue
    if "$cli" buildx version > /dev/null 2>&1; then DOCKER="$cli"; break; fi
    major="$("$cli" --version | sed -E 's/^Docker version ([0-9]+).*/\1/')"
    if [ "${major:-99}" -lt 23 ]; then DOCKER="$cli"; break; fi
done
[ -n "$DOCKER" ] || { fail "no docker CLI with BuildKit (apt-get install docker.io)"; exit 1; }
export DOCKER_BUILDKIT=1

# ------------------------------------------------------------------------------------------ 1. engine
if "$DOCKER" info > /dev/null 2>&1; then
    pass "engine: the running one (${DOCKER_HOST:-default socket})"
else
    command -v dockerd > /dev/null || { fail "no Docker Engine and no dockerd (apt-get install docker.io)"; exit 1; }
    mkdir -p "$WORK/data" "$WORK/exec"
    export DOCKER_HOST="unix://$WORK/docker.sock"
    for driver in overlay2 fuse-overlayfs vfs; do
        dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" -H "$DOCKER_HOST" \
            --pidfile "$WORK/dockerd.pid" --storage-driver "$driver" > "$WORK/logs/dockerd.log" 2>&1 &
        STARTED_DOCKERD=$!
        for _ in $(seq 30); do
            "$DOCKER" info > /dev/null 2>&1 && break
            kill -0 "$STARTED_DOCKERD" 2> /dev/null || break
            sleep 1
        done
        if "$DOCKER" info > /dev/null 2>&1; then break; fi
        kill "$STARTED_DOCKERD" 2> /dev/null; wait "$STARTED_DOCKERD" 2> /dev/null; STARTED_DOCKERD=""
    done
    [ -n "$STARTED_DOCKERD" ] || { fail "private dockerd did not start ($WORK/logs/dockerd.log)"; exit 1; }
    pass "engine: private dockerd $("$DOCKER" version --format '{{.Server.Version}}'), storage $driver, socket $DOCKER_HOST"
fi

# Compose v2 (plugin or standalone) reads compose.yaml as it is. Debian's docker-compose 1.29 rejects
# two Compose v2 features of it (top-level `name`, env_file's `required: false`): it gets a copy with
# those two spelled the 1.29 way, written under $WORK (compose.yaml itself stays Compose v2).
COMPOSE_FILE_USED="$REPO/compose.yaml"
if "$DOCKER" compose version > /dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
elif command -v docker-compose > /dev/null && docker-compose version --short 2> /dev/null | grep -q '^2\.'; then
    COMPOSE=(docker-compose)
elif command -v docker-compose > /dev/null; then
    COMPOSE=(docker-compose)
    COMPOSE_FILE_USED="$WORK/compose.v1.yaml"
    "$PY" - "$REPO" "$COMPOSE_FILE_USED" << 'EOF' || { fail "compose.yaml -> 1.29 copy"; exit 1; }
import sys
from pathlib import Path

import yaml

repo, out = Path(sys.argv[1]), Path(sys.argv[2])
doc = yaml.safe_load((repo / "compose.yaml").read_text())
doc.pop("name", None)  # the project name comes from -p
for svc in doc["services"].values():
    if "build" in svc:
        svc["build"]["context"] = str((repo / svc["build"]["context"]).resolve())
    files = []
    for entry in svc.get("env_file", []):
        path = (repo / (entry["path"] if isinstance(entry, dict) else entry)).resolve()
        if path.exists() or not (isinstance(entry, dict) and entry.get("required") is False):
            files.append(str(path))
    if "env_file" in svc:
        svc["env_file"] = files
        if not files:
            del svc["env_file"]
out.write_text(yaml.safe_dump(doc, sort_keys=False))
EOF
else
    fail "no compose (apt-get install docker-compose)"; exit 1
fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$REPO" -f "$COMPOSE_FILE_USED" "$@"; }
pass "compose: ${COMPOSE[*]} $("${COMPOSE[@]}" version --short 2> /dev/null || true) on $(basename "$COMPOSE_FILE_USED")"

# ------------------------------------------------------------------------------------ 2. base images
arg_default() { sed -nE "s/^ARG $1=(.*)$/\1/p" "$2" | head -1; }
PYTHON_IMAGE="$(arg_default PYTHON_IMAGE "$REPO/docker/Dockerfile.cpu")"
REDIS_IMAGE="$(sed -nE 's/^    image: (redis:[^ ]+).*/\1/p' "$REPO/compose.yaml" | head -1)"
BUILD_BASE=()
local_base=""

try_pull() { timeout 120 "$DOCKER" pull -q "$1" > "$WORK/logs/pull-${1//[:\/]/_}.log" 2>&1; }

if try_pull "$PYTHON_IMAGE"; then
    pass "base: pulled $PYTHON_IMAGE"
else
    # python:3.11-slim-bookworm -> Debian bookworm, whose python3 is 3.11 (checked below)
    suite="${PYTHON_IMAGE##*-}"
    want_py="$(sed -E 's/^python:([0-9]+\.[0-9]+).*/\1/' <<< "$PYTHON_IMAGE")"
    local_base="rsir-local/python:$want_py-$suite"
    tarball="$WORK/cache/debian-$suite-python.tar"
    t0=$(now)
    if ! "$DOCKER" image inspect "$local_base" > /dev/null 2>&1; then
        if [ ! -s "$tarball" ]; then
            rootfs="$WORK/rootfs-$suite"
            rm -rf "$rootfs"
            debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
                "$suite" "$rootfs" http://deb.debian.org/debian > "$WORK/logs/debootstrap.log" 2>&1 \
                || { fail "base: debootstrap $suite ($WORK/logs/debootstrap.log)"; exit 1; }
            rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
                "$rootfs"/usr/share/man/*
            tar -C "$rootfs" -cf "$tarball" . && rm -rf "$rootfs"
        fi
        "$DOCKER" import -c 'ENV LANG=C.UTF-8' "$tarball" "$local_base" > /dev/null \
            || { fail "base: docker import"; exit 1; }
    fi
    got_py="$("$DOCKER" run --rm --network none "$local_base" python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$got_py" != "$want_py" ]; then
        fail "base: Debian $suite has Python $got_py, the Dockerfile's base $want_py"; exit 1
    fi
    BUILD_BASE=(--build-arg "PYTHON_IMAGE=$local_base")
    pass "base: $PYTHON_IMAGE not pullable; local $local_base (debootstrap minbase $suite, Python $got_py) in $(($(now) - t0)) s"
fi

if try_pull "$REDIS_IMAGE"; then
    pass "base: pulled $REDIS_IMAGE"
else
    # Debian's redis-server under the name compose.yaml uses, in this engine only. The official image
    # runs with protected mode off (other containers connect without a password); so does this one.
    printf '%s\n' "FROM ${local_base:-$PYTHON_IMAGE}" \
        'RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*' \
        'RUN printf "#!/bin/sh\nexec /usr/bin/redis-server \"\$@\" --protected-mode no\n" > /usr/local/bin/redis-server && chmod +x /usr/local/bin/redis-server' \
        'EXPOSE 6379' 'CMD ["redis-server"]' \
        | "$DOCKER" build --network host -t "$REDIS_IMAGE" - > "$WORK/logs/build-redis.log" 2>&1 \
        || { fail "base: local redis stand-in ($WORK/logs/build-redis.log)"; exit 1; }
    pass "base: $REDIS_IMAGE not pullable; local stand-in (Debian redis-server $("$DOCKER" run --rm --network none "$REDIS_IMAGE" redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/'))"
fi

# --------------------------------------------------------------------------------------- 3. images
# pip inside the build reaches PyPI through this machine's TLS-intercepting proxy: its CA bundle goes
# in as a BuildKit secret (mounted for the pip RUNs only, in no layer). Where the Dockerfile's torch
# index cannot be reached, this machine's torch wheels (pip's local indexes, /etc/pip.conf) are served
# on a loopback index for the build, PyPI behind it for what they lack.
BUILD_ARGS=(--network host --secret "id=pip_ca,src=$CA_BUNDLE" "${BUILD_BASE[@]}")
torch_index="$(arg_default TORCH_INDEX_URL "$REPO/docker/Dockerfile.cpu")"
if ! timeout 20 "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=15)" \
    "$torch_index" > /dev/null 2>&1; then
    local_index=""
    for d in /opt/pypi-more /opt/pypi; do [ -d "$d/simple/torch" ] && local_index="$d" && break; done
    if [ -n "$local_index" ]; then
        # a fixed port when free: the URL is a build argument, and a new one would void the layer cache
        port="$("$PY" -c 'import socket; s = socket.socket()
try: s.bind(("127.0.0.1", 38731))
except OSError: s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
        "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$(dirname "$local_index")" \
            > "$WORK/logs/wheels-http.log" 2>&1 &
        WHEELS_PID=$!
        extra="https://pypi.org/simple"
        [ -d /opt/pypi/simple ] && [ "$local_index" != /opt/pypi ] && extra="http://127.0.0.1:$port/pypi/simple $extra"
        BUILD_ARGS+=(--build-arg "TORCH_INDEX_URL=http://127.0.0.1:$port/$(basename "$local_index")/simple"
            --build-arg "TORCH_EXTRA_INDEX_URL=$extra")
        sleep 1
        log "torch: $torch_index unreachable; this machine's wheels from $local_index on 127.0.0.1:$port"
    else
        log "torch: $torch_index unreachable and no local torch index; the build will fail at torch"
    fi
fi

t0=$(now)
if "$DOCKER" build --progress=plain -f "$REPO/docker/Dockerfile.cpu" -t rsir:cpu "${BUILD_ARGS[@]}" "$REPO" \
    > "$WORK/logs/build-cpu.log" 2>&1; then
    size="$("$DOCKER" image inspect rsir:cpu --format '{{.Size}}')"
    pass "image rsir:cpu built in $(($(now) - t0)) s, $((size / 1000000)) MB"
else
    fail "image rsir:cpu ($WORK/logs/build-cpu.log: $(grep -m1 -E 'ERROR' "$WORK/logs/build-cpu.log"))"; exit 1
fi
# The proxy's CA must be in no layer of the image (a secret mount leaves nothing behind). The CAs this
# machine adds to the system bundle (/usr/local/share/ca-certificates) are the proxy's; the first
# base64 line of each is searched for in every file of the image under 2 MB. The patterns are first
# checked to be found in the host's bundle, so the search can hit.
patterns="$WORK/ca-patterns.txt"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] && sed -n '2p' "$crt"
done > "$patterns"
if [ ! -s "$patterns" ] || ! grep -qFf "$patterns" "$CA_BUNDLE"; then
    skip "CA in image: no locally added CA in $CA_BUNDLE to look for"
else
    # shellcheck disable=SC2016  # expanded in the container
    scan="$("$DOCKER" run --rm -i --network none --user 0 --entrypoint sh rsir:cpu -c \
        'cat > /dev/shm/p; find / -xdev -type f -size -2M -print0 | xargs -0 grep -lFf /dev/shm/p
         echo "scanned $(find / -xdev -type f -size -2M | wc -l) files"' < "$patterns" 2> /dev/null)"
    scanned="$(sed -n 's/^scanned //p' <<< "$scan")"
    hits="$(grep -v '^scanned ' <<< "$scan" | tr '\n' ' ')"
    if [ -z "$scanned" ]; then
        fail "CA in image: the scan did not run"
    elif [ -n "${hits// /}" ]; then
        fail "rsir:cpu holds this machine's proxy CA: $hits"
    else
        pass "rsir:cpu holds no copy of this machine's proxy CA ($(wc -l < "$patterns") CAs looked for in $scanned)"
    fi
fi

cuda_image="$(arg_default CUDA_IMAGE "$REPO/docker/Dockerfile.gpu")"
if try_pull "$cuda_image"; then
    t0=$(now)
    if "$DOCKER" build --progress=plain -f "$REPO/docker/Dockerfile.gpu" -t rsir:gpu "${BUILD_ARGS[@]}" "$REPO" \
        > "$WORK/logs/build-gpu.log" 2>&1; then
        pass "image rsir:gpu built in $(($(now) - t0)) s, $(("$("$DOCKER" image inspect rsir:gpu --format '{{.Size}}')" / 1000000)) MB (not run: no GPU)"
    else
        fail "image rsir:gpu ($WORK/logs/build-gpu.log)"
    fi
else
    skip "image rsir:gpu: its base $cuda_image cannot be pulled here (no registry; Ubuntu, not Debian)"
fi

# ----------------------------------------------------------------------------------- 4. the stack
API_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export API_PORT DEMO_N
URL="http://127.0.0.1:$API_PORT"

wait_ready() {  # $1: seconds; prints the seconds it took
    local t0 deadline
    t0=$(now); deadline=$((t0 + $1))
    while [ "$(now)" -lt "$deadline" ]; do
        if curl -fsS -o /dev/null --max-time 3 "$URL/readyz" 2> /dev/null; then echo $(($(now) - t0)); return 0; fi
        sleep 1
    done
    return 1
}
search() {  # $1: query; prints the top ids
    curl -fsS --max-time 30 -H 'Content-Type: application/json' \
        -d "{\"query\": \"$1\", \"k\": 5}" "$URL/search/text" \
        | "$PY" -c 'import json, sys; r = json.load(sys.stdin); print(" ".join(str(h["id"]) for h in r["results"]))'
}
cid() { compose ps -q "$1"; }

compose down -v --remove-orphans > /dev/null 2>&1  # a stack left by an interrupted run
COMPOSE_UP=1
t0=$(now)
compose up -d --no-build > "$WORK/logs/up.log" 2>&1 || { fail "compose up ($WORK/logs/up.log)"; exit 1; }
# compose up returns once the API container is created (v2: after index-build completed; 1.29: also)
if wait_ready 1800 > /dev/null; then
    total=$(($(now) - t0))
    build_c="$(cid index-build)"
    b0="$("$DOCKER" inspect "$build_c" --format '{{.State.StartedAt}}')"
    b1="$("$DOCKER" inspect "$build_c" --format '{{.State.FinishedAt}}')"
    built=$(($(date -d "$b1" +%s) - $(date -d "$b0" +%s)))
    a0="$("$DOCKER" inspect "$(cid api)" --format '{{.State.StartedAt}}')"
    api_ready=$(($(now) - $(date -d "$a0" +%s)))
    pass "stack up: /readyz after $total s from \`compose up\` (index-build job $built s for DEMO_N=$DEMO_N, API start to ready ${api_ready} s)"
else
    compose logs --no-color > "$WORK/logs/stack.log" 2>&1
    fail "stack not ready in 1800 s ($WORK/logs/stack.log)"; exit 1
fi

api_health=""
for _ in $(seq 60); do
    api_health="$("$DOCKER" inspect "$(cid api)" --format '{{.State.Health.Status}}')"
    [ "$api_health" = healthy ] && break
    sleep 2
done
if [ "$api_health" = healthy ]; then
    pass "api container healthy (compose healthcheck: rsir.service.healthcheck --ready)"
else
    fail "api container health: $api_health"
fi
owner="$("$DOCKER" run --rm --network none -v "${PROJECT}_index:/index:ro" --entrypoint stat rsir:cpu -c '%u:%g' /index/demo/CURRENT)"
if [ "$owner" = "10001:10001" ]; then
    pass "index volume written by uid:gid $owner (the image's non-root user)"
else
    fail "index volume file owner $owner, expected 10001:10001"
fi

ids_before=""
n_ok=0
for q in "an airport with parked planes" "a river through farmland" "dense residential buildings"; do
    ids="$(search "$q")" && [ -n "$ids" ] && n_ok=$((n_ok + 1))
    [ -z "$ids_before" ] && ids_before="$ids"
done
if [ "$n_ok" = 3 ]; then pass "searches: 3 of 3 text queries answered with results"; else fail "searches: $n_ok of 3 answered"; fi

# Locust needs the demo's captions and images: copied out of the volume
rm -rf "$WORK/demo-synth"
"$DOCKER" cp "$(cid api):/index/demo-synth" "$WORK/demo-synth" > /dev/null
load() {  # $1: label
    rm -rf "$WORK/locust-$1"
    (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -m rsir.loadtest.run --host "$URL" --users "$LOAD_USERS" --time "$LOAD_TIME" \
        --out "$WORK/locust-$1" --queries "$WORK/demo-synth" --images "$WORK/demo-synth/images" --max-failures 0) \
        > "$WORK/logs/locust-$1.log" 2>&1
}
figures() {  # $1: label -> "N requests, F failed, R req/s, p50 X ms, p95 Y ms"
    "$PY" -c 'import json, sys; a = json.load(open(sys.argv[1]))["Aggregated"]
print("%(requests)d requests, %(failures)d failed, %(rps)s req/s, p50 %(p50_ms).0f ms, p95 %(p95_ms).0f ms" % a)' \
        "$WORK/locust-$1/summary.json"
}

redis_c="$(cid redis)"
load compose &
load_pid=$!
sleep 20
started_before="$("$DOCKER" inspect "$redis_c" --format '{{.State.StartedAt}}')"
# SIGKILL to the container's process from outside, as the OOM killer or a crash would end it: the
# engine then applies `restart: unless-stopped` (after `docker kill` it does not: a manual stop).
kill -9 "$("$DOCKER" inspect "$redis_c" --format '{{.State.Pid}}')"
killed_at=$(now)
log "redis-server killed (SIGKILL); the restart policy should bring it back"
redis_back=""
for _ in $(seq 60); do
    state="$("$DOCKER" inspect "$redis_c" --format '{{.State.StartedAt}} {{.State.Health.Status}}')"
    if [ "${state% *}" != "$started_before" ] && [ "${state#* }" = healthy ]; then
        redis_back=$(($(now) - killed_at)); break
    fi
    sleep 1
done
wait "$load_pid"
load_rc=$?
if [ -f "$WORK/locust-compose/summary.json" ]; then
    result="$(figures compose)"
    if [ "$load_rc" = 0 ] && grep -q ' 0 failed' <<< "$result"; then
        pass "locust $LOAD_TIME x $LOAD_USERS users through the stack, Redis killed at 20 s (healthy again after ${redis_back:-?} s): $result"
    else
        fail "locust through the stack with Redis killed: $result ($WORK/logs/locust-compose.log)"
    fi
else
    fail "locust through the stack: no summary ($WORK/logs/locust-compose.log)"
fi
if [ -z "$redis_back" ]; then
    fail "redis not restarted and healthy within 60 s of the kill"
else
    # the restarted Redis starts empty: keys in it now were written by the API after it reconnected
    keys="$("$DOCKER" exec "$redis_c" redis-cli dbsize)"
    if [ "${keys:-0}" -gt 0 ]; then
        pass "redis restarted by its policy; the API reconnected (${keys} keys cached since the restart)"
    else
        fail "redis restarted, but the API wrote nothing to it (dbsize ${keys:-?})"
    fi
fi

current_before="$("$DOCKER" exec "$(cid api)" cat /index/demo/CURRENT)"
t0=$(now)
"$DOCKER" restart "$(cid api)" > /dev/null
if wait_ready 600 > /dev/null; then
    current_after="$("$DOCKER" exec "$(cid api)" cat /index/demo/CURRENT)"
    ids_after="$(search "an airport with parked planes")"
    if [ "$current_after" = "$current_before" ] && [ "$ids_after" = "$ids_before" ]; then
        pass "api restarted: ready again in $(($(now) - t0)) s, index volume kept ($current_after, same top-5)"
    else
        fail "api restarted: CURRENT $current_before -> $current_after, top-5 [$ids_before] -> [$ids_after]"
    fi
else
    fail "api not ready within 600 s of a restart"
fi
again="$(compose run --rm --no-deps index-build 2>&1 | tail -1)"
if grep -q "already built" <<< "$again"; then
    pass "index-build run again: '$again'"
else
    fail "index-build run again rebuilt or failed: $again"
fi

# The archive override (compose.archive.yaml): the demo's images, copied out above, as "your folder".
archive_compose() { ARCHIVE="$WORK/demo-synth" compose -f "$REPO/compose.archive.yaml" "$@"; }
chmod -R a+rX "$WORK/demo-synth"
if archive_compose run --rm index-build > "$WORK/logs/archive-build.log" 2>&1 \
    && archive_compose up -d --no-build api > "$WORK/logs/archive-up.log" 2>&1 && wait_ready 600 > /dev/null; then
    served="$(curl -fsS --max-time 30 -H 'Content-Type: application/json' -d '{"query": "a harbour", "k": 3}' \
        "$URL/search/text" | "$PY" -c 'import json, sys; r = json.load(sys.stdin)
print(len(r["results"]), r["results"][0]["image_url"] if r["results"] else "")')"
    image_url="${served#* }"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$URL$image_url")"
    env_index="$("$DOCKER" inspect "$(cid api)" --format '{{range .Config.Env}}{{println .}}{{end}}' \
        | sed -n 's/^RSIR_INDEX=//p')"
    if [ "$env_index" = /index/archive ] && [ "${served%% *}" = 3 ] && [ "$code" = 200 ]; then
        pass "archive override: the folder built into /index/archive and served; original $image_url -> $code"
    else
        fail "archive override: RSIR_INDEX=$env_index, results '${served:-none}', original $code"
    fi
else
    fail "archive override: build or start failed ($WORK/logs/archive-*.log)"
fi
archive_compose stop api > /dev/null 2>&1

if [ "$COMPARE" = 1 ]; then
    # The stack again, Redis up and emptied first; then the same index and load on a plain `rsir serve`
    # from $PY's environment with a Redis of its own on loopback (emptied, same settings as compose's),
    # the API container stopped meanwhile. Both start with a cold cache.
    compose up -d --no-build api > "$WORK/logs/up-again.log" 2>&1
    "$DOCKER" exec "$(cid redis)" redis-cli flushall > /dev/null
    if wait_ready 600 > /dev/null && load compose-steady; then
        pass "locust $LOAD_TIME x $LOAD_USERS users through the stack, Redis up: $(figures compose-steady)"
    else
        fail "locust through the stack, Redis up ($WORK/logs/locust-compose-steady.log)"
    fi
    compose stop api > /dev/null 2>&1
    rm -rf "$WORK/index-copy"
    "$DOCKER" run --rm --network none -v "${PROJECT}_index:/index:ro" -v "$WORK:/out" --user 0 \
        --entrypoint cp rsir:cpu -a /index /out/index-copy
    redis_env=()
    redis_pid=""
    redis_label="no Redis"
    if command -v redis-server > /dev/null; then
        redis_port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --maxmemory 256mb \
            --maxmemory-policy allkeys-lru > "$WORK/logs/plain-redis.log" 2>&1 &
        redis_pid=$!
        redis_env=(RSIR_REDIS_URL="redis://127.0.0.1:$redis_port/0")
        redis_label="its own Redis $(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/')"
    fi
    (cd "$WORK" && env -u RSIR_REDIS_URL RSIR_INDEX="$WORK/index-copy/demo" "${redis_env[@]}" \
        RSIR_ARCHIVE_ROOT="$WORK/index-copy/demo-synth" RSIR_LOG_LEVEL=warning PYTHONPATH="$REPO" \
        "$PY" -m rsir.cli serve --host 127.0.0.1 --port "$API_PORT") > "$WORK/logs/plain-serve.log" 2>&1 &
    serve_pid=$!
    if wait_ready 600 > /dev/null; then
        load plain
        pass "locust $LOAD_TIME x $LOAD_USERS users, plain rsir serve, same index, $redis_label: $(figures plain)"
    else
        fail "plain rsir serve not ready ($WORK/logs/plain-serve.log)"
    fi
    kill "$serve_pid"; wait "$serve_pid" 2> /dev/null
    if [ -n "$redis_pid" ]; then kill "$redis_pid"; wait "$redis_pid" 2> /dev/null; fi
    rm -rf "$WORK/index-copy"
fi

compose down -v --remove-orphans > "$WORK/logs/down.log" 2>&1 && COMPOSE_UP=""
if "$DOCKER" volume inspect "${PROJECT}_index" > /dev/null 2>&1; then
    fail "down -v left the index volume"
else
    pass "compose down -v: containers and the index volume removed"
fi
exit "$FAILED"
