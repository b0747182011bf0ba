// vsr web page: image before/after, live streams. Plain JS, no dependencies; every request carries the API key.
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

async function loadModels() {
  try {
    const ready = await fetch("/v2/health/ready");
    $("health").textContent = ready.ok ? "ready" : "starting…";
  } catch (_) { $("health").textContent = "offline"; }
  const sel = $("image-model");
  try {
    const models = await (await api("/v2/models")).json();
    const names = (models.models || []).map((m) => (typeof m === "string" ? m : m.name));
    sel.replaceChildren(...names.map((n) => new Option(n, n)));
  } catch (_) { sel.hidden = true; }
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
  const model = $("image-model").hidden || !$("image-model").value ? "" : `?model=${encodeURIComponent($("image-model").value)}`;
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
    $("image-actions").hidden = false;
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
    let job = await (await api("/upscale/video", { method: "POST", body: form })).json();
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

// MJPEG through fetch (so the API key header can be sent): parse each part's Content-Length, show it as a blob.
async function watch(id, img, signal) {
  const res = await fetch(`/stream/${id}/mjpeg`, { headers: headers(), signal });
  if (!res.ok || !res.body) throw new Error(`mjpeg ${res.status}`);
  const reader = res.body.getReader();
  let buf = new Uint8Array(0);
  let last = null;
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const merged = new Uint8Array(buf.length + value.length);
    merged.set(buf); merged.set(value, buf.length); buf = merged;
    for (;;) {
      const headEnd = indexOf(buf, [13, 10, 13, 10]);
      if (headEnd < 0) break;
      const head = dec.decode(buf.subarray(0, headEnd));
      const m = /content-length:\s*(\d+)/i.exec(head);
      if (!m) { buf = buf.subarray(headEnd + 4); continue; }
      const len = parseInt(m[1], 10), start = headEnd + 4;
      if (buf.length < start + len) break;
      const url = URL.createObjectURL(new Blob([buf.slice(start, start + len)], { type: "image/jpeg" }));
      img.src = url;
      if (last) URL.revokeObjectURL(last);
      last = url;
      buf = buf.subarray(start + len);
    }
  }
}

function indexOf(buf, pat) {
  outer: for (let i = 0; i + pat.length <= buf.length; i++) {
    for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
    return i;
  }
  return -1;
}

function card(s) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.id = s.id;
  el.innerHTML = `<div class="head"><strong class="name"></strong><span class="state"></span>
    <button class="del" title="stop and remove">Remove</button></div>
    <img class="live" alt=""><div class="stats"></div>`;
  el.querySelector(".name").textContent = s.name;
  el.querySelector(".del").addEventListener("click", async () => {
    try { await api(`/stream/${s.id}`, { method: "DELETE" }); } catch (_) { /* gone already */ }
    refreshStreams();
  });
  return el;
}

function startViewer(id, img) {
  const abort = new AbortController();
  const loop = async () => {
    while (!abort.signal.aborted) {
      try { await watch(id, img, abort.signal); } catch (_) { /* reconnect below */ }
      if (!abort.signal.aborted) await new Promise((r) => setTimeout(r, 1000));
    }
  };
  loop();
  return abort;
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
  el.querySelector(".stats").textContent =
    `${src} → ${out} · fps in ${fmt(s.input_fps)} / out ${fmt(s.output.fps)} · latency p50 ${p50} ms · ` +
    `drops: ${drops} · reconnects ${s.reconnects}` + (s.state !== "live" && s.last_error ? ` · ${s.last_error}` : "");
}

async function refreshStreams(restart = false) {
  let list = [];
  try { list = (await (await api("/stream")).json()).streams; } catch (e) {
    $("stream-status").textContent = e.message;
    return;
  }
  const seen = new Set();
  for (const s of list) {
    seen.add(s.id);
    let v = viewers.get(s.id);
    if (v && restart) { v.abort.abort(); v.abort = startViewer(s.id, v.card.querySelector("img")); }
    if (!v) {
      const el = card(s);
      $("stream-list").appendChild(el);
      v = { card: el, abort: startViewer(s.id, el.querySelector("img")) };
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

loadModels();
refreshStreams();
setInterval(refreshStreams, 1000);
