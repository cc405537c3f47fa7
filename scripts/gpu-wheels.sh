#!/usr/bin/env bash
# `make gpu-wheels`: the wheelhouse .whl/ that `make gpu-check` installs from on the device machine,
# which reaches no package registry (the device tool's README). Wheels for its Python (3.12) of what
# its image lacks; what the image has (torch, numpy, pyarrow... listed in the device tool's KINDS.md)
# is left out, so the wheels and the working tree fit the 64 MiB that travels.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
PYVER=${GPU_PYVER:-3.12}
rm -rf .whl && mkdir -p .whl
plat=(--only-binary=:all: --python-version "$PYVER" --implementation cp)
for p in manylinux_2_17 manylinux_2_24 manylinux_2_26 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34; do
  plat+=(--platform "${p}_x86_64")
done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# With their dependencies: the service's stack. Without: those whose dependencies are torch/numpy.
"$PIP" download -q "${plat[@]}" -d .whl 'fastapi>=0.110,<1' 'uvicorn>=0.29,<1' 'python-multipart>=0.0.9' \
  'redis>=5.0,<8' 'pydantic>=2.7,<3' 'pydantic-settings>=2.3,<3' 'structlog>=24.1,<27' ftfy
"$PIP" download -q "${plat[@]}" --no-deps -d .whl 'open_clip_torch>=3.0,<4' 'faiss-cpu>=1.9,<2'
if [ "${GPU_WHEELS_LOCUST:-0}" = 1 ]; then
  "$PIP" download -q "${plat[@]}" -d .whl 'locust>=2.24,<3'
fi
# In the device image already (KINDS.md, "Python packages already there").
for have in anyio certifi charset_normalizer click h11 httpcore httpx idna jinja2 markupsafe msgpack \
    numpy packaging psutil pygments pyyaml requests typing_extensions urllib3 uvloop werkzeug pytest \
    iniconfig pluggy sniffio rich markdown_it_py mdurl shellingham typer annotated_doc regex tqdm \
    huggingface_hub filelock fsspec safetensors timm; do
  rm -f .whl/"${have}"-*.whl
done
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
wheels=$(du -sk .whl | cut -f1)
tree=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
echo "wheelhouse: $((wheels / 1024)) MiB in $(find .whl -name "*.whl" | wc -l) wheels; with the tracked tree: $(((wheels + tree) / 1024)) MiB of the 64 MiB that travels"
[ $((wheels + tree)) -lt $((64 * 1024)) ] || { echo "over the device tool's 64 MiB limit" >&2; exit 1; }
