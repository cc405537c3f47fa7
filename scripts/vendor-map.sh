#!/usr/bin/env bash
# `make vendor-map`: the search page's map libraries, installed from npm at the versions pinned in
# scripts/map-vendor/package-lock.json and copied into service/static/vendor/ (committed), so the page
# needs no CDN and no tile server: it works offline. Each library's licence file travels with it.
#   leaflet 1.9.4 (BSD-2-Clause): the map
#   topojson-client 3.1.0 (ISC): TopoJSON -> GeoJSON in the page
#   world-atlas 2.0.2 (ISC; Natural Earth data, public domain): land-110m.json, the world outline
set -euo pipefail
cd "$(dirname "$0")/.."
work=scripts/map-vendor
out=service/static/vendor
(cd "$work" && npm ci --no-audit --no-fund --silent)
nm="$work/node_modules"
rm -rf "$out" && mkdir -p "$out/leaflet/images" "$out/topojson-client" "$out/world-atlas"
cp "$nm/leaflet/dist/leaflet.js" "$nm/leaflet/dist/leaflet.css" "$nm/leaflet/LICENSE" "$out/leaflet/"
cp "$nm"/leaflet/dist/images/*.png "$out/leaflet/images/"
cp "$nm/topojson-client/dist/topojson-client.min.js" "$nm/topojson-client/LICENSE" "$out/topojson-client/"
cp "$nm/world-atlas/land-110m.json" "$nm/world-atlas/LICENSE" "$out/world-atlas/"
echo "vendored into $out:" && find "$out" -type f | sort
