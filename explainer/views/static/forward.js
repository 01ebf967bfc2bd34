// The forward views painted in the page, so that a t move costs no server call (the js_on_load of a gr.HTML).
//
// props (explainer/views/client.py): mode ("forward" or "compare"), ids (the t slider, the schedule radio, and
// the prefix of this view's element ids), tables (both schedules, float64), colors, curves, hist, bins; value:
// the pixels payload (sent when the image or the seed changes), whose file holds x_0's levels and eps as int16.
// Every t or schedule change (the slider's and the radio's own input events, caught on the document) repaints at
// once: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (views/forward.closed_form_uint8), the numbers table
// (views/forward.numbers_at), the cursor on the cached curve pictures (views/forward.CursorPlot.draw) and the
// pixel histogram with its expected line (views/histogram.py).
const P = props;
const ROOT = element;
const F = Math.fround;
const hub = (window.__ddpmViews = window.__ddpmViews || {});
if (hub[P.mode]) hub[P.mode].detach();

// ---- decoding ----
function bytesOf(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
function float64s(b64) {
  const v = new DataView(bytesOf(b64).buffer);
  const out = new Float64Array(v.byteLength / 8);
  for (let i = 0; i < out.length; i++) out[i] = v.getFloat64(8 * i, true);
  return out;
}
const T = P.tables.T;
const NAMES = P.tables.names;
const TAB = {};
for (const name of NAMES) {
  const s = P.tables.schedules[name];
  TAB[name] = {betas: float64s(s.betas), alpha_bars: float64s(s.alpha_bars), log_snr: float64s(s.log_snr),
               near: s.near_noise};
}

// ---- numbers (views/schedules.summary_at, views/forward._fmt) ----
function summaryAt(name, t) {
  if (t === 0) return {beta: 0, alpha_bar: 1, sqrt_alpha_bar: 1, one_minus: 0, snr: Infinity};
  const ab = TAB[name].alpha_bars[t - 1];
  return {beta: TAB[name].betas[t - 1], alpha_bar: ab, sqrt_alpha_bar: Math.sqrt(ab), one_minus: 1 - ab,
          snr: ab / (1 - ab)};
}
function exponent(s) {  // "1.5e-5" -> "1.5e-05", as Python writes it
  return s.replace(/e([+-])(\d)$/, "e$10$2");
}
function fmt(v) {  // Python's f"{v:.6g}" (|v| >= 1e-4 or 0) or f"{v:.3e}"
  if (!Number.isFinite(v)) return "∞";
  if (Math.abs(v) >= 1e-4 || v === 0) {
    let s = v.toPrecision(6);
    let [mant, exp] = s.split("e");
    if (mant.includes(".")) mant = mant.replace(/0+$/, "").replace(/\.$/, "");
    return exp === undefined ? mant : exponent(mant + "e" + exp);
  }
  return exponent(v.toExponential(3));
}
const ROWS = [["β_t", "beta"], ["ᾱ_t", "alpha_bar"], ["mean coefficient √ᾱ_t", "sqrt_alpha_bar"],
              ["variance 1 − ᾱ_t", "one_minus"], ["SNR ᾱ_t / (1 − ᾱ_t)", "snr"]];
function numbersTable(t, shown) {
  const s = {};
  for (const n of NAMES) s[n] = summaryAt(n, t);
  const head = NAMES.map(n => n === shown ? `<th><strong>${n}</strong> (shown)</th>` : `<th>${n}</th>`).join("");
  const body = ROWS.map(([label, key]) =>
    `<tr><td>${label}</td>` + NAMES.map(n => `<td data-key="${n}.${key}">${fmt(s[n][key])}</td>`).join("") + "</tr>");
  return `<table><thead><tr><th>at t = ${t}</th>${head}</tr></thead><tbody>${body.join("")}</tbody></table>`;
}
function signed(v, d) {  // Python's f"{v:+.3f}"
  return (v < 0 || Object.is(v, -0) ? "" : "+") + v.toFixed(d);
}

// ---- the standard normal CDF: erfc from its series (|x| < 2.5) or its continued fraction (Lentz) ----
function erfc(x) {
  const ax = Math.abs(x);
  let r;
  if (ax < 2.5) {
    let term = ax, sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    r = 1 - 1.1283791670955126 * sum;  // 2 / sqrt(pi)
  } else if (ax > 6.5) {
    r = 0;  // erfc(6.5) < 1e-19
  } else {
    let f = ax, C = ax, D = 0;
    for (let n = 1; n < 300; n++) {
      const a = n / 2;
      D = 1 / (ax + a * D);
      C = ax + a / C;
      const delta = C * D;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = Math.exp(-ax * ax) / (1.7724538509055159 * f);  // sqrt(pi)
  }
  return x >= 0 ? r : 2 - r;
}
// Phi on a grid of step 1/256 over [-9, 9] with its derivative phi, read by cubic Hermite interpolation
// (error under 1e-12; beyond the grid Phi is 0 or 1 to 1e-18): a t move needs 256 levels x 79 edges of it
const Z_MAX = 9, Z_STEP = 1 / 256, Z_N = 2 * Z_MAX / Z_STEP;
const PHI = new Float64Array(Z_N + 1), DPHI = new Float64Array(Z_N + 1);
for (let i = 0; i <= Z_N; i++) {
  const z = -Z_MAX + i * Z_STEP;
  PHI[i] = 0.5 * erfc(-z * Math.SQRT1_2);
  DPHI[i] = Math.exp(-0.5 * z * z) / 2.5066282746310002 * Z_STEP;  // phi(z) h, sqrt(2 pi)
}
function ndtr(z) {
  if (z <= -Z_MAX) return 0;
  if (z >= Z_MAX) return 1;
  const x = (z + Z_MAX) / Z_STEP, i = Math.min(Math.floor(x), Z_N - 1), u = x - i, u2 = u * u, u3 = u2 * u;
  return (2 * u3 - 3 * u2 + 1) * PHI[i] + (u3 - 2 * u2 + u) * DPHI[i] + (3 * u2 - 2 * u3) * PHI[i + 1] +
    (u3 - u2) * DPHI[i + 1];
}

// ---- pixels ----
const S = {t: null, schedule: null, px: null, paints: 0, last: null, version: 0, wanted: 0, retries: 0};
// the payload's file: x_0's 8-bit levels (n bytes), then eps as little-endian int16 (n values)
function setPixels(p, buffer) {
  const n = p.width * p.height * 3;
  if (buffer.byteLength !== 3 * n) return false;
  const levels = new Uint8Array(buffer, 0, n), view = new DataView(buffer, n);
  const x0 = new Float32Array(n), eps = new Float32Array(n), count = new Float64Array(256);
  for (let i = 0; i < n; i++) {
    x0[i] = F(levels[i] / 127.5) - 1;  // float32, as views/forward.prepare_image
    eps[i] = view.getInt16(2 * i, true) / p.eps_scale;
    count[levels[i]]++;
  }
  const pv = count.map(c => c / n);  // p(v): the share of x_0's values at each level
  let mean0 = 0, var0 = 0;
  for (let v = 0; v < 256; v++) mean0 += pv[v] * (v / 127.5 - 1);
  for (let v = 0; v < 256; v++) var0 += pv[v] * (v / 127.5 - 1 - mean0) ** 2;
  const used = [];
  for (let v = 0; v < 256; v++) if (pv[v] > 0) used.push(v);
  S.px = {w: p.width, h: p.height, n, x0, eps, pv, used, mean0, var0, seed: p.seed};
  S.version++;
  return true;
}
async function loadPixels(p) {
  if (!p || typeof p !== "object" || !p.file || !p.file.url) return;
  const ticket = ++S.wanted;
  try {
    const response = await fetch(p.file.url);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const buffer = await response.arrayBuffer();
    if (ticket === S.wanted && setPixels(p, buffer)) paint(true);  // (a newer payload wins)
  } catch (err) {
    console.error("forward view: the pixels did not load", err);
  }
}
// x_t = a x_0 + b eps with a = sqrt(abar_t), b = sqrt(1 - abar_t) rounded to float32 as the server's
// views/forward.closed_form_uint8 does (its float32 steps differ from these double ones by under 1e-6, at most
// one grey level where a value sits on a rounding boundary); with ``bins``, the unclipped values are counted
// in the histogram's bins (views/histogram.bin_counts) and summed in the same pass
function paintXt(canvas, alphaBar, bins) {
  const px = S.px;
  if (canvas.width !== px.w || canvas.height !== px.h || !canvas.__img) {
    canvas.width = px.w;
    canvas.height = px.h;
    canvas.__img = canvas.getContext("2d").createImageData(px.w, px.h);
    const d = canvas.__img.data;
    for (let j = 3; j < d.length; j += 4) d[j] = 255;
  }
  canvas.classList.toggle("ddpm-small", px.w < 128 && px.h < 128);
  const img = canvas.__img, d = img.data;  // Uint8ClampedArray: clips to 0..255, rounds half to even (np.rint)
  const a = F(Math.sqrt(F(alphaBar))), b = F(Math.sqrt(F(1 - alphaBar)));
  const x0 = px.x0, eps = px.eps, m = px.w * px.h;
  if (!bins) {
    for (let i = 0, k = 0, j = 0; i < m; i++, j += 4, k += 3) {
      d[j] = (a * x0[k] + b * eps[k] + 1) * 127.5;
      d[j + 1] = (a * x0[k + 1] + b * eps[k + 1] + 1) * 127.5;
      d[j + 2] = (a * x0[k + 2] + b * eps[k + 2] + 1) * 127.5;
    }
  } else {
    const counts = bins.counts, e0 = bins.e0, inv = bins.inv, top = bins.counts.length - 1;
    let sum = 0, sumsq = 0;
    for (let i = 0, k = 0, j = 0; i < m; i++, j += 4) {
      for (let c = 0; c < 3; c++, k++) {
        const v = a * x0[k] + b * eps[k];
        d[j + c] = (v + 1) * 127.5;
        sum += v;
        sumsq += v * v;
        const q = (v - e0) * inv;  // counts[0] and counts[top]: below and above the edges
        counts[q < 0 ? 0 : q >= top ? top : (q | 0) + 1]++;
      }
    }
    bins.sum = sum;
    bins.sumsq = sumsq;
  }
  canvas.getContext("2d").putImageData(img, 0, 0);
}

// ---- cached plots with a cursor (views/forward.CursorPlot) ----
const rint = x => {  // Python's round(): half to even
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
};
const images = {};
function picture(url) {
  if (!images[url]) {
    const img = new Image();
    img.onload = () => paint(true);
    img.src = url;
    images[url] = img;
  }
  return images[url].complete && images[url].naturalWidth ? images[url] : null;
}
const col = (ax, t) => rint(ax.x[0] + ax.x[1] * t);
const row = (ax, v) => rint(ax.y[0] + ax.y[1] * v);
function rgb(c) {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function drawCursor(canvas, spec, t, markers) {
  const base = picture(spec.png);
  if (!base) return false;
  if (canvas.width !== spec.width || canvas.height !== spec.height) {
    canvas.width = spec.width;
    canvas.height = spec.height;
  }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(base, 0, 0);
  ctx.fillStyle = "rgb(0,0,0)";
  for (const ax of spec.axes) {
    const x = Math.min(Math.max(col(ax, t), ax.cols[0]), ax.cols[1] - 2);
    ctx.fillRect(x, ax.rows[0], 2, ax.rows[1] - ax.rows[0]);
  }
  for (const [i, value, c] of markers) {
    if (!Number.isFinite(value)) continue;
    const ax = spec.axes[i], x = col(ax, t), y = row(ax, value);
    if (y >= ax.rows[0] && y < ax.rows[1]) {
      const x0 = Math.max(x - 3, 0), y0 = Math.max(y - 3, 0);
      ctx.fillStyle = rgb(c);
      ctx.fillRect(x0, y0, x + 5 - x0, y + 4 - y0);
    }
  }
  return true;
}

// ---- the pixel histogram (views/histogram.py) ----
const EDGES = P.bins ? P.bins.edges : [];
const BINS = EDGES.length - 1;
function newBins() {
  return {counts: new Int32Array(BINS + 2), e0: EDGES[0], inv: 1 / P.bins.bin_width, sum: 0, sumsq: 0};
}
function histogram(alphaBar, bins) {
  const px = S.px, n = px.n, counts = bins.counts;
  const mean = bins.sum / n;
  const observed = new Float64Array(BINS), expected = new Float64Array(BINS);
  let inside = 0;
  for (let k = 0; k < BINS; k++) {
    inside += counts[k + 1];
    observed[k] = counts[k + 1] / (n * (EDGES[k + 1] - EDGES[k]));
  }
  // E[bin k] = sum_v p(v) [Phi((e_{k+1} - sqrt(abar) v) / s) - Phi((e_k - sqrt(abar) v) / s)] / width
  const a = Math.sqrt(alphaBar), s = Math.sqrt(Math.max(1 - alphaBar, 0));
  for (const lv of px.used) {
    const m = a * (lv / 127.5 - 1), p = px.pv[lv];
    if (s === 0) {  // t = 0: each level falls in one bin
      let k = 0;
      while (k < BINS - 1 && EDGES[k + 1] <= m) k++;
      expected[k] += p;
      continue;
    }
    let prev = ndtr((EDGES[0] - m) / s);
    for (let k = 0; k < BINS; k++) {
      const next = ndtr((EDGES[k + 1] - m) / s);
      expected[k] += p * (next - prev);
      prev = next;
    }
  }
  for (let k = 0; k < BINS; k++) expected[k] /= EDGES[k + 1] - EDGES[k];
  return {observed, expected, outside: 1 - inside / n, mean, std: Math.sqrt(Math.max(bins.sumsq / n - mean * mean, 0)),
          expected_mean: a * px.mean0, expected_std: Math.sqrt(alphaBar * px.var0 + 1 - alphaBar)};
}
function drawHistogram(canvas, spec, h) {
  const base = picture(spec.png), over = picture(spec.over);
  if (!base || !over) return false;
  if (canvas.width !== spec.width || canvas.height !== spec.height) {
    canvas.width = spec.width;
    canvas.height = spec.height;
  }
  const ctx = canvas.getContext("2d"), ax = spec.axes[0], cols = spec.edge_cols;
  const bottom = ax.rows[1], yMax = P.bins.y_max;
  const rowOf = d => Math.min(Math.max(row(ax, Math.min(d, yMax)), ax.rows[0]), ax.rows[1] - 1);
  ctx.drawImage(base, 0, 0);
  ctx.fillStyle = rgb(spec.bar_rgb);
  for (let k = 0; k < BINS; k++) {  // bars, one column gap between them
    const c0 = cols[k], c1 = cols[k + 1] - 1;
    if (h.observed[k] > 0 && c1 > c0) {
      const r = rowOf(h.observed[k]);
      ctx.fillRect(c0, r, c1 - c0, bottom - r);
    }
  }
  ctx.drawImage(over, 0, 0);  // the dashed N(0, 1) stays on top of the bars
  ctx.fillStyle = rgb(P.bins.line_rgb);
  const floor = bottom - 2;
  let prev = null;
  for (let k = 0; k < BINS; k++) {  // the expected height as a 2-pixel step line
    const c0 = cols[k], c1 = cols[k + 1], r = rowOf(h.expected[k]);
    if (r < floor) ctx.fillRect(c0, r, c1 - c0, 2);
    if (prev !== null && Math.min(prev, r) < floor) {
      const top = Math.min(prev, r), end = Math.min(Math.max(prev, r), floor) + 2;
      ctx.fillRect(c0, top, 2, end - top);
    }
    prev = r;
  }
  return true;
}
function histogramText(t, schedule, h) {
  let text = `<strong>Pixel values of x_t at t = ${t}</strong> (${schedule}): mean ${signed(h.mean, 3)}, ` +
    `std ${h.std.toFixed(3)}. Expected under q(x_t | x_0): mean √ᾱ_t · mean(x_0) = ${signed(h.expected_mean, 3)}, ` +
    `std √(ᾱ_t var(x_0) + 1 − ᾱ_t) = ${h.expected_std.toFixed(3)}. Pure noise N(0, 1): 0 and 1.`;
  if (h.outside > 0) text += ` (${(100 * h.outside).toFixed(2)}% of the values lie outside the plotted range.)`;
  return text;
}
function compareText(t) {
  const items = NAMES.map(n => {
    const near = TAB[n].near, ab = t === 0 ? 1 : TAB[n].alpha_bars[t - 1];
    return `<li><strong>${n}</strong>: ${near} of ${T} steps (${(100 * near / T).toFixed(1)}%) have ` +
      `ᾱ_t &lt; ${P.tables.near_noise} (signal amplitude √ᾱ_t &lt; ${Math.sqrt(P.tables.near_noise).toFixed(1)}: ` +
      `nearly pure noise); at t = ${t} the image keeps √ᾱ_t = ${Math.sqrt(ab).toFixed(3)} of its amplitude.</li>`;
  });
  return numbersTable(t, "") + `<ul>${items.join("")}</ul>`;
}

// ---- the page elements ----
const id = P.ids.prefix;
const figure = (role, label) =>
  `<figure class="ddpm-fig ddpm-${role}"><figcaption>${label}</figcaption>` +
  `<canvas id="${id}-${role}" data-role="${role}" role="img" aria-label="${label}" width="1" height="1"></canvas>` +
  `</figure>`;
ROOT.innerHTML = P.mode === "forward"
  ? `<div class="ddpm-grid">${figure("xt", "x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε")}` +
    `<div id="${id}-numbers" class="ddpm-numbers"></div>` +
    `${figure("curves", "mean and variance of q(x_t | x_0), both schedules, cursor at t")}` +
    `<div>${figure("hist", "pixel values of x_t against pure noise N(0, 1)")}` +
    `<div id="${id}-hist-text" class="ddpm-text"></div></div></div>`
  : `<div class="ddpm-grid">${figure("linear", "linear")}${figure("cosine", "cosine")}</div>` +
    `<div id="${id}-text" class="ddpm-numbers"></div>` +
    `${figure("curves", "ᾱ_t and log SNR of both schedules (shaded: steps near pure noise)")}`;
ROOT.dataset.ddpmView = P.mode;  // (tests and the load benchmark find the view by it)
const canvas = role => ROOT.querySelector(`canvas[data-role="${role}"]`);

// t and the schedule as the page shows them; null while the slider or the radio is not in the page yet (a tab that
// is opened for the first time may build this view before them: paint then shows t0 and reads them again soon)
function readT() {
  const input = document.querySelector(`#${P.ids.t} input[type=range]`);
  const v = input ? Number(input.value) : NaN;
  return Number.isFinite(v) ? Math.min(Math.max(Math.round(v), 0), T) : null;
}
function readSchedule() {
  const box = P.ids.schedule && document.getElementById(P.ids.schedule);
  if (!box) return null;
  const on = box && (box.querySelector("input[type=radio]:checked") || box.querySelector("input[aria-checked=true]"));
  return on && NAMES.includes(on.value) ? on.value : NAMES[0];
}

function paint(force) {
  if (!ROOT.isConnected) return;
  const t0 = performance.now();
  if (S.t === null) S.t = readT();
  if (S.schedule === null) S.schedule = P.mode === "forward" ? readSchedule() : "";
  if ((S.t === null || S.schedule === null) && S.retries++ < 200) setTimeout(() => paint(true), 50);
  const t = S.t ?? P.ids.t0, schedule = S.schedule ?? NAMES[0], key = `${t}|${schedule}|${S.version}`;
  if (!force && key === S.last) return;
  let done = true;
  if (P.mode === "forward") {
    const ab = t === 0 ? 1 : TAB[schedule].alpha_bars[t - 1];
    ROOT.querySelector(".ddpm-numbers").innerHTML = numbersTable(t, schedule);
    const c = P.colors[schedule];
    done = drawCursor(canvas("curves"), P.curves[schedule], t, [[0, Math.sqrt(ab), c], [0, 1 - ab, c]]) && done;
    if (S.px) {
      const bins = newBins(), t1 = performance.now();
      paintXt(canvas("xt"), ab, bins);
      const t2 = performance.now(), h = histogram(ab, bins), t3 = performance.now();
      done = drawHistogram(canvas("hist"), P.hist[schedule], h) && done;
      ROOT.querySelector(".ddpm-text").innerHTML = histogramText(t, schedule, h);
      ROOT.__ddpm.hist = h;
      ROOT.__ddpm.parts = {x_t: t2 - t1, histogram: t3 - t2, drawing: performance.now() - t3};
    }
  } else {
    ROOT.querySelector(".ddpm-numbers").innerHTML = compareText(t);
    const markers = [];
    if (t >= 1) for (const n of NAMES) {
      markers.push([0, TAB[n].alpha_bars[t - 1], P.colors[n]], [1, TAB[n].log_snr[t - 1], P.colors[n]]);
    }
    done = drawCursor(canvas("curves"), P.curves, t, markers) && done;
    if (S.px) for (const n of NAMES) paintXt(canvas(n), t === 0 ? 1 : TAB[n].alpha_bars[t - 1]);
  }
  if (done && S.px) S.last = key;  // (pictures still loading: painted again when they arrive)
  S.paints++;
  ROOT.__ddpm.ms = performance.now() - t0;
  Object.assign(ROOT.dataset, {t: String(t), schedule, seed: S.px ? String(S.px.seed) : "", paints: String(S.paints)});
}

function onInput(e) {
  if (!ROOT.isConnected) return;
  const target = e.target;
  if (!target || !target.closest) return;
  if (target.closest(`#${P.ids.t}`)) {
    const v = Number(target.value);
    if (target.value === "" || !Number.isFinite(v)) return;
    S.t = Math.min(Math.max(Math.round(v), 0), T);
    paint();
  } else if (P.ids.schedule && target.type === "radio" && target.closest(`#${P.ids.schedule}`)) {
    if (NAMES.includes(target.value)) {
      S.schedule = target.value;
      paint();
    }
  }
}
document.addEventListener("input", onInput, true);
document.addEventListener("change", onInput, true);
hub[P.mode] = {
  detach: () => {
    document.removeEventListener("input", onInput, true);
    document.removeEventListener("change", onInput, true);
  },
  // t or the schedule set from the server (the tour's "Show me") fires no input event: read them again and repaint
  sync: () => {
    S.t = null;
    if (P.mode === "forward") S.schedule = null;
    paint(true);
  },
};
ROOT.__ddpm = {state: S, paint, hist: null, ms: 0};

watch("value", () => loadPixels(P.value));
loadPixels(P.value);
paint(true);
