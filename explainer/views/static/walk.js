// The reverse walk computed in the learner's browser (the js_on_load of a gr.HTML; explainer/ui/browser.py).
//
// value: the payload of one walk (explainer/views/browser_walk.py), sent when Sample is pressed, with the vendored
// ONNX Runtime Web files (runtime: explainer/ui/static/ort/); props.ids: the element ids it works with.
// Each step: eps = U-Net(x_t) with ONNX Runtime Web (guidance as one call on the doubled batch), then the
// chain's affine form x0_hat = a x_t - b eps (clipped if asked), x_prev = c1 x0_hat + c2 x_t + sigma z, in
// float32 as the server computes it. x_T and every z come from torchGenerator(seed): torch.randn's own draws.
// A payload that says run: "server", or a failure here, presses the server's walk instead (a hidden button).
const P = props;
const ROOT = element;
const F = Math.fround;
const hub = (window.__ddpmWalk = window.__ddpmWalk || {sessions: {}, ort: null});
if (hub.detach) hub.detach();

// ---- torch.randn(n, generator=torch.Generator().manual_seed(seed)) on a CPU, float32 ----
// mt19937 seeded as torch seeds it; each uniform is 24 random bits / 2^24; normals by Box-Muller in blocks of 16
// (u1 = 1 - d[j], u2 = d[j + 8]); when n is not a multiple of 16, the last 16 are drawn again
// (aten/src/ATen/native/cpu/DistributionTemplates.h, normal_fill). Equal to torch's within one float32 ulp.
function torchGenerator(seed) {
  const mt = new Uint32Array(624);
  mt[0] = Number(BigInt.asUintN(32, BigInt(seed)));
  for (let i = 1; i < 624; i++) {
    const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
    mt[i] = (Math.imul(1812433253, p) + i) >>> 0;
  }
  let index = 624;
  function twist() {
    for (let i = 0; i < 624; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7fffffff);
      mt[i] = mt[(i + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    index = 0;
  }
  function next() {
    if (index >= 624) twist();
    let y = mt[index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
  const uniform = () => F((next() & 0xffffff) * 5.9604644775390625e-8);
  const TWO_PI = F(2 * Math.PI);
  function fill16(d, o) {
    for (let j = 0; j < 8; j++) {
      const radius = F(Math.sqrt(F(-2 * F(Math.log(F(1 - d[o + j]))))));
      const theta = F(TWO_PI * d[o + j + 8]);
      d[o + j] = F(radius * F(Math.cos(theta)));
      d[o + j + 8] = F(radius * F(Math.sin(theta)));
    }
  }
  function randn(n) {
    if (n < 16) throw new Error("torch draws fewer than 16 normals another way");
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = uniform();
    for (let i = 0; i + 16 <= n; i += 16) fill16(d, i);
    if (n % 16) {
      for (let i = n - 16; i < n; i++) d[i] = uniform();
      fill16(d, n - 16);
    }
    return d;
  }
  return {randn};
}
hub.torchGenerator = torchGenerator;  // (tests compare its draws with torch's)

// ---- the runtime and the model, loaded once per page ----
async function runtime(files) {
  if (!hub.ort) {
    hub.ort = (async () => {
      const ort = await import(files.module.url);
      ort.env.wasm.wasmPaths = {mjs: files.glue.url, wasm: files.wasm.url};
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      ort.env.wasm.proxy = false;
      return ort;
    })();
    hub.ort.catch(() => { hub.ort = null; });  // (a failed load is tried again at the next walk)
  }
  return hub.ort;
}
async function session(url, files) {
  const ort = await runtime(files);
  if (!hub.sessions[url]) {
    hub.sessions[url] = ort.InferenceSession.create(url, {executionProviders: ["wasm"],
                                                          graphOptimizationLevel: "all"});
    hub.sessions[url].catch(() => { delete hub.sessions[url]; });
  }
  return [ort, await hub.sessions[url]];
}
function inputType(sess, name, declared) {  // the dtype the ONNX file declares (its metadata, else the payload's)
  const meta = (sess.inputMetadata || []).find(m => m && m.name === name);
  return (meta && meta.type) || declared[name] || "float32";
}
function tensorOf(ort, type, values) {
  if (type === "int64") return new ort.Tensor("int64", BigInt64Array.from(values, v => BigInt(Math.round(v))),
                                              [values.length]);
  if (type === "int32") return new ort.Tensor("int32", Int32Array.from(values, v => Math.round(v)), [values.length]);
  return new ort.Tensor("float32", Float32Array.from(values), [values.length]);
}

// ---- pictures: float32 [C,H,W] in [-1, 1] -> a canvas of the native size (render.display.to_uint8) ----
function paint(canvas, x, shape, scale = 1) {
  const [c, h, w] = shape, m = h * w;
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), d = img.data;
  for (let i = 0, j = 0; i < m; i++, j += 4) {  // Uint8ClampedArray rounds half to even, as torch's round()
    for (let k = 0; k < 3; k++) {
      const v = F(x[(c === 1 ? 0 : k) * m + i] / scale);
      d[j + k] = (F(Math.min(Math.max(v, -1), 1)) + 1) * 127.5;
    }
    d[j + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// ---- the page elements ----
const fig = (role, label, extra = "") =>
  `<figure class="ddpm-wfig ${extra}"><figcaption data-role="${role}-label">${label}</figcaption>` +
  `<canvas data-role="${role}" role="img" aria-label="${label}" width="1" height="1"></canvas></figure>`;
ROOT.innerHTML =
  `<div class="ddpm-walk-status" data-role="status"></div>` +
  `<div class="ddpm-wrow">${fig("xt", "x_t")}${fig("x0", "x0_hat (all noise removed)")}</div>` +
  `<label class="ddpm-wscrub">scrub through the walk <input type="range" data-role="scrub" min="0" max="0" ` +
  `value="0" step="1" disabled> <span data-role="scrub-at"></span></label>` +
  `<div class="ddpm-wsub">the step from this frame, taken apart: x_t' = c1 · x0_hat + c2 · x_t + σ z</div>` +
  `<div class="ddpm-wrow ddpm-wsmall">${fig("a-xt", "x_t")}${fig("a-x0", "x0_hat")}` +
  `${fig("a-mean", "c1 · x0_hat + c2 · x_t")}${fig("a-noise", "σ z (shown / 3)")}${fig("a-next", "x_t'")}</div>` +
  `<div class="ddpm-wnumbers" data-role="numbers"></div>` +
  `<div class="ddpm-wsub">10 frames of the walk (the article's figure 9)</div>` +
  `<div class="ddpm-wrow ddpm-wstrip" data-role="strip"></div>` +
  `<div class="ddpm-wgif"><button type="button" data-role="gif" disabled>GIF of the walk</button> ` +
  `<a data-role="gif-link" download="reverse-walk.gif" hidden>download the GIF</a></div>`;
ROOT.dataset.ddpmView = "walk";
ROOT.dataset.status = "idle";
const $ = role => ROOT.querySelector(`[data-role="${role}"]`);
const S = {ticket: 0, walk: null, pressed: null};

function status(html, state) {
  $("status").innerHTML = html;
  if (state) ROOT.dataset.status = state;
}
function showBrowser(on) {  // the browser's view or the server's outputs, never both
  const server = document.getElementById(P.ids.server_out), mine = document.getElementById(P.ids.browser_out);
  if (server) server.style.display = on ? "none" : "";
  if (mine) mine.style.display = on ? "" : "none";
  const note = document.getElementById(`${P.ids.server_out}-note`);
  if (note && on) note.remove();
}
function serverNote(why) {  // above the server's status line: why the server computes this walk
  const status = document.getElementById(P.ids.status);
  if (!status) return;
  let note = document.getElementById(`${P.ids.server_out}-note`);
  if (!note) {
    note = document.createElement("div");
    note.id = `${P.ids.server_out}-note`;
    note.className = "ddpm-where-note";
    status.before(note);
  }
  note.textContent = `Computed on the server: ${why}.`;
}
function runOnServer(why) {
  showBrowser(false);
  serverNote(why);
  ROOT.dataset.status = "server";
  ROOT.dataset.reason = why;
  const button = document.getElementById(P.ids.server_run);
  if (button) (button.tagName === "BUTTON" ? button : button.querySelector("button") || button).click();
}

// ---- one walk ----
function coefficients(p) {
  const raw = atob(p.coefs), v = new DataView(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) v.setUint8(i, raw.charCodeAt(i));
  const out = [];
  for (let i = 0; i < p.steps; i++) {
    const row = [];
    for (let k = 0; k < 5; k++) row.push(F(v.getFloat64(8 * (5 * i + k), true)));
    out.push(row);  // [sqrt_recip_alpha_bar, sqrt_recipm1_alpha_bar, coef1, coef2, sigma], float32 as torch's
  }
  return out;
}
async function step(W, i) {
  const p = W.p, n = W.size, x = W.xs[i], [a, b, c1, c2, sigma] = W.coefs[i];
  const batch = p.doubled ? 2 : 1, input = new Float32Array(batch * n);
  input.set(x);
  if (p.doubled) input.set(x, n);
  const feeds = {x: new W.ort.Tensor("float32", input, [batch, ...p.shape]),
                 t: tensorOf(W.ort, W.types.t, new Array(batch).fill(p.model_t[i]))};
  if (W.names.includes("labels")) feeds.labels = tensorOf(W.ort, W.types.labels, p.labels);
  const out = (await W.sess.run(feeds))[W.sess.outputNames[0]].data;
  const eps = new Float32Array(n), x0 = new Float32Array(n), next = new Float32Array(n);
  const w = F(p.guidance);
  for (let k = 0; k < n; k++) {  // eps_u + w (eps_c - eps_u) (samplers.combine_guided)
    eps[k] = p.doubled ? F(out[n + k] + F(w * F(out[k] - out[n + k]))) : out[k];
  }
  const z = p.draws[i] ? W.noise.randn(n) : null;
  for (let k = 0; k < n; k++) {
    let v = F(F(a * x[k]) - F(b * eps[k]));
    if (p.clip) v = Math.min(Math.max(v, -1), 1);
    x0[k] = v;
    const mean = F(F(c1 * v) + F(c2 * x[k]));
    next[k] = z ? F(mean + F(sigma * z[k])) : mean;
  }
  W.x0s.push(x0);
  W.zs.push(z);
  W.xs.push(next);
}
function showFrame(W, k, live) {
  const p = W.p, last = k >= W.xs.length - 1 && W.done;
  paint($("xt"), W.xs[k], p.shape);
  paint($("x0"), k < W.x0s.length ? W.x0s[k] : W.xs[k], p.shape);
  $("xt-label").textContent = `x_t, t = ${p.t[k]}`;
  $("x0-label").textContent = last ? "x_0 (the walk's last frame)" : "x0_hat (all noise removed)";
  ROOT.dataset.step = String(k);
  if (!live) anatomy(W, Math.min(k, W.x0s.length - 1));
}
function anatomy(W, k) {  // the step from frame k to frame k + 1 (views/step.py)
  if (k < 0) return;
  const p = W.p, n = W.size, [a, b, c1, c2, sigma] = W.coefs[k], mean = new Float32Array(n);
  const noise = new Float32Array(n), z = W.zs[k];
  for (let i = 0; i < n; i++) {
    mean[i] = F(F(c1 * W.x0s[k][i]) + F(c2 * W.xs[k][i]));
    noise[i] = z ? F(sigma * z[i]) : 0;
  }
  paint($("a-xt"), W.xs[k], p.shape);
  paint($("a-x0"), W.x0s[k], p.shape);
  paint($("a-mean"), mean, p.shape);
  paint($("a-noise"), noise, p.shape, 3);
  paint($("a-next"), W.xs[k + 1], p.shape);
  const f = v => Number(v).toPrecision(5);
  $("numbers").innerHTML = `step ${k + 1} of ${p.steps}: t = ${p.t[k]} → t' = ${p.t[k + 1]} (network at step ` +
    `${p.model_t[k]}); x0_hat = ${f(a)} · x_t − ${f(b)} · eps_hat${p.clip ? ", clipped to [−1, 1]" : ""}; ` +
    `c1 = ${f(c1)}, c2 = ${f(c2)}, σ = ${f(sigma)}${z ? "" : " (no noise added)"}.`;
}
function evenIndices(n, k) {  // views.inputs.even_indices (numpy rounds half to even)
  const m = Math.min(k, n), out = new Set();
  for (let i = 0; i < m; i++) {
    const v = m === 1 ? 0 : i * (n - 1) / (m - 1), r = Math.round(v);
    out.add(r - v === 0.5 && r % 2 ? r - 1 : r);
  }
  return [...out].sort((u, v) => u - v);
}
function strip(W) {
  const box = $("strip");
  box.innerHTML = "";
  for (const k of evenIndices(W.xs.length, 10)) {
    box.insertAdjacentHTML("beforeend", fig(`s${k}`, `t=${W.p.t[k]}`));
    paint(box.querySelector(`[data-role="s${k}"]`), W.xs[k], W.p.shape);
  }
}
function finish(W, ms) {
  W.done = true;
  const scrub = $("scrub");
  scrub.max = String(W.p.steps);
  scrub.value = String(W.p.steps);
  scrub.disabled = false;
  showFrame(W, W.p.steps, false);
  strip(W);
  $("gif").disabled = false;
  $("gif-link").hidden = true;
  status(`Done: ${W.p.name} (${W.p.steps} network calls) in ${(ms / 1000).toFixed(1)} s, <strong>computed in your ` +
         `browser</strong> (${W.how}); ${W.p.conditioning}.`, "done");
}

async function walk(p) {
  const ticket = p.ticket, pressed = S.pressed ?? performance.now();
  S.pressed = null;
  S.ticket = ticket;
  showBrowser(true);
  Object.assign(ROOT.dataset, {ticket: String(ticket), step: "0", firstMs: "", lastMs: "", reason: "",
                               walk: `${p.name}|${p.seed}|${p.guidance}|${p.clip}|${p.labels.join(",")}`});
  status(`Starting from pure noise x_T (seed ${p.seed}); ${p.conditioning}. <strong>Computed in your browser` +
         `</strong>: loading the network…`, "running");
  const size = p.shape.reduce((u, v) => u * v, 1);
  const noise = torchGenerator(p.seed);  // x_T first, then each step's z from the same stream, as the server draws
  const W = {p, size, coefs: coefficients(p), xs: [noise.randn(size)], x0s: [], zs: [], noise, done: false};
  S.walk = W;
  $("scrub").disabled = true;
  $("gif").disabled = true;
  showFrame(W, 0, true);  // x_T needs no network: the first frame at once
  ROOT.dataset.firstMs = (performance.now() - pressed).toFixed(1);
  [W.ort, W.sess] = await session(p.model.file.url, p.runtime);
  W.names = W.sess.inputNames;
  W.types = {t: inputType(W.sess, "t", p.model.inputs), labels: inputType(W.sess, "labels", p.model.inputs)};
  const threads = W.ort.env.wasm.numThreads;
  W.how = `ONNX Runtime Web, WebAssembly, ${threads} thread${threads > 1 ? "s" : ""}`;
  const started = performance.now();
  let shown = performance.now();
  for (let i = 0; i < p.steps; i++) {
    if (S.ticket !== ticket) return;  // a newer walk or Stop
    await step(W, i);
    const now = performance.now();
    if (i === 0 || i === p.steps - 1 || now - shown > 30) {  // each frame painted as it comes (at most ~30/s)
      showFrame(W, i + 1, true);
      status(`${p.name}: step ${i + 1}/${p.steps}, <strong>computed in your browser</strong> (${W.how}).`);
      if (i === 0) ROOT.dataset.firstStepMs = (now - pressed).toFixed(1);
      shown = now;
      await new Promise(r => setTimeout(r, 0));  // (let the page paint)
    }
  }
  if (S.ticket !== ticket) return;
  finish(W, performance.now() - started);
  ROOT.dataset.lastMs = (performance.now() - pressed).toFixed(1);
}

function start(p) {
  if (!p || typeof p !== "object" || !p.ticket || p.ticket === S.started) return;
  S.started = p.ticket;
  if (p.run !== "browser") {
    S.ticket = p.ticket;
    ROOT.dataset.ticket = String(p.ticket);
    return runOnServer(p.reason || "the server runs this walk");
  }
  walk(p).catch(err => {
    if (S.ticket !== p.ticket) return;
    console.error("the walk in the browser failed", err);
    runOnServer(`the browser could not run the walk (${err && err.message ? err.message : err})`);
  });
}

// ---- the scrubber, Stop, the GIF, the press time ----
function onInput(e) {
  if (e.target === $("scrub") && S.walk && S.walk.done) showFrame(S.walk, Number(e.target.value), false);
}
function onClick(e) {
  const t = e.target;
  if (!t || !t.closest) return;
  if (t.closest(`#${P.ids.run}`)) S.pressed = performance.now();
  if (t.closest(`#${P.ids.stop}`) && S.walk && !S.walk.done && ROOT.dataset.status === "running") {
    S.ticket = -1;
    status(`Stopped at step ${S.walk.xs.length - 1}/${S.walk.p.steps}, <strong>computed in your browser</strong>.`,
           "stopped");
  }
  if (t === $("gif") && S.walk && S.walk.done) gif(S.walk);
}
ROOT.addEventListener("input", onInput);
document.addEventListener("click", onClick, true);
hub.detach = () => document.removeEventListener("click", onClick, true);

// ---- the GIF, encoded in the page: the scrubber's frames (x_t | x0_hat), one palette, no dithering ----
function gif(W) {
  const frames = evenIndices(W.xs.length, 40), [c, h, w] = W.p.shape, gap = 4, width = 2 * w + gap, m = h * w;
  const grey = c === 1, palette = [];
  for (let i = 0; i < 256; i++) palette.push(grey ? [i, i, i] : [(i >> 5) * 255 / 7, ((i >> 2) & 7) * 255 / 7,
                                                                   (i & 3) * 255 / 3].map(Math.round));
  const level = v => Math.round((Math.min(Math.max(v, -1), 1) + 1) * 127.5);
  const index = (x, i) => grey ? level(x[i]) : (Math.round(level(x[i]) * 7 / 255) << 5) |
    (Math.round(level(x[m + i]) * 7 / 255) << 2) | Math.round(level(x[2 * m + i]) * 3 / 255);
  const pictures = frames.map(k => {
    const px = new Uint8Array(width * h).fill(255);  // (white in both palettes)
    const right = k < W.x0s.length ? W.x0s[k] : W.xs[k];
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      px[y * width + x] = index(W.xs[k], y * w + x);
      px[y * width + w + gap + x] = index(right, y * w + x);
    }
    return px;
  });
  const blob = new Blob([encodeGif(width, h, palette, pictures, 8)], {type: "image/gif"});
  const link = $("gif-link");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.hidden = false;
  ROOT.dataset.gifBytes = String(blob.size);
}
function encodeGif(width, height, palette, pictures, delayCs) {  // GIF89a, 8-bit LZW, looping
  const out = [];
  const u16 = v => out.push(v & 255, v >> 8);
  out.push(...[..."GIF89a"].map(ch => ch.charCodeAt(0)));
  u16(width); u16(height);
  out.push(0xf7, 0, 0);  // global colour table of 256
  for (const [r, g, b] of palette) out.push(r, g, b);
  out.push(0x21, 0xff, 11, ...[..."NETSCAPE2.0"].map(ch => ch.charCodeAt(0)), 3, 1, 0, 0, 0);
  for (const px of pictures) {
    out.push(0x21, 0xf9, 4, 0, delayCs & 255, delayCs >> 8, 0, 0);
    out.push(0x2c, 0, 0, 0, 0);
    u16(width); u16(height);
    out.push(0, 8);
    const data = lzw(px);
    for (let i = 0; i < data.length; i += 255) {
      const chunk = data.subarray(i, i + 255);
      out.push(chunk.length, ...chunk);
    }
    out.push(0);
  }
  out.push(0x3b);
  return new Uint8Array(out);
}
function lzw(px) {  // variable-width codes from 9 bits, a clear code when the table is full
  const clear = 256, end = 257, bytes = [];
  let size = 9, next = 258, acc = 0, bits = 0, dict = new Map();
  const emit = code => {
    acc |= code << bits;
    bits += size;
    while (bits >= 8) { bytes.push(acc & 255); acc >>>= 8; bits -= 8; }
  };
  emit(clear);
  let prefix = px[0];
  for (let i = 1; i < px.length; i++) {
    const key = prefix * 256 + px[i], hit = dict.get(key);
    if (hit !== undefined) { prefix = hit; continue; }
    emit(prefix);
    if (next < 4096) {
      dict.set(key, next++);
      if (next > (1 << size) && size < 12) size++;
    } else {
      emit(clear);
      dict = new Map(); size = 9; next = 258;
    }
    prefix = px[i];
  }
  emit(prefix);
  emit(end);
  if (bits > 0) bytes.push(acc & 255);
  return new Uint8Array(bytes);
}

ROOT.__walk = {state: S, hub};
showBrowser(false);
watch("value", () => start(P.value));
start(P.value);
