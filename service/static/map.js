// The map of the search page: the results' footprints over a world outline, with no tile server
// (the page works offline). Leaflet, topojson-client and world-atlas's land-110m are local files under
// vendor/ (scripts/vendor-map.sh). The footprints come from the search API itself: the search the page
// just ran, asked again with Accept: application/geo+json (a cache hit on the server), so overlapping
// chips of one scene arrive merged and antimeridian crossings arrive split.
//
// Clicking a footprint shows its chip, the scene's overview with the results outlined, and "Search
// inside this scene" (the scene filter). "Draw area" takes a dragged rectangle, "Draw polygon" clicked
// vertices (double-click or click the first vertex to close): either becomes the intersects filter.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const box = $("map");
  if (!box || !window.L) return;
  const L = window.L;
  const map = L.map(box, { worldCopyJump: false, minZoom: 1, zoomSnap: 0.25, attributionControl: true });
  map.attributionControl.setPrefix(false).addAttribution("Outline: Natural Earth");
  map.fitBounds([[-60, -170], [75, 170]]);
  const footprints = L.geoJSON(null, { style: () => ({ color: "#0b5cad", weight: 2, fillOpacity: 0.15 }) }).addTo(map);
  // A chip is a few hundred metres: at the zoom that shows a continent its outline is under a pixel, so
  // each footprint also gets a dot of constant size at its centre (same tooltip, same click).
  const dots = L.featureGroup().addTo(map);
  const drawn = L.featureGroup().addTo(map);
  const state = { intersects: null, scene: null, features: [] };

  fetch("vendor/world-atlas/land-110m.json")
    .then((r) => r.json())
    .then((topology) => {
      const land = unwrapRings(window.topojson.feature(topology, topology.objects.land));
      L.geoJSON(land, { interactive: false, style: { color: "#8a949e", weight: 1, fillColor: "#c9d1d9", fillOpacity: 0.5 } })
        .addTo(map)
        .bringToBack();
      box.dataset.outline = "ready";
    })
    .catch(() => {
      box.dataset.outline = "missing";
    });

  // Natural Earth cuts land at +-180 (Fiji, Chukotka): in a flat map a ring that jumps from 180 to -180
  // would draw a line across the world, so such a ring gets its far-western points (west of -90) moved
  // past 180 instead (Eurasia's ring runs from Chukotka to Portugal: Portugal stays).
  // Antarctica (below -60) does run from -180 to 180 and is left as it is.
  function unwrapRings(geojson) {
    const fix = (ring) => {
      const jumps = ring.some((p, i) => i > 0 && Math.abs(p[0] - ring[i - 1][0]) > 180);
      const polar = ring.some((p) => p[1] < -60);
      return jumps && !polar ? ring.map(([x, y]) => [x < -90 ? x + 360 : x, y]) : ring;
    };
    for (const feature of geojson.features || [geojson]) {
      const g = feature.geometry;
      if (g.type === "Polygon") g.coordinates = g.coordinates.map(fix);
      if (g.type === "MultiPolygon") g.coordinates = g.coordinates.map((poly) => poly.map(fix));
    }
    return geojson;
  }

  // -- the filters the map adds to a search (read by app.js) --------------------------------------------
  function filters() {
    const f = {};
    if (state.intersects) f.intersects = state.intersects;
    if (state.scene) f.scene = [state.scene]; // the filter takes a list of scenes
    return f;
  }

  function showFilters() {
    const line = $("map-filters");
    const parts = [];
    if (state.intersects) parts.push(chip(`Area: drawn ${state.kind}`, clearArea, "map-clear-area"));
    if (state.scene) parts.push(chip(`Inside scene ${state.scene}`, () => setScene(null), "map-clear-scene"));
    line.replaceChildren(...parts);
    line.hidden = parts.length === 0;
  }

  function chip(label, clear, id) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "filter-chip";
    button.id = id;
    button.textContent = `${label} ×`;
    button.setAttribute("aria-label", `Remove the filter: ${label}`);
    button.addEventListener("click", () => {
      clear();
      rerun();
    });
    return button;
  }

  function rerun() {
    if (window.rsir && window.rsir.rerun) window.rsir.rerun();
  }

  function setScene(scene) {
    state.scene = scene;
    showFilters();
  }

  function clearArea() {
    drawn.clearLayers();
    state.intersects = null;
    state.kind = null;
    showFilters();
  }

  function setArea(latlngs, kind) {
    // GeoJSON ring: [lon, lat], closed, counter-clockwise (RFC 7946 right-hand rule)
    const ring = latlngs.map((p) => [round(p.lng), round(p.lat)]);
    if (signedArea(ring) < 0) ring.reverse();
    ring.push(ring[0]);
    drawn.clearLayers();
    L.polygon(latlngs, { color: "#f0a000", weight: 2, fillOpacity: 0.08, interactive: false }).addTo(drawn);
    state.intersects = { type: "Polygon", coordinates: [ring] };
    state.kind = kind;
    showFilters();
    rerun();
  }

  const round = (x) => Math.round(x * 1e6) / 1e6;
  function signedArea(ring) {
    let sum = 0;
    for (let i = 0; i < ring.length; i++) {
      const [x0, y0] = ring[i];
      const [x1, y1] = ring[(i + 1) % ring.length];
      sum += x0 * y1 - x1 * y0;
    }
    return sum / 2;
  }

  // -- drawing ----------------------------------------------------------------------------------------
  let drawing = null; // {kind: "rectangle"|"polygon", points, layer}

  function startDrawing(kind) {
    stopDrawing();
    drawing = { kind, points: [], layer: null };
    map.dragging.disable();
    map.doubleClickZoom.disable();
    box.classList.add("drawing");
    box.dataset.drawing = kind;
    $("map-hint").textContent =
      kind === "rectangle" ? "Drag a rectangle on the map." : "Click the corners; double-click (or click the first) to close.";
  }

  function stopDrawing() {
    if (drawing && drawing.layer) drawing.layer.remove();
    drawing = null;
    map.dragging.enable();
    map.doubleClickZoom.enable();
    box.classList.remove("drawing");
    delete box.dataset.drawing;
    $("map-hint").textContent = "";
  }

  map.on("mousedown", (ev) => {
    if (!drawing || drawing.kind !== "rectangle") return;
    drawing.points = [ev.latlng];
    drawing.layer = L.rectangle(L.latLngBounds(ev.latlng, ev.latlng), { color: "#f0a000", weight: 2 }).addTo(map);
  });
  map.on("mousemove", (ev) => {
    if (!drawing || !drawing.layer) return;
    if (drawing.kind === "rectangle" && drawing.points.length) drawing.layer.setBounds(L.latLngBounds(drawing.points[0], ev.latlng));
    if (drawing.kind === "polygon") drawing.layer.setLatLngs([...drawing.points, ev.latlng]);
  });
  map.on("mouseup", (ev) => {
    if (!drawing || drawing.kind !== "rectangle" || !drawing.points.length) return;
    const b = L.latLngBounds(drawing.points[0], ev.latlng);
    stopDrawing();
    if (b.getNorth() === b.getSouth() || b.getEast() === b.getWest()) return; // a click, not a drag
    setArea([b.getSouthWest(), b.getSouthEast(), b.getNorthEast(), b.getNorthWest()], "rectangle");
  });
  map.on("click", (ev) => {
    if (!drawing || drawing.kind !== "polygon") return;
    const pts = drawing.points;
    const closes = pts.length >= 3 && map.latLngToContainerPoint(pts[0]).distanceTo(ev.containerPoint) < 8;
    if (closes) return finishPolygon();
    pts.push(ev.latlng);
    if (!drawing.layer) drawing.layer = L.polyline(pts, { color: "#f0a000", weight: 2 }).addTo(map);
    else drawing.layer.setLatLngs(pts);
  });
  map.on("dblclick", () => {
    if (drawing && drawing.kind === "polygon") finishPolygon();
  });

  function finishPolygon() {
    // a double-click also delivers its two clicks: drop a repeated last point
    const pts = drawing.points.filter((p, i, all) => i === 0 || !p.equals(all[i - 1]));
    stopDrawing();
    if (pts.length >= 3) setArea(pts, "polygon");
  }

  $("draw-rectangle").addEventListener("click", () => startDrawing("rectangle"));
  $("draw-polygon").addEventListener("click", () => startDrawing("polygon"));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && drawing) stopDrawing();
  });

  // -- the results --------------------------------------------------------------------------------------
  let shown = 0; // a newer search's map makes an older one's stale
  async function show(search) {
    const mine = ++shown;
    let collection;
    try {
      collection = await search("application/geo+json");
    } catch {
      return; // the list already shows the search's outcome; the map stays as it was
    }
    if (mine !== shown) return;
    footprints.clearLayers();
    dots.clearLayers();
    state.features = collection.features;
    const located = collection.features.filter((f) => f.geometry);
    const crossing = collection.bbox && collection.bbox[0] > collection.bbox[2];
    // Results spanning the antimeridian are drawn on one side of it: Leaflet does not wrap vectors, so
    // longitudes up to the box's east edge move past 180 (a flat map shows them next to their neighbours).
    const onMap = crossing ? located.map((f) => pastAntimeridian(f, collection.bbox[2])) : located;
    footprints.addData({ type: "FeatureCollection", features: onMap });
    footprints.eachLayer((layer) => {
      const f = layer.feature;
      const el = layer.getElement && layer.getElement();
      if (el) {
        el.setAttribute("data-id", f.id);
        el.classList.add("footprint");
      }
      layer.bindTooltip(`#${f.properties.rank} ${f.id}`);
      layer.on("click", () => openFeature(f, layer));
      const dot = L.circleMarker(centre(layer), { radius: 4, weight: 1, color: "#0b5cad", fillOpacity: 0.8 }).addTo(dots);
      dot.bindTooltip(`#${f.properties.rank} ${f.id}`);
      dot.on("click", () => openFeature(f, layer));
      const dotEl = dot.getElement();
      if (dotEl) {
        dotEl.setAttribute("data-id", f.id);
        dotEl.classList.add("footprint-dot");
      }
    });
    $("map-count").textContent = `${located.length} of ${collection.features.length} results on the map`;
    if (collection.bbox && !state.intersects) {
      // the server's bbox takes the short way round: west > east crosses the antimeridian
      const [west, south, east, north] = collection.bbox;
      const bounds = [[south, west], [north, east < west ? east + 360 : east]];
      map.invalidateSize(); // the page below the map has just changed: its width may have too
      map.fitBounds(bounds, { maxZoom: 12, padding: [20, 20], animate: false });
    }
    box.dataset.features = String(located.length);
  }

  function pastAntimeridian(feature, east) {
    const move = (ring) => ring.map(([x, y]) => [x <= east ? x + 360 : x, y]);
    const g = feature.geometry;
    const coordinates =
      g.type === "Polygon" ? g.coordinates.map(move) : g.type === "MultiPolygon" ? g.coordinates.map((p) => p.map(move)) : g.coordinates;
    return { ...feature, geometry: { ...g, coordinates } };
  }

  // the centre of a footprint's first part (a footprint cut at the antimeridian has two)
  function centre(layer) {
    const rings = layer.getLatLngs();
    const first = Array.isArray(rings[0]) && Array.isArray(rings[0][0]) ? rings[0] : rings;
    return L.latLngBounds(first.flat(2)).getCenter();
  }

  function openFeature(feature, layer) {
    const p = feature.properties;
    const panel = $("map-chip");
    const img = document.createElement("img");
    img.src = p.thumbnail_url;
    img.alt = `Chip ${feature.id}`;
    img.className = "map-thumb";
    const title = document.createElement("p");
    title.className = "map-chip-title";
    title.textContent = `#${p.rank} ${feature.id} · score ${Number(p.score).toFixed(3)}`;
    const lines = [title];
    if (p.merged && p.merged.length) {
      const merged = document.createElement("p");
      merged.className = "quiet";
      merged.textContent = `also matched here: ${p.merged.map((m) => `#${m.rank} ${m.id}`).join(", ")}`;
      lines.push(merged);
    }
    const open = document.createElement("a");
    open.href = p.image_url;
    open.target = "_blank";
    open.rel = "noopener";
    open.textContent = "Open the chip";
    lines.push(open);
    if (p.scene) {
      const inside = document.createElement("button");
      inside.type = "button";
      inside.id = "search-scene";
      inside.textContent = "Search inside this scene";
      inside.addEventListener("click", () => {
        setScene(p.scene);
        rerun();
      });
      const overview = document.createElement("img");
      overview.className = "map-overview";
      overview.alt = `Scene ${p.scene} with this search's chips outlined`;
      const ids = [feature.id, ...state.features.filter((f) => f.properties.scene === p.scene && f.id !== feature.id).map((f) => f.id)];
      loadOverview(overview, `scenes/${encodeURIComponent(p.scene)}/overview.png?size=512&ids=${encodeURIComponent(ids.join(","))}`);
      lines.push(inside, overview);
    }
    panel.replaceChildren(img, ...lines);
    panel.hidden = false;
    panel.dataset.id = feature.id;
    footprints.setStyle({ color: "#0b5cad", weight: 2 });
    if (layer.setStyle) layer.setStyle({ color: "#f0a000", weight: 3 });
  }

  // The overview is fetched (not an <img src>) so that the API key, when the service needs one, is sent.
  async function loadOverview(img, url) {
    try {
      const response = await fetch(url, window.rsir ? window.rsir.withKey({}) : {});
      if (!response.ok) return;
      img.src = URL.createObjectURL(await response.blob());
    } catch {
      // no overview: the chip and its buttons remain
    }
  }

  window.rsirMap = { filters, show, setScene, clearArea };
  showFilters();
})();
