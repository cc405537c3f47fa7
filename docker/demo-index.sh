#!/bin/sh
# Build the demo index once: $DEMO_N SynthRS scenes and an index over them, under $INDEX_ROOT.
#
#   $INDEX_ROOT/demo-synth/   the archive (images/, dataset.json, metadata.jsonl); the API serves the
#                             originals and thumbnails from here, so it stays beside the index
#   $INDEX_ROOT/demo/         the index root (CURRENT -> v0001); point RSIR_INDEX at it
#
# Idempotent: exits at once when the index is already published. A build killed half way resumes
# from its committed shards when the script runs again (rsir build-index is resumable).
# Installed in the images as `rsir-demo-index`; compose's index-build service and the Kubernetes
# index-build Job run it against the shared index volume.
set -eu

root="${INDEX_ROOT:-/index}"
archive="$root/demo-synth"
index="$root/demo"

if [ -f "$index/CURRENT" ]; then
    echo "demo index already built: $index ($(cat "$index/CURRENT")); nothing to do"
    exit 0
fi

if [ ! -f "$archive/dataset.json" ]; then
    rsir synth --n "${DEMO_N:-1000}" --seed "${DEMO_SEED:-7}" --workers "${DEMO_WORKERS:-2}" --out "$archive"
fi

status=0
# BUILD_ARGS (e.g. "--device cuda --batch-size 128") is split into words on purpose.
# shellcheck disable=SC2086
rsir build-index --archive "$archive" --out "$index" --metadata "$archive/metadata.jsonl" \
    --workers "${DEMO_WORKERS:-2}" ${BUILD_ARGS:-} || status=$?

# 3: the index was built and some files were skipped (listed in the version's skipped.json).
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    exit "$status"
fi
echo "demo index ready: $index ($(cat "$index/CURRENT"))"
