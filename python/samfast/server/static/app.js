// samfast's web page: plain JS over the /v1 API (no build step). The image is drawn scaled to fit;
// prompts are sent in image pixels; masks come back at full size as COCO RLE (cheap to make and to
// send for a large photo) and are drawn over the image. window.samfast exposes the state for tests.
const $ = (id) => document.getElementById(id);
const view = $("view"), ctx = view.getContext("2d");
const state = { id: null, image: null, width: 0, height: 0, points: [], labels: [], box: null,
                masks: [], scores: [], chosen: 0, records: [], labelMap: null, hover: -1, busy: false,
                lastMask: null, requests: 0, asked: 0, file: null };
window.samfast = state;

const COLOURS = Array.from({ length: 64 }, (_, i) => `hsl(${(i * 137.5) % 360} 80% 55%)`);

async function api(path, options = {}) {
  const t0 = performance.now();
  const r = await fetch(path, options);
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.blob();
  const ms = performance.now() - t0;
  if (!r.ok) throw Object.assign(new Error(`${r.status}: ${body.detail ? JSON.stringify(body.detail) : r.statusText}`),
                                 { status: r.status });
  state.requests += 1;
  return [body, ms];
}

function status(text) { $("status").textContent = text; }

async function showHealth() {
  try {
    const [h] = await api("health");
    state.device = h.device;
    status(`${h.model} on ${h.device} (${h.precision})`);
  } catch (e) { status(`server unreachable: ${e.message}`); }
}

function upload(file) {
  const form = new FormData();
  form.append("file", file);
  return api("v1/images", { method: "POST", body: form });
}

async function openImage(file) {
  if (!file) return;
  status(`uploading ${file.name}...`);
  try {
    const [info, ms] = await upload(file);
    const image = await createImageBitmap(file, { imageOrientation: "from-image" });
    Object.assign(state, { id: info.id, file, image, width: info.width, height: info.height, records: [],
                           labelMap: null, overlay: null, highlight: null, hover: -1 });
    view.width = info.width; view.height = info.height;
    $("drop").hidden = true; $("stage").hidden = false;
    for (const b of ["everything", "clear"]) $(b).disabled = false;
    $("coco").disabled = true;
    clearPrompts();
    status(`${info.width}x${info.height} ${info.cached ? "(cached)" : "encoded"} in ${ms.toFixed(0)} ms on ${state.device}`);
  } catch (e) { status(`upload failed: ${e.message}`); }
}

function clearPrompts() {  // (an answer still on its way is then dropped: state.asked moves on)
  Object.assign(state, { points: [], labels: [], box: null, masks: [], scores: [], lastMask: null,
                         asked: state.asked + 1 });
  $("choices").textContent = "";
  $("png").disabled = true;
  draw();
}

function imageXY(event) {
  const r = view.getBoundingClientRect();
  return [Math.min(Math.max((event.clientX - r.left) * state.width / r.width, 0), state.width),
          Math.min(Math.max((event.clientY - r.top) * state.height / r.height, 0), state.height)];
}

function maskOf(rle) {  // a COCO RLE mask -> canvas of the image's size, opaque white exactly where inside
  const c = new OffscreenCanvas(rle.size[1], rle.size[0]), g = c.getContext("2d");
  const pixels = g.createImageData(c.width, c.height), d = pixels.data;
  forEachInside(rle, (p) => { d[4 * p] = d[4 * p + 1] = d[4 * p + 2] = d[4 * p + 3] = 255; });
  g.putImageData(pixels, 0, 0);
  return c;
}

// The masks of the current prompts; true when they came. Only the answer to the latest question on
// the image shown is drawn (an image opened, prompts cleared or added meanwhile: it is dropped). An
// image the server no longer holds (404: its cache evicted it) is uploaded again, once.
async function predict() {
  if (!state.points.length && !state.box) { clearPrompts(); return true; }
  const body = { multimask_output: state.points.length <= 1 && !state.box, format: "rle" };
  if (state.points.length) { body.points = state.points; body.labels = state.labels; }
  if (state.box) body.box = state.box;
  const asked = ++state.asked, id = state.id, file = state.file;
  const ask = () => api(`v1/images/${id}/predict`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  try {
    let r, ms;
    try {
      [r, ms] = await ask();
    } catch (e) {
      if (e.status !== 404 || !file) throw e;
      status("the server no longer holds the image: uploading it again...");
      await upload(file);
      [r, ms] = await ask();
    }
    if (asked !== state.asked || id !== state.id) return true;
    state.masks = r.masks.map((m) => maskOf(m.rle));
    state.scores = r.scores;
    state.chosen = r.scores.indexOf(Math.max(...r.scores));
    state.lastMask = state.masks[state.chosen];
    showChoices();
    $("png").disabled = false;
    status(`predict: ${ms.toFixed(0)} ms (server ${r.elapsed_ms.toFixed(1)} ms) on ${state.device}`);
    draw();
    return true;
  } catch (e) {
    if (asked === state.asked && id === state.id) status(`predict failed: ${e.message}`);
    return false;
  }
}

function showChoices() {
  const box = $("choices");
  box.textContent = "";
  state.scores.forEach((s, i) => {
    const label = document.createElement("label");
    const radio = Object.assign(document.createElement("input"), { type: "radio", name: "mask", checked: i === state.chosen });
    radio.onchange = () => { state.chosen = i; state.lastMask = state.masks[i]; draw(); };
    label.append(radio, ` mask ${i + 1} (${s.toFixed(3)})`);
    box.append(label);
  });
}

function tinted(mask, colour) {  // the mask's white pixels in one colour, the rest transparent
  const c = new OffscreenCanvas(mask.width, mask.height), g = c.getContext("2d");
  g.drawImage(mask, 0, 0);
  g.globalCompositeOperation = "source-in";
  g.fillStyle = colour;
  g.fillRect(0, 0, c.width, c.height);
  return c;
}

function draw(dragBox) {
  if (!state.image) return;
  ctx.clearRect(0, 0, view.width, view.height);  // (a transparent image would keep what was drawn before)
  ctx.drawImage(state.image, 0, 0, state.width, state.height);
  ctx.globalAlpha = 0.5;
  if (state.overlay) ctx.drawImage(state.overlay, 0, 0);
  if (state.hover >= 0 && state.records[state.hover]) {
    if (state.highlight?.index !== state.hover)
      state.highlight = { index: state.hover, canvas: maskCanvas(state.records, state.hover) };
    ctx.globalAlpha = 0.9;
    ctx.drawImage(state.highlight.canvas, 0, 0);
  }
  ctx.globalAlpha = 0.5;
  if (state.lastMask) ctx.drawImage(tinted(state.lastMask, "#1e90ff"), 0, 0);
  ctx.globalAlpha = 1;
  const r = Math.max(4, state.width / 200);
  state.points.forEach(([x, y], i) => {
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = state.labels[i] ? "#2ecc71" : "#e74c3c"; ctx.fill();
    ctx.lineWidth = r / 3; ctx.strokeStyle = "#fff"; ctx.stroke();
  });
  for (const b of [state.box, dragBox]) {
    if (!b) continue;
    ctx.lineWidth = Math.max(2, state.width / 400); ctx.strokeStyle = "#f1c40f";
    ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
  }
}

let dragFrom = null;
view.addEventListener("contextmenu", (e) => e.preventDefault());
view.addEventListener("mousedown", (e) => { dragFrom = imageXY(e); });
view.addEventListener("mousemove", (e) => {
  const [x, y] = imageXY(e);
  if (dragFrom && e.buttons) {
    draw([Math.min(dragFrom[0], x), Math.min(dragFrom[1], y), Math.max(dragFrom[0], x), Math.max(dragFrom[1], y)]);
  } else if (state.labelMap) {
    const i = state.labelMap[Math.floor(y) * state.width + Math.floor(x)] - 1;
    if (i !== state.hover) { state.hover = i; draw(); }
  }
});
// On the window: a drag released past the image's edge ends there (imageXY clamps it).
window.addEventListener("mouseup", async (e) => {
  if (!dragFrom || !state.id) return;
  const [x, y] = imageXY(e), [x0, y0] = dragFrom;
  dragFrom = null;
  const r = view.getBoundingClientRect(), px = state.width / r.width;
  const before = { points: state.points.slice(), labels: state.labels.slice(), box: state.box };
  if (Math.abs(x - x0) > 5 * px && Math.abs(y - y0) > 5 * px) {
    state.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
  } else {
    state.points.push([x, y]);
    state.labels.push(e.button === 2 || e.shiftKey ? 0 : 1);
  }
  draw();
  const asked = state.asked + 1;
  // A prompt the server refused (past --max-prompts, say) is taken back: the page shows what the mask is of.
  if (!(await predict()) && asked === state.asked) { Object.assign(state, before); draw(); }
});

// COCO's compressed RLE (pycocotools rleFrString) -> counts; visit(p) for each inside pixel p
// (row-major index), walking the column-major runs: the work is the mask's area, not the image's.
function forEachInside(rle, visit) {
  const [h, w] = rle.size, s = rle.counts, counts = [];
  for (let p = 0; p < s.length;) {
    let x = 0, k = 0, more = 1, c;
    while (more) {
      c = s.charCodeAt(p++) - 48; x |= (c & 0x1f) << (5 * k); more = c & 0x20; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  let i = 0;
  counts.forEach((n, r) => {
    if (r % 2) for (let j = i; j < i + n; j++) visit((j % h) * w + Math.floor(j / h));
    i += n;
  });
}

function rgba(i) {  // record i's colour, from the golden-angle hue sequence
  const c = new OffscreenCanvas(1, 1).getContext("2d");
  c.fillStyle = COLOURS[i % COLOURS.length];
  c.fillRect(0, 0, 1, 1);
  return c.getImageData(0, 0, 1, 1).data;
}

function maskCanvas(records, only = -1) {  // every record in its colour (the first on top), or one
  const c = new OffscreenCanvas(state.width, state.height), g = c.getContext("2d");
  const pixels = g.createImageData(state.width, state.height), d = pixels.data;
  for (let i = records.length - 1; i >= 0; i--) {
    if (only >= 0 && i !== only) continue;
    const [r, gg, b] = rgba(i);
    forEachInside(records[i].segmentation, (p) => { d[4 * p] = r; d[4 * p + 1] = gg; d[4 * p + 2] = b; d[4 * p + 3] = 255; });
  }
  g.putImageData(pixels, 0, 0);
  return c;
}

async function everything() {
  status("segmenting everything...");
  $("everything").disabled = true;
  const id = state.id;
  try {
    const options = { points_per_side: Number($("pps").value), pred_iou_thresh: Number($("iou").value),
                      stability_score_thresh: Number($("stab").value) };
    const [r, ms] = await api(`v1/images/${id}/everything`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(options) });
    if (id !== state.id) return;  // (another image was opened meanwhile: these masks are not its)
    state.records = r.records;
    const labelMap = new Uint16Array(state.width * state.height);  // 1 + the first record under a pixel
    for (let i = r.records.length - 1; i >= 0; i--) forEachInside(r.records[i].segmentation, (p) => { labelMap[p] = i + 1; });
    Object.assign(state, { labelMap, overlay: maskCanvas(r.records), hover: -1, highlight: null });
    $("coco").disabled = !state.records.length;
    status(`everything: ${state.records.length} masks in ${ms.toFixed(0)} ms (server ${r.elapsed_ms.toFixed(0)} ms)`);
  } catch (e) {
    if (id === state.id) status(`segment everything failed: ${e.message}`);
  } finally {
    $("everything").disabled = false;
  }
  draw();
}

function download(blob, name) {
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

$("file").addEventListener("change", (e) => {
  openImage(e.target.files[0]);
  e.target.value = "";  // (so that choosing the same file again opens it again)
});
$("everything").addEventListener("click", everything);
$("clear").addEventListener("click", clearPrompts);
$("png").addEventListener("click", async () => download(await state.lastMask.convertToBlob({ type: "image/png" }), "mask.png"));
$("coco").addEventListener("click", () => {
  const annotations = state.records.map((rec, i) => ({ id: i + 1, image_id: 1, category_id: 1, iscrowd: 0, ...rec }));
  const coco = { images: [{ id: 1, width: state.width, height: state.height }], annotations,
                 categories: [{ id: 1, name: "object" }] };
  download(new Blob([JSON.stringify(coco)], { type: "application/json" }), "masks.coco.json");
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); openImage(e.dataTransfer.files[0]); });
showHealth();
