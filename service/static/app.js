// vsr web page: image before/after (zoomable), video jobs, live streams (source beside upscaled). Plain JS, no
// dependencies; every request carries the API key.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("apikey");
keyInput.value = localStorage.getItem("vsr-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("vsr-api-key", keyInput.value);
  refreshStreams(true);
});

function headers(extra = {}) {
  const h = { ...extra };
  if (keyInput.value) h["X-API-Key"] = keyInput.value;
  return h;
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: headers(opts.headers || {}) });
  if (!res.ok) {
    let msg = `${res.status}`;
    try { msg = (await res.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

// ---- health and models -------------------------------------------------------------------------------------------

async function checkHealth() {
  try {
    const ready = await fetch("/v2/health/ready");
    $("health").textContent = ready.ok ? "ready" : "not ready";
  } catch (_) { $("health").textContent = "offline"; }
  $("health").dataset.checked = new Date().toISOString();  // when the page last heard back (tests read it)
}

async function loadModels() {
  try {
    const models = await (await api("/v2/models")).json();
    const names = (models.models || []).map((m) => (typeof m === "string" ? m : m.name));
    $("image-model").replaceChildren(...names.map((n) => new Option(n, n)));
    for (const id of ["stream-model", "video-model"]) {  // "" = the service's default for streams / videos
      $(id).replaceChildren(new Option("default model", ""), ...names.map((n) => new Option(n, n)));
    }
  } catch (_) { document.querySelectorAll("select.model").forEach((sel) => { sel.hidden = true; }); }
}

function modelQuery(id) {
  const sel = $(id);
  return sel.hidden || !sel.value ? "" : `?model=${encodeURIComponent(sel.value)}`;
}

// ---- image: vsr vs bicubic -----------------------------------------------------------------------------------------

let urls = [];
$("image-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("image-file").files[0];
  if (!file) return;
  const status = $("image-status");
  status.className = "muted";
  status.textContent = "upscaling…";
  const model = modelQuery("image-model");
  const post = (path) => api(path + model, { method: "POST", body: file, headers: { "Content-Type": file.type } });
  try {
    const t0 = performance.now();
    const [sr, bic] = await Promise.all([post("/upscale"), post("/upscale/bicubic")]);
    const [srBlob, bicBlob] = await Promise.all([sr.blob(), bic.blob()]);
    urls.forEach(URL.revokeObjectURL);
    urls = [URL.createObjectURL(srBlob), URL.createObjectURL(bicBlob)];
    $("cmp-vsr").src = urls[0];
    $("cmp-bicubic").src = urls[1];
    $("compare").hidden = false;
    $("cmp-zoom-bar").hidden = false;
    $("image-actions").hidden = false;
    applyZoom();
    const ext = (srBlob.type.split("/")[1] || "png").replace("jpeg", "jpg");
    $("download").href = urls[0];
    $("download").download = file.name.replace(/\.[^.]*$/, "") + `_vsr.${ext}`;
    status.textContent = `done in ${Math.round(performance.now() - t0)} ms (scale ${sr.headers.get("X-VSR-Scale")})`;
  } catch (e) {
    status.className = "error";
    status.textContent = e.message;
  }
});
$("cmp-slider").addEventListener("input", (ev) => {
  $("cmp-top").style.clipPath = `inset(0 ${100 - ev.target.value}% 0 0)`;
});

// Zoom: "fit" scales to the page; 1:1, 2x, 4x show image pixels (unsmoothed) in a scrollable view.
function applyZoom() {
  const z = $("cmp-zoom").value, img = $("cmp-bicubic");
  $("cmp-view").classList.toggle("zoomed", z !== "fit");
  const width = z === "fit" ? "" : `${img.naturalWidth * Number(z)}px`;
  $("compare").style.width = width;
  img.style.width = width;
}
$("cmp-zoom").addEventListener("change", applyZoom);
$("cmp-bicubic").addEventListener("load", applyZoom);

// ---- video: a job, polled until done ------------------------------------------------------------------------------

let videoUrl = null;
$("video-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("video-file").files[0];
  if (!file) return;
  const status = $("video-status"), bar = $("video-progress"), link = $("video-download");
  link.hidden = true;
  status.className = "muted";
  status.textContent = "uploading…";
  try {
    const form = new FormData();
    form.append("file", file);
    let job = await (await api("/upscale/video" + modelQuery("video-model"), { method: "POST", body: form })).json();
    bar.hidden = false;
    while (job.state === "queued" || job.state === "running") {
      bar.value = job.progress || 0;
      status.textContent = `${job.state}: ${job.frames_done} / ${job.frames_total ?? "?"} frames`;
      await new Promise((r) => setTimeout(r, 500));
      job = await (await api(job.status_url)).json();
    }
    if (job.state !== "done") throw new Error(job.error || job.state);
    bar.value = 1;
    const blob = await (await api(job.result_url)).blob();
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = URL.createObjectURL(blob);
    link.href = videoUrl;
    link.download = file.name.replace(/\.[^.]*$/, "") + "_vsr.mp4";
    link.hidden = false;
    status.textContent = `done: ${job.output.width}×${job.output.height}, ${job.frames_done} frames, audio ${job.audio}`;
  } catch (e) {
    status.className = "error";
    status.textContent = e.message;
  }
});

// ---- streams --------------------------------------------------------------------------------------------------------

const viewers = new Map(); // stream id -> {card, abort}

// Live tiles poll the newest frame (GET /stream/{id}/frame.jpg?after=SEQ long-polls for a newer one) instead of
// holding one MJPEG connection each: a browser opens at most 6 HTTP/1.1 connections per host, so 6 MJPEG tiles
// would starve the 7th tile and the page's own API calls. At most FRAME_SLOTS frame requests run at once; the
// other connections stay free for the stream list, the health check and uploads.
const FRAME_SLOTS = 4;
let freeSlots = FRAME_SLOTS;
const slotQueue = [];
async function inSlot(fn) {
  if (freeSlots > 0) freeSlots--; else await new Promise((r) => slotQueue.push(r));
  try { return await fn(); } finally {
    const next = slotQueue.shift();
    if (next) next(); else freeSlots++;
  }
}

async function fetchJpeg(path, signal) {
  return inSlot(async () => {
    const res = await fetch(path, { headers: headers(), signal });
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return { seq: res.headers.get("X-Frame-Seq"), blob: await res.blob() };
  });
}

function show(img, blob) {
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

function startViewer(id, el) {
  const abort = new AbortController();
  const live = el.querySelector("img.live"), source = el.querySelector("img.source");
  let seq = null, sourceAt = 0;
  (async () => {
    while (!abort.signal.aborted) {
      try {
        const q = seq == null ? "wait=2" : `after=${seq}&wait=0.5`;
        const f = await fetchJpeg(`/stream/${id}/frame.jpg?${q}`, abort.signal);
        if (f.seq !== seq) { seq = f.seq; show(live, f.blob); }
        if (el.classList.contains("compare-on") && performance.now() - sourceAt > 500) {
          sourceAt = performance.now();  // the source view refreshes twice a second: it is for comparing
          show(source, (await fetchJpeg(`/stream/${id}/source.jpg`, abort.signal)).blob);
        }
      } catch (_) {
        if (!abort.signal.aborted) await new Promise((r) => setTimeout(r, 1000));
      }
    }
  })();
  return abort;
}

function card(s) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.id = s.id;
  el.innerHTML = `<div class="head"><strong class="name"></strong><span class="model muted"></span>
    <span class="state"></span>
    <label title="the source frame beside the upscaled one"><input type="checkbox" class="cmp"> source</label>
    <button class="del" title="stop and remove">Remove</button></div>
    <div class="pair"><figure hidden class="src"><img class="source" alt="source"><figcaption>source</figcaption></figure>
    <figure><img class="live" alt=""><figcaption>upscaled</figcaption></figure></div><div class="stats"></div>`;
  el.querySelector(".name").textContent = s.name;
  el.querySelector(".model").textContent = `${s.model} ×${s.scale}`;
  el.querySelector(".cmp").addEventListener("change", (ev) => {
    el.classList.toggle("compare-on", ev.target.checked);
    el.querySelector("figure.src").hidden = !ev.target.checked;
  });
  el.querySelector(".del").addEventListener("click", async () => {
    try { await api(`/stream/${s.id}`, { method: "DELETE" }); } catch (_) { /* gone already */ }
    refreshStreams();
  });
  return el;
}

function fmt(x, digits = 1) { return x == null ? "–" : Number(x).toFixed(digits); }

function render(s, el) {
  const st = el.querySelector(".state");
  st.textContent = s.state;
  st.className = `state ${s.state}`;
  const drops = Object.entries(s.dropped).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ") || "none";
  const src = s.source.width ? `${s.source.width}×${s.source.height}` : "?";
  const out = s.output.width ? `${s.output.width}×${s.output.height}` : "?";
  const p50 = s.latency_seconds.p50 == null ? "–" : Math.round(s.latency_seconds.p50 * 1000);
  const share = s.worker_share == null ? "–" : `${Math.round(s.worker_share * 100)} %`;
  el.querySelector(".stats").textContent =
    `${src} → ${out} · fps in ${fmt(s.input_fps)} / out ${fmt(s.output.fps)} · latency p50 ${p50} ms · ` +
    `worker share ${share} · ` +
    `drops: ${drops} · reconnects ${s.reconnects}` + (s.state !== "live" && s.last_error ? ` · ${s.last_error}` : "");
}

// The worker's load: past capacity every stream gets an equal share and drops stale frames (service/workload.py).
function showWorker(w) {
  const el = $("worker-load");
  el.textContent = `inference worker busy ${Math.round(w.busy * 100)} %` +
    (w.overloaded ? " · OVERLOADED: demand is above capacity, streams share it and drop frames" : "");
  el.classList.toggle("overloaded", w.overloaded);
}

async function refreshStreams(restart = false) {
  let list = [];
  try {
    const body = await (await api("/stream")).json();
    list = body.streams;
    showWorker(body.worker);
  } catch (e) {
    $("stream-status").textContent = e.message;
    return;
  }
  const seen = new Set();
  for (const s of list) {
    seen.add(s.id);
    let v = viewers.get(s.id);
    if (v && restart) { v.abort.abort(); v.abort = startViewer(s.id, v.card); }
    if (!v) {
      const el = card(s);
      $("stream-list").appendChild(el);
      v = { card: el, abort: startViewer(s.id, el) };
      viewers.set(s.id, v);
    }
    render(s, v.card);
  }
  for (const [id, v] of viewers) {
    if (!seen.has(id)) { v.abort.abort(); v.card.remove(); viewers.delete(id); }
  }
  $("no-streams").hidden = list.length > 0;
}

$("stream-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { url: $("stream-url").value.trim(), transport: $("stream-transport").value };
  const name = $("stream-name").value.trim();
  if (name) body.name = name;
  if (!$("stream-model").hidden && $("stream-model").value) body.model = $("stream-model").value;
  const status = $("stream-status");
  try {
    await api("/stream", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
    status.className = "muted";
    status.textContent = "added";
    $("stream-url").value = "";
    $("stream-name").value = "";
  } catch (e) {
    status.className = "error";
    status.textContent = e.message;
  }
  refreshStreams();
});

checkHealth();
loadModels();
refreshStreams();
setInterval(refreshStreams, 1000);
setInterval(checkHealth, 3000);
