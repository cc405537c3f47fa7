#!/bin/sh
# Build the index of your own archive once: $ARCHIVE_DIR (read-only is fine) -> $INDEX_DIR.
#
# sources.json records each original relative to $ARCHIVE_DIR, so the API finds them wherever that
# folder is mounted (RSIR_ARCHIVE_ROOT). Idempotent: exits at once when a version is published (add
# later images with `rsir index add --archive "$ARCHIVE_DIR" --index "$INDEX_DIR"`); a build killed half
# way resumes from its committed shards when the script runs again.
# Installed in the images as `rsir-index-archive`; compose.archive.yaml and k8s/components/archive run it.
set -eu

archive="${ARCHIVE_DIR:-/archive}"
index="${INDEX_DIR:-/index/archive}"

if [ -f "$index/CURRENT" ]; then
    echo "index already built: $index ($(cat "$index/CURRENT")); nothing to do"
    exit 0
fi

set -- --archive "$archive" --out "$index" --workers "${WORKERS:-2}"
if [ -n "${METADATA:-}" ]; then
    set -- "$@" --metadata "$METADATA"
fi
status=0
# BUILD_ARGS (e.g. "--device cuda --batch-size 128") is split into words on purpose.
# shellcheck disable=SC2086
rsir build-index "$@" ${BUILD_ARGS:-} || status=$?

# 3: the index was built and some files were skipped (listed in the version's skipped.json).
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    exit "$status"
fi
echo "index ready: $index ($(cat "$index/CURRENT"))"
