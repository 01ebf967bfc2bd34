// The forward tab's two strips painted in the page (the js_on_load of a gr.HTML; explainer/views/strips.py).
//
// props: T, names, tables (both schedules' betas and alpha_bars, float64 base64), closed_ts, chain_ts, ids (the
// schedule radio); value: the pixels payload of x_0 at the strips' size (its file: x_0's 8-bit levels, then eps
// as int16). Draws the closed form at closed_ts with the payload's eps, and the 1000-step Markov chain with the
// page's own seeded noise, recorded at chain_ts; again when the picture, the seed or the schedule changes.
const P = props;
const ROOT = element;
const F = Math.fround;
const hub = (window.__ddpmStrips = window.__ddpmStrips || {});
if (hub.detach) hub.detach();

function float64s(b64) {
  const s = atob(b64), v = new DataView(new ArrayBuffer(s.length));
  for (let i = 0; i < s.length; i++) v.setUint8(i, s.charCodeAt(i));
  return Float64Array.from({length: s.length / 8}, (_, i) => v.getFloat64(8 * i, true));
}
const TAB = {};
for (const name of P.names) TAB[name] = {betas: float64s(P.tables[name].betas),
                                         alpha_bars: float64s(P.tables[name].alpha_bars)};

// ---- the page's own normal draws: xoshiro128** seeded by splitmix32, Marsaglia's polar method ----
function normals(seed) {
  let z = seed >>> 0;
  const split = () => {
    z = (z + 0x9e3779b9) >>> 0;
    let r = z;
    r = Math.imul(r ^ (r >>> 16), 0x85ebca6b);
    r = Math.imul(r ^ (r >>> 13), 0xc2b2ae35);
    return (r ^ (r >>> 16)) >>> 0;
  };
  const s = new Uint32Array([split(), split(), split(), split()]);
  const rotl = (x, k) => (x << k) | (x >>> (32 - k));
  function uniform() {  // in (-1, 1)
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0, t = s[1] << 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 11);
    return (r + 0.5) / 2147483648 - 1;
  }
  let spare = null;
  return function normal() {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    let u, v, q;
    do {
      u = uniform();
      v = uniform();
      q = u * u + v * v;
    } while (q >= 1 || q === 0);
    const f = Math.sqrt(-2 * Math.log(q) / q);
    spare = v * f;
    return u * f;
  };
}
hub.normals = normals;

// the chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z_t, t = 1..T; frames at ``keep`` (x_0 included)
function chain(x0, betas, seed, keep) {
  const x = Float64Array.from(x0), normal = normals(seed), out = {}, want = new Set(keep);
  if (want.has(0)) out[0] = Float32Array.from(x);
  for (let t = 1; t <= betas.length; t++) {
    const a = Math.sqrt(1 - betas[t - 1]), s = Math.sqrt(betas[t - 1]);
    for (let i = 0; i < x.length; i++) x[i] = a * x[i] + s * normal();
    if (want.has(t)) out[t] = Float32Array.from(x);
  }
  return out;
}
hub.chain = chain;  // (the tests check its statistics against the closed form)

// ---- painting ----
function paint(canvas, x, w, h) {  // x: [H, W, 3] in [-1, 1]
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), d = img.data;
  for (let i = 0, j = 0; i < w * h; i++, j += 4) {
    d[j] = (x[3 * i] + 1) * 127.5;  // Uint8ClampedArray clips and rounds half to even, as views' to_uint8
    d[j + 1] = (x[3 * i + 1] + 1) * 127.5;
    d[j + 2] = (x[3 * i + 2] + 1) * 127.5;
    d[j + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
function row(role, ts) {
  const box = ROOT.querySelector(`[data-role="${role}"]`);
  box.innerHTML = ts.map(t => `<figure class="ddpm-sfig"><canvas data-t="${t}" width="1" height="1"></canvas>` +
                                `<figcaption>t=${t}</figcaption></figure>`).join("");
  return t => box.querySelector(`canvas[data-t="${t}"]`);
}
ROOT.innerHTML =
  `<div class="ddpm-slabel">10 frames from the closed form (one ε)</div><div class="ddpm-srow" data-role="closed">` +
  `</div><div class="ddpm-slabel">the 1000-step Markov chain (fresh noise each step), every 100th step</div>` +
  `<div class="ddpm-srow" data-role="chain"></div>`;
ROOT.dataset.ddpmView = "strips";
const closedCanvas = row("closed", P.closed_ts), chainCanvas = row("chain", P.chain_ts);
const S = {px: null, schedule: null, wanted: 0, drawn: 0};

function readSchedule() {
  const box = document.getElementById(P.ids.schedule);
  const on = box && box.querySelector("input[type=radio]:checked");
  return on && P.names.includes(on.value) ? on.value : P.names[0];
}
function draw() {
  if (!S.px || !ROOT.isConnected) return;
  const t0 = performance.now(), name = S.schedule ?? readSchedule(), px = S.px, tab = TAB[name];
  for (const t of P.closed_ts) {  // x_t = a x_0 + b eps, a and b rounded to float32 as the server's
    const ab = t === 0 ? 1 : tab.alpha_bars[t - 1], a = F(Math.sqrt(F(ab))), b = F(Math.sqrt(F(1 - ab)));
    const x = new Float32Array(px.n);
    for (let i = 0; i < px.n; i++) x[i] = F(F(a * px.x0[i]) + F(b * px.eps[i]));
    paint(closedCanvas(t), x, px.w, px.h);
  }
  const closedMs = performance.now() - t0;
  const frames = chain(px.x0, tab.betas, px.seed, P.chain_ts);
  for (const t of P.chain_ts) paint(chainCanvas(t), frames[t], px.w, px.h);
  S.drawn++;
  Object.assign(ROOT.dataset, {schedule: name, seed: String(px.seed), drawn: String(S.drawn),
                               closedMs: closedMs.toFixed(1), ms: (performance.now() - t0).toFixed(1),
                               drawnAt: performance.now().toFixed(1)});
}
async function load(p) {
  if (!p || typeof p !== "object" || !p.file || !p.file.url) return;
  const ticket = ++S.wanted, t0 = performance.now();
  try {
    const response = await fetch(p.file.url);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const buffer = await response.arrayBuffer(), n = p.width * p.height * 3;
    if (ticket !== S.wanted || buffer.byteLength !== 3 * n) return;
    const levels = new Uint8Array(buffer, 0, n), view = new DataView(buffer, n);
    const x0 = new Float32Array(n), eps = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      x0[i] = F(levels[i] / 127.5) - 1;
      eps[i] = view.getInt16(2 * i, true) / p.eps_scale;
    }
    S.px = {w: p.width, h: p.height, n, x0, eps, seed: p.seed};
    draw();
    ROOT.dataset.loadedMs = (performance.now() - t0).toFixed(1);
  } catch (err) {
    console.error("strips: the pixels did not load", err);
  }
}
function onInput(e) {
  const target = e.target;
  if (target && target.type === "radio" && target.closest && target.closest(`#${P.ids.schedule}`) &&
      P.names.includes(target.value) && target.value !== S.schedule) {
    S.schedule = target.value;
    draw();
  }
}
document.addEventListener("input", onInput, true);
document.addEventListener("change", onInput, true);
hub.detach = () => {
  document.removeEventListener("input", onInput, true);
  document.removeEventListener("change", onInput, true);
};
watch("value", () => load(P.value));
load(P.value);
