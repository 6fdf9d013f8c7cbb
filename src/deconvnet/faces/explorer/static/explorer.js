// The explorer's front end: plain ES module, no build step, no network beyond this server.
const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, layer: null, grid: null, unit: null, rule: "zeiler" };

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) { throw new Error(body.error || response.statusText); }
  return body;
}

function showError(error) {
  $("error").hidden = !error;
  $("error").textContent = error ? String(error.message || error) : "";
}

async function start() {
  const model = await api("/api/model");
  state.model = model;
  $("model-name").textContent = model.name;
  if (model.site) {
    $("site-link").innerHTML = '› <a href="/site/index.html">scan site</a>';
  }
  for (const name of model.images) { $("library").add(new Option(name, name)); }
  layerMenu(model.layers);
  $("layer").value = state.layer = model.default_layer;
  for (const rule of model.rules) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = rule;
    button.dataset.rule = rule;
    button.addEventListener("click", () => { state.rule = rule; markRule(); projectUnit(); });
    $("rules").append(button);
  }
  markRule();
}

// Layers by their shown name (alias, else dotted name), each block's in one group (fire2:
// its concatenated output first, then its inner layers); layers of no block stand alone.
function layerMenu(layers) {
  let group = null;
  for (const layer of layers) {
    const kind = layer.classes ? "class maps" : "maps";
    const option = new Option(`${layer.name} · ${layer.channels} ${kind}`, layer.name);
    option.title = layer.name === layer.module ? layer.field : `${layer.module}, field ${layer.field}`;
    if (!layer.group) {
      group = null;
      $("layer").add(option);
      continue;
    }
    if (!group || group.label !== layer.group) {
      group = document.createElement("optgroup");
      group.label = layer.group;
      $("layer").append(group);
    }
    group.append(option);
  }
}

function markRule() {
  for (const button of $("rules").children) {
    button.classList.toggle("active", button.dataset.rule === state.rule);
  }
}

async function useImage(info) {
  state.image = info;
  state.unit = null;
  $("input").src = `/api/images/${info.id}/input.png`;
  $("image-note").textContent = `${info.name}: ${info.width}×${info.height} as the network sees it`;
  $("box").hidden = true;
  await showGrid();
}

async function showGrid() {
  if (!state.image) { return; }
  const grid = await api(`/api/images/${state.image.id}/layers/${encodeURIComponent(state.layer)}`);
  state.grid = grid;
  $("grid").src = `${grid.grid_url}?contrast=${$("per-map").checked ? "map" : "layer"}`;
  const kind = grid.classes ? "class maps" : "maps";
  $("grid-note").textContent = `${grid.layer}: ${grid.channels} ${kind} of ${grid.height}×${grid.width}`;
  if (state.unit && state.unit.layer === state.layer && state.unit.channel < grid.channels) {
    await projectUnit();
  }
}

function mapUnder(event) {
  const grid = state.grid;
  const image = $("grid");
  const scale = image.naturalWidth / image.clientWidth;
  const px = event.offsetX * scale;
  const py = event.offsetY * scale;
  const cellW = grid.width + grid.padding;
  const cellH = grid.height + grid.padding;
  const column = Math.floor(px / cellW);
  const row = Math.floor(py / cellH);
  const channel = row * grid.columns + column;
  if (column >= grid.columns || channel >= grid.channels) { return null; }
  const x = Math.min(grid.width - 1, Math.floor(px - column * cellW));
  const y = Math.min(grid.height - 1, Math.floor(py - row * cellH));
  return { channel, y, x };
}

async function projectUnit() {
  if (!state.unit || !state.image) { return; }
  const { channel, y, x, pixel } = state.unit;
  const where = pixel ? `&y=${y}&x=${x}` : "";
  const layer = encodeURIComponent(state.layer);
  const url = `/api/images/${state.image.id}/layers/${layer}/units/${channel}?rule=${state.rule}${where}`;
  const unit = await api(url);
  $("projection").src = unit.projection_url;
  $("field").src = `${unit.projection_url}&view=field`;
  const named = unit.class_name ? ` (${unit.class_name})` : "";
  $("unit-note").textContent = `${unit.layer} map ${unit.channel}${named} at ` +
    `(${unit.position[0]}, ${unit.position[1]}) = ${unit.value.toPrecision(4)}`;
  $("projection-note").hidden = !unit.note;
  $("projection-note").textContent = unit.note || "";
  const [top, left, bottom, right] = unit.box;
  const box = $("box");
  const { width, height } = state.image;
  Object.assign(box.style, {
    top: `${(100 * top) / height}%`, left: `${(100 * left) / width}%`,
    height: `${(100 * (bottom - top)) / height}%`, width: `${(100 * (right - left)) / width}%`,
  });
  box.hidden = false;
  const link = $("unit-page");
  link.hidden = !unit.unit_page;
  if (unit.unit_page) { link.href = unit.unit_page; }
  $("topk-note").textContent = scanNote(unit);
  $("topk").replaceChildren(...unit.topk.map((entry) => {
    const item = document.createElement("li");
    item.innerHTML = `<img alt="scan projection"><img alt="scan patch"><span></span>`;
    item.children[0].src = entry.projection_url;
    item.children[1].src = entry.patch_url;
    item.children[2].textContent = `#${entry.rank + 1} ${entry.value.toPrecision(3)} ${entry.image}`;
    return item;
  }));
}

function scanNote(unit) {
  if (!state.model.site) { return ""; }
  if (unit.topk.length) { return `its top ${unit.topk.length} in the scan:`; }
  if (!state.model.scanned.includes(unit.layer)) {
    return `the scan holds ${state.model.scanned.join(", ")}, not ${unit.layer}`;
  }
  return `map ${unit.channel} is not among the scan's maps of ${unit.layer}`;
}

function guarded(handler) {
  return async (event) => {
    try { showError(null); await handler(event); } catch (error) { showError(error); }
  };
}

$("library").addEventListener("change", guarded(async () => {
  if (!$("library").value) { return; }
  const options = {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: $("library").value }),
  };
  await useImage(await api("/api/open", options));
}));
$("upload").addEventListener("change", guarded(async () => {
  const file = $("upload").files[0];
  if (!file) { return; }
  const form = new FormData();
  form.append("file", file);
  await useImage(await api("/api/upload", { method: "POST", body: form }));
}));
$("per-map").addEventListener("change", guarded(showGrid));
$("layer").addEventListener("change", guarded(async () => {
  state.layer = $("layer").value;
  state.unit = null;
  await showGrid();
}));
$("grid").addEventListener("click", guarded(async (event) => {
  if (!state.grid) { return; }
  const found = mapUnder(event);
  if (!found) { return; }
  const pixel = document.querySelector('input[name="pick"]:checked').value === "pixel";
  state.unit = { ...found, layer: state.layer, pixel };
  await projectUnit();
}));
start().catch(showError);
