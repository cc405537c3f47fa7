// The search page: plain DOM, no framework, no build step. It talks to the same origin's JSON API
// (POST /search/text, POST /search/image) and shows the images and heatmaps the API links to.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("search");
  const queryBox = $("query");
  const fileInput = $("image");
  const drop = $("drop");
  const errorBox = $("error");
  const statusLine = $("status");
  const results = $("results");
  const stats = $("stats");
  const viewer = $("viewer");
  const keyBox = $("api-key");
  // The API key is typed once and kept for this tab only (sessionStorage: gone when the tab closes,
  // never shared with other tabs or written to disk as a cookie would be).
  const KEY_SLOT = "rsir.apiKey";
  keyBox.value = sessionStorage.getItem(KEY_SLOT) || "";
  keyBox.addEventListener("change", () => {
    const key = keyBox.value.trim();
    if (key) sessionStorage.setItem(KEY_SLOT, key);
    else sessionStorage.removeItem(KEY_SLOT);
  });
  const STOP = new Set(
    "a an the of in on at to by and or with near beside there are is some two three many several".split(" "),
  );

  let last = null; // what the page shows: {kind: "text", query} or {kind: "image", file}
  let serial = 0; // a newer search makes the answers of older ones stale
  let preview = null; // object URL of the uploaded image shown in the status line
  const sensorsSeen = new Set();

  // -- reading the controls ---------------------------------------------------------------------
  class InputError extends Error {}

  function list(text) {
    const items = text.split(",").map((s) => s.trim()).filter(Boolean);
    return items.length ? items : null;
  }

  function filters() {
    const f = {};
    const box = ["lon-min", "lat-min", "lon-max", "lat-max"].map((id) => $(id).value.trim());
    if (box.some(Boolean)) {
      if (!box.every(Boolean)) {
        throw new InputError("Footprint filter: give all four numbers (lon min, lat min, lon max, lat max) or none.");
      }
      f.bbox = box.map(Number);
    }
    if ($("time-from").value) f.time_from = `${$("time-from").value}T00:00:00Z`;
    if ($("time-to").value) f.time_to = `${$("time-to").value}T23:59:59Z`;
    const sensor = list($("sensor").value);
    if (sensor) f.sensor = sensor;
    const tags = list($("tags").value);
    if (tags) f.tags = tags;
    if (window.rsirMap) Object.assign(f, window.rsirMap.filters()); // intersects, scene (map.js)
    return Object.keys(f).length ? f : null;
  }

  function options() {
    const k = Number.parseInt($("k").value, 10);
    return {
      k: Number.isNaN(k) ? undefined : k,
      rerank: $("rerank").checked,
      explain: $("explain").checked,
      target: $("target").value,
      filters: filters(),
    };
  }

  // -- talking to the API -------------------------------------------------------------------------
  // Image URLs in results carry their own short-lived signed token when the service needs a key:
  // <img> cannot send headers. Only API calls send the key itself.
  function withKey(init) {
    const key = sessionStorage.getItem(KEY_SLOT);
    if (!key) return init;
    return { ...init, headers: { ...(init.headers || {}), "X-API-Key": key } };
  }

  // "/images/a.png/thumbnail?t=..." -> "/images/a.png?t=...": the original, with the same token.
  function originalOf(thumbUrl) {
    const [path, query] = thumbUrl.split("?");
    return path.replace(/\/thumbnail$/, "") + (query ? `?${query}` : "");
  }

  function withParam(url, name, value) {
    return `${url}${url.includes("?") ? "&" : "?"}${name}=${encodeURIComponent(value)}`;
  }

  async function api(path, init) {
    let response;
    try {
      response = await fetch(path, withKey(init));
    } catch (err) {
      throw new Error(`Could not reach the server (${err.message}).`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: reported below by status
    }
    if (!response.ok) {
      const e = body && body.error;
      const message = e && e.message ? e.message : `the server answered ${response.status} ${response.statusText}`;
      const detail = e ? ` (${e.code}${e.request_id ? `, request ${e.request_id}` : ""})` : "";
      if (response.status === 401 || response.status === 403) {
        $("options").open = true;
        keyBox.focus();
      }
      throw new Error(`Search failed: ${message}${detail}`);
    }
    return body;
  }

  // accept: "application/geo+json" asks for the hits as a GeoJSON FeatureCollection (the map's).
  function textRequest(query, o, accept = "application/json") {
    const body = { query, rerank: o.rerank ? "ftf" : "none", explain: o.explain };
    if (o.k !== undefined) body.k = o.k;
    if (o.filters) body.filters = o.filters;
    return api("search/text", {
      method: "POST",
      headers: { "content-type": "application/json", accept },
      body: JSON.stringify(body),
    });
  }

  function imageRequest(file, o, accept = "application/json") {
    const data = new FormData();
    data.append("file", file, file.name || "upload");
    if (o.k !== undefined) data.append("k", String(o.k));
    data.append("target", o.target);
    // Image-to-image search is coarse only; the FTF block reranks image-to-caption search.
    data.append("rerank", o.target === "captions" && o.rerank ? "ftf" : "none");
    // Describing an image: each sentence once, not the same template line for five near-twins.
    if (o.target === "captions") data.append("distinct", "true");
    if (o.filters) data.append("filters", JSON.stringify(o.filters));
    return api("search/image", { method: "POST", body: data, headers: { accept } });
  }

  async function run(what) {
    const mine = ++serial;
    showError(null);
    let o;
    try {
      o = options();
    } catch (err) {
      showError(err.message);
      return;
    }
    last = what;
    results.setAttribute("aria-busy", "true");
    statusLine.textContent = "Searching…";
    try {
      const data = what.kind === "text" ? await textRequest(what.query, o) : await imageRequest(what.file, o);
      if (mine !== serial) return;
      render(data, what);
      if (window.rsirMap) {
        // The results stay aria-busy until the map has drawn them too: one search, one settled page.
        const again = (accept) => (what.kind === "text" ? textRequest(what.query, o, accept) : imageRequest(what.file, o, accept));
        await window.rsirMap.show(again);
      }
    } catch (err) {
      if (mine !== serial) return;
      results.replaceChildren();
      stats.textContent = "";
      statusLine.textContent = "";
      showError(err.message);
    } finally {
      if (mine === serial) results.removeAttribute("aria-busy");
    }
  }

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  // -- rendering ------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(3));
  const baseName = (id) => id.split("/").pop();

  function render(data, what) {
    const n = data.results.length;
    const noun = data.target === "captions" ? "caption" : "image";
    const plural = `${n} ${noun}${n === 1 ? "" : "s"}`;
    if (preview) URL.revokeObjectURL(preview);
    preview = null;
    if (what.kind === "text") {
      statusLine.replaceChildren(`${plural} for “${what.query}”`);
    } else {
      preview = URL.createObjectURL(what.file);
      statusLine.replaceChildren(
        el("img", { class: "query-thumb", src: preview, alt: "" }),
        `${plural} like ${what.file.name || "the uploaded image"}`,
      );
    }
    results.classList.toggle("captions", data.target === "captions");
    results.replaceChildren(
      ...data.results.map((hit) => (data.target === "captions" ? captionCard(hit) : imageCard(hit, what))),
    );
    const t = data.timings_ms || {};
    const parts = Object.entries(t)
      .filter(([name]) => name !== "total")
      .map(([name, ms]) => `${name} ${ms.toFixed(1)}`);
    stats.textContent =
      `${t.total !== undefined ? `${t.total.toFixed(1)} ms` : ""}` +
      (parts.length ? ` (${parts.join(", ")})` : "") +
      ` · cache ${data.cache} · index ${data.index_version} · request ${data.request_id}`;
    for (const hit of data.results) if (hit.metadata && hit.metadata.sensor) sensorsSeen.add(hit.metadata.sensor);
    $("sensors").replaceChildren(...[...sensorsSeen].sort().map((s) => el("option", { value: s })));
  }

  function tile(href, thumb, name) {
    const link = el(
      "a",
      { class: "tile", href, "aria-label": `Open ${name}` },
      el("img", { class: "thumb", src: thumb, alt: "", decoding: "async", width: 256, height: 256 }),
    );
    link.addEventListener("click", (ev) => {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      openViewer(href, thumb, name, link.closest("li").querySelector(".meta"));
    });
    return link;
  }

  // The card shows the known fields; the viewer (and the tooltip) adds any other recorded ones.
  function metaText(m, full) {
    if (!m) return "";
    const parts = [];
    if (m.sensor) parts.push(m.sensor);
    if (m.time) parts.push(m.time.slice(0, 10));
    if (m.bbox) {
      const across = m.bbox[0] > m.bbox[2]; // west > east: the box crosses the antimeridian
      let lon = (m.bbox[0] + m.bbox[2] + (across ? 360 : 0)) / 2;
      if (lon > 180) lon -= 360;
      const lat = (m.bbox[1] + m.bbox[3]) / 2;
      parts.push(`${Math.abs(lat).toFixed(3)}°${lat < 0 ? "S" : "N"} ${Math.abs(lon).toFixed(3)}°${lon < 0 ? "W" : "E"}`);
    }
    if (m.tags && m.tags.length) parts.push(m.tags.join(", "));
    if (full) {
      for (const [key, value] of Object.entries(m)) {
        if (!["sensor", "time", "bbox", "tags"].includes(key) && value !== null) parts.push(`${key}: ${value}`);
      }
    }
    return parts.join(" · ");
  }

  function scoreLine(hit) {
    const sub = [`coarse ${fmt(hit.coarse_score)}`];
    if (hit.fine_score !== null && hit.fine_score !== undefined) sub.push(`fine ${fmt(hit.fine_score)}`);
    return el("p", { class: "score" }, `score ${fmt(hit.score)} `, el("span", { class: "sub", text: sub.join(" · ") }));
  }

  function imageCard(hit, what) {
    const name = baseName(hit.id);
    const link = tile(hit.image_url, hit.thumbnail_url, name);
    const info = el(
      "div",
      { class: "info" },
      el("p", { class: "name" }, el("span", { class: "rank", text: `#${hit.rank}` }), " ",
        el("span", { class: "file", title: hit.id, text: name })),
      scoreLine(hit),
      el("p", { class: "meta", text: metaText(hit.metadata, false), title: metaText(hit.metadata, true) }),
    );
    const actions = el("div", { class: "actions" });
    if (hit.explain && hit.explain.words.length) actions.append(...explainControls(hit, link, name));
    const similar = el("button", { type: "button", class: "similar", text: "Similar", "aria-label": `Images like ${name}` });
    similar.addEventListener("click", () => searchLike(hit.image_url, name));
    actions.append(similar);
    info.append(actions);
    return el("li", { class: "card", "data-id": hit.id }, link, info);
  }

  function explainControls(hit, link, name) {
    const words = hit.explain.words;
    const overlay = el("img", { class: "overlay", alt: "", width: 256, height: 256 });
    link.append(overlay);
    const select = el(
      "select",
      { class: "word", "aria-label": `Query word to explain on ${name}` },
      ...words.map((w, i) => el("option", { value: String(i), text: w.replace(/<\/w>$/, "") })),
    );
    const first = words.findIndex((w) => !STOP.has(w.replace(/<\/w>$/, "").toLowerCase()));
    select.value = String(Math.max(first, 0));
    const toggle = el("button", {
      type: "button",
      class: "toggle",
      "aria-pressed": "true",
      "aria-label": `Heatmap on ${name}`,
      text: "Heatmap",
    });
    const show = () => {
      const on = toggle.getAttribute("aria-pressed") === "true";
      overlay.hidden = !on;
      select.disabled = !on;
      if (on) {
        overlay.src = hit.explain.overlay_urls[Number(select.value)];
        overlay.alt = `Where “${select.selectedOptions[0].text}” matched in ${name}`;
      }
    };
    toggle.addEventListener("click", () => {
      toggle.setAttribute("aria-pressed", String(toggle.getAttribute("aria-pressed") !== "true"));
      show();
    });
    select.addEventListener("change", show);
    show();
    return [toggle, select];
  }

  function captionCard(hit) {
    const name = baseName(hit.image_id);
    return el(
      "li",
      { class: "card", "data-id": hit.image_id },
      tile(originalOf(hit.thumbnail_url), hit.thumbnail_url, name),
      el(
        "div",
        { class: "info" },
        el("p", { class: "caption-text" }, el("span", { class: "rank", text: `#${hit.rank}` }), ` ${hit.caption}`),
        scoreLine(hit),
        el("p", { class: "name" }, el("span", { class: "file", title: hit.image_id, text: name })),
      ),
    );
  }

  function openViewer(href, thumb, name, meta) {
    const img = $("viewer-img");
    img.onerror = () => {
      img.onerror = null; // originals the browser cannot show (TIFF): the server's large JPEG instead
      img.src = withParam(thumb, "size", 1024);
    };
    img.src = href;
    img.alt = name;
    $("viewer-title").textContent = name;
    $("viewer-meta").textContent = meta ? meta.title : "";
    $("viewer-link").href = href;
    viewer.showModal();
  }

  async function searchLike(href, name) {
    try {
      const response = await fetch(href, withKey({}));
      if (!response.ok) throw new Error(`could not fetch ${name} (${response.status})`);
      const blob = await response.blob();
      await searchFile(new File([blob], name, { type: blob.type }));
    } catch (err) {
      showError(err.message);
    }
  }

  // -- events ---------------------------------------------------------------------------------------
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const query = queryBox.value.trim();
    if (!query) {
      showError("Type what to look for, or drop an image.");
      queryBox.focus();
      return;
    }
    const url = new URL(window.location.href);
    url.searchParams.set("q", query);
    history.replaceState(null, "", url);
    run({ kind: "text", query });
  });

  function searchFile(file) {
    const url = new URL(window.location.href);
    url.searchParams.delete("q"); // a reload must not bring back an earlier text search
    history.replaceState(null, "", url);
    return run({ kind: "image", file });
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) searchFile(file);
    fileInput.value = ""; // choosing the same file again searches again
  });

  // Drops are taken anywhere on the page (a missed drop zone must not navigate away to the file).
  let dragDepth = 0;
  document.addEventListener("dragenter", (ev) => {
    ev.preventDefault();
    dragDepth += 1;
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) drop.classList.remove("over");
  });
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dragDepth = 0;
    drop.classList.remove("over");
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) searchFile(file);
  });

  // Switches that change the ranking re-run what is shown, to compare orders side by side in time.
  const matters = {
    rerank: (shown) => shown.kind === "text" || $("target").value === "captions",
    explain: (shown) => shown.kind === "text",
    target: (shown) => shown.kind === "image",
  };
  for (const [id, applies] of Object.entries(matters)) {
    $(id).addEventListener("change", () => {
      if (last && applies(last)) run(last);
    });
  }

  // For map.js: run the shown search again (a map filter changed), and send the key as API calls do
  // (before any search, a typed query is searched with the new filter)
  const rerun = () => (last ? run(last) : queryBox.value.trim() && form.requestSubmit());
  window.rsir = { rerun, withKey };

  if (window.matchMedia("(max-width: 40rem)").matches) $("options").open = false; // phones: results first

  const initial = new URLSearchParams(window.location.search).get("q");
  if (initial) {
    queryBox.value = initial;
    run({ kind: "text", query: initial });
  }
})();
