// The Explorer's view: draws what the kernel computed, and reports the pointer.
//
// Every number shown comes from roiviz.widgets.ExplorerModel (Python); this module only draws
// them on canvases and sends the dragged box back. A drag is drawn here at once; the box goes
// to the kernel at once while fewer than MAX_IN_FLIGHT requests are unanswered; beyond that only
// the latest box is kept (latest wins, never a backlog), and it is sent when the kernel's frame
// for an earlier one arrives. The frame a kernel sends: `frame` (JSON: boxes, status, layout,
// offsets) and `frame_data` (one binary buffer: float32 values, int16 read windows, RGB/index
// colour bytes), see ExplorerView.frame_payload in roiviz/widgets.py.

const ACTIVE = "#ff3b30";
const OTHERS = ["#0a84ff", "#ffd60a", "#30d158", "#bf5af2", "#ff9f0a", "#64d2ff"];
const LOST = "rgba(255, 59, 48, 0.55)";
const GAINED = "rgba(10, 132, 255, 0.55)";
const HANDLE = 8; // handle side, CSS px
const GRAB = 7; // how close to an edge or corner the pointer grabs it, CSS px
// Box requests allowed in flight at once. More than one: a move is sent as soon as it happens
// instead of waiting for the previous answer (the kernel needs ~5-10 ms per box, the trip
// through the server takes longer), and each request also acknowledges the server's previous
// packets. Beyond this, latest wins: only the newest box waits, never a backlog.
const MAX_IN_FLIGHT = 2;
// Why an empty "nudge" message follows each box request while its answer is awaited: the
// Jupyter server writes to the browser's websocket with Nagle's algorithm on (tornado's default;
// jupyter_server never turns it off), so the kernel's answer is held in the server until the
// browser acknowledges the kernel's "busy" message sent just before it, and a browser that has
// nothing to send acknowledges only after its 40 ms delayed-ACK timer: measured, the answer
// reached the page ~36 ms after the server wrote it. Any message from the page carries that
// acknowledgement at once. The kernel ignores a nudge (no frame, no computation). Two nudges,
// 5 and 15 ms after the request (skipped once answered): "busy" reaches the page ~4 ms after the
// request (median; 10 ms p90). More nudges were measured slower on a busy 2-core machine (each
// one makes the kernel publish busy/idle, which JupyterLab also shows).
const NUDGE_MS = [5, 15];

function bytesOf(v) {
  if (!v) return new Uint8Array(0);
  if (v instanceof Uint8Array) return v;
  if (v instanceof DataView) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (v.buffer) return new Uint8Array(v.buffer, v.byteOffset || 0, v.byteLength);
  return new Uint8Array(0);
}

function f32(u8, off, n) {
  return new Float32Array(u8.slice(off, off + 4 * n).buffer);
}

function i16(u8, off, n) {
  return new Int16Array(u8.slice(off, off + 2 * n).buffer);
}

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

function sizeCanvas(canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = false;
  return ctx;
}

// An RGB (or grey) byte image as an offscreen canvas of its own size, one cell per pixel.
function bitmap(u8, h, w, c) {
  const cv = document.createElement("canvas");
  cv.width = Math.max(w, 1);
  cv.height = Math.max(h, 1);
  if (!h || !w) return cv;
  const ctx = cv.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const r = u8[i * c], g = u8[i * c + (c > 1 ? 1 : 0)], b = u8[i * c + (c > 2 ? 2 : 0)];
    img.data[4 * i] = r;
    img.data[4 * i + 1] = g;
    img.data[4 * i + 2] = b;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return cv;
}

function render({ model, el: host }) {
  const root = el("div", "roiviz-view", host);
  const status = el("div", "roiviz-status", root);
  const row = el("div", "roiviz-row", root);
  const left = el("div", "roiviz-left", row);
  const picture = el("canvas", "roiviz-image", left);
  picture.setAttribute("aria-label", "picture: drag the box or its handles");
  const hint = el("div", "roiviz-caption", left);
  hint.textContent = "drag the box to move it, a handle to resize it, elsewhere to draw a new one";
  const mid = el("div", "roiviz-mid", row);
  const mapTitle = el("div", "roiviz-title", mid);
  const mapCanvas = el("canvas", "roiviz-map", mid);
  const mapCaption = el("div", "roiviz-caption", mid);
  const bar = el("div", "roiviz-colorbar", mid);
  const barCanvas = el("canvas", "", bar);
  const barText = el("div", "roiviz-caption", bar);
  const panels = el("div", "roiviz-panels", row);
  // The FPN mode (levels given): the box's level, the boundaries, every level's map and output.
  const fpn = el("div", "roiviz-fpn", root);
  const hover = el("div", "roiviz-hover", root);
  const metrics = el("div", "roiviz-metrics", root);

  const state = {
    frame: null, data: new Uint8Array(0), pictureBitmap: null, mapBitmap: null, mapKey: "",
    drag: null, localBox: null, seq: 0, inflight: [], pending: null, hover: null,
    latencies: [], settles: [], trips: [], panelCanvases: {},
  };
  // For the benchmark: latencies of pointer move -> panels repainted, in ms, and where each one
  // went (`trips`: waiting for a request in flight, the round trip to the kernel, painting).
  host.__roiviz = state;

  const S = () => model.get("scale");

  function settledFlag() {
    const settled = !state.drag && state.inflight.length === 0 && state.pending === null;
    if (settled && state.releasedAt !== undefined) {
      // For the benchmark: mouse-up -> last frame painted.
      const t = state.releasedAt;
      state.releasedAt = undefined;
      requestAnimationFrame(() => state.settles.push(performance.now() - t));
    }
    host.dataset.settled = settled ? "true" : "false";
    host.dataset.seq = String(state.frame ? state.frame.seq : -1);
  }

  // ------------------------------------------------------------------ data from the kernel
  function loadPicture() {
    const shape = model.get("picture_shape");
    state.pictureBitmap = bitmap(bytesOf(model.get("picture")), shape[0], shape[1], shape[2]);
  }

  function loadFrame() {
    state.frame = model.get("frame");
    state.data = bytesOf(model.get("frame_data"));
    const f = state.frame;
    if (!f || !f.map) return;
    const key = `${f.map.key}`;
    if (key !== state.mapKey) {
      state.mapBitmap = bitmap(bytesOf(model.get("map_image")), f.map.h, f.map.w, 3);
      state.mapKey = key;
    }
    const answered = state.inflight.filter((r) => r.seq <= f.seq);
    if (answered.length) {
      state.inflight = state.inflight.filter((r) => r.seq > f.seq);
      const r = answered[answered.length - 1];  // the newest answered; older ones were superseded
      const tFrame = performance.now();
      if (state.pending !== null) {
        const p = state.pending;
        state.pending = null;
        send(p.box, p.dragging, p.t0);
      }
      // Measured after this frame is painted (below).
      requestAnimationFrame(() => {
        const now = performance.now();
        state.latencies.push(now - r.t0);
        state.trips.push({ seq: r.seq, sent: performance.timeOrigin + r.sent, arrived: performance.timeOrigin + tFrame,
          queued: r.sent - r.t0, trip: tFrame - r.sent, draw: state.drawMs, paint: now - tFrame });
      });
    }
    if (!state.drag) state.localBox = null;
    const d0 = performance.now();
    draw();
    state.drawMs = performance.now() - d0;
  }

  // ------------------------------------------------------------------ sending the box
  function send(box, dragging, t0) {
    if (state.inflight.length >= MAX_IN_FLIGHT) {
      state.pending = { box, dragging, t0 };  // latest wins
      settledFlag();
      return;
    }
    state.seq += 1;
    const now = performance.now();
    state.inflight.push({ seq: state.seq, t0: t0 === undefined ? now : t0, sent: now });
    model.send({ type: "box", box, dragging, seq: state.seq });
    const seq = state.seq;
    for (const ms of NUDGE_MS) {
      setTimeout(() => {
        if (state.inflight.some((r) => r.seq === seq)) model.send({ type: "nudge" });
      }, ms);
    }
    settledFlag();
  }

  // ------------------------------------------------------------------ drawing
  function activeBox() {
    const f = state.frame;
    if (state.localBox) return state.localBox;
    return f ? f.boxes[f.active] : null;
  }

  function drawPicture() {
    const f = state.frame;
    if (!f) return;
    const [ih, iw] = f.image_size;
    const s = S();
    const W = Math.round(iw * s), H = Math.round(ih * s);
    const ctx = sizeCanvas(picture, W, H);
    ctx.clearRect(0, 0, W, H);
    if (state.pictureBitmap) ctx.drawImage(state.pictureBitmap, 0, 0, W, H);
    // Inactive ROIs: dashed, thinner, in their own colours.
    f.boxes.forEach((b, i) => {
      if (i === f.active) return;
      ctx.save();
      ctx.setLineDash([5, 4]);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = OTHERS[i % OTHERS.length];
      ctx.globalAlpha = 0.85;
      ctx.strokeRect(b[0] * s, b[1] * s, (b[2] - b[0]) * s, (b[3] - b[1]) * s);
      ctx.fillStyle = OTHERS[i % OTHERS.length];
      ctx.font = "11px sans-serif";
      ctx.fillText(`ROI ${i + 1}`, b[0] * s + 3, b[1] * s + 12);
      ctx.restore();
    });
    const b = activeBox();
    if (!b) return;
    // The active ROI: a solid 2-px outline centred on the box edge (edges snapped to whole
    // screen pixels, so the drawn edge is within half a pixel of the model's), a dark halo on
    // both sides for contrast on any picture, and eight handles.
    const L = Math.round(b[0] * s), T = Math.round(b[1] * s), R = Math.round(b[2] * s), B = Math.round(b[3] * s);
    ctx.fillStyle = "rgba(0, 0, 0, 0.75)";
    ctx.fillRect(L - 2, T - 2, R - L + 4, 1);
    ctx.fillRect(L - 2, B + 1, R - L + 4, 1);
    ctx.fillRect(L - 2, T - 2, 1, B - T + 4);
    ctx.fillRect(R + 1, T - 2, 1, B - T + 4);
    ctx.fillRect(L + 1, T + 1, R - L - 2, 1);
    ctx.fillRect(L + 1, B - 2, R - L - 2, 1);
    ctx.fillRect(L + 1, T + 1, 1, B - T - 2);
    ctx.fillRect(R - 2, T + 1, 1, B - T - 2);
    ctx.fillStyle = ACTIVE;
    ctx.fillRect(L - 1, T - 1, R - L + 2, 2);
    ctx.fillRect(L - 1, B - 1, R - L + 2, 2);
    ctx.fillRect(L - 1, T - 1, 2, B - T + 2);
    ctx.fillRect(R - 1, T - 1, 2, B - T + 2);
    const hs = HANDLE, xs = [L, (L + R) / 2, R], ys = [T, (T + B) / 2, B];
    for (const y of ys) for (const x of xs) {
      if (x === xs[1] && y === ys[1]) continue;
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(Math.round(x - hs / 2), Math.round(y - hs / 2), hs, hs);
      ctx.strokeStyle = "#000000";
      ctx.lineWidth = 1;
      ctx.strokeRect(Math.round(x - hs / 2) + 0.5, Math.round(y - hs / 2) + 0.5, hs - 1, hs - 1);
    }
  }

  function mapView(f) {
    const [mx1, my1, mx2, my2] = f.map_box;
    const [c0, r0, c1, r1] = f.region;
    const pad = Math.max(1, 0.15 * Math.max(mx2 - mx1, my2 - my1));
    const lx = Math.min(mx1, c0) - pad, hx = Math.max(mx2, c1) + pad;
    const ly = Math.min(my1, r0) - pad, hy = Math.max(my2, r1) + pad;
    const side = Math.max(hx - lx, hy - ly);
    return { x0: (lx + hx) / 2 - side / 2, y0: (ly + hy) / 2 - side / 2, side };
  }

  function drawMap() {
    const f = state.frame;
    if (!f) return;
    const P = 200;
    const ctx = sizeCanvas(mapCanvas, P, P);
    ctx.fillStyle = "#1c1c1e";
    ctx.fillRect(0, 0, P, P);
    const v = mapView(f);
    const k = P / v.side;
    const X = (x) => (x - v.x0) * k, Y = (y) => (y - v.y0) * k;
    if (state.mapBitmap) ctx.drawImage(state.mapBitmap, X(0), Y(0), f.map.w * k, f.map.h * k);
    // ROI Pool's rounding: box cells dropped (red) and cells added (blue).
    const [bx0, by0, bx1, by1] = f.box_region;
    const [c0, r0, c1, r1] = f.region;
    const ya = Math.min(by0, r0), yb = Math.max(by1, r1), xa = Math.min(bx0, c0), xb = Math.max(bx1, c1);
    for (let r = ya; r < yb; r++) for (let c = xa; c < xb; c++) {
      const inBox = r >= by0 && r < by1 && c >= bx0 && c < bx1;
      const inCrop = r >= r0 && r < r1 && c >= c0 && c < c1;
      if (inBox === inCrop) continue;
      ctx.fillStyle = inBox ? LOST : GAINED;
      ctx.fillRect(X(c), Y(r), k, k);
    }
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 1.5;
    ctx.strokeRect(X(c0), Y(r0), (c1 - c0) * k, (r1 - r0) * k);
    const [mx1, my1, mx2, my2] = f.map_box;
    ctx.save();
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = ACTIVE;
    ctx.strokeRect(X(mx1), Y(my1), (mx2 - mx1) * k, (my2 - my1) * k);
    ctx.restore();
    // ROI Align's samples: dots no wider than a fifth of their spacing, so the map shows between.
    const sm = f.samples;
    let note = "";
    if (sm && sm.shown) {
      const xs = f32(state.data, sm.x_off, sm.nx), ys = f32(state.data, sm.y_off, sm.ny);
      const spacing = Math.min(minGap(xs), minGap(ys)) * k;
      const r = Math.max(0.6, Math.min(2.5, spacing / 5));
      ctx.fillStyle = spacing < 4 ? "rgba(255, 159, 10, 0.6)" : "#ff9f0a";
      for (const y of ys) for (const x of xs) {
        ctx.beginPath();
        ctx.arc(X(x), Y(y), r, 0, 2 * Math.PI);
        ctx.fill();
      }
      note = `ROI Align: ${sm.nx * sm.ny} samples, ${sm.grid[0]}x${sm.grid[1]} per bin` +
        (r < 2.5 ? `; dots shrunk to ${r.toFixed(1)} px so the map shows between them` : "");
    }
    drawHoverOnMap(ctx, f, X, Y, k);
    mapTitle.textContent = `map the strategies read: ${f.map.h}x${f.map.w} cells (zoomed)`;
    mapCaption.textContent = "white: whole cells ROI Pool keeps; red: box cells it drops; blue: cells it adds. " + note;
  }

  function minGap(a) {
    let g = Infinity;
    for (let i = 1; i < a.length; i++) if (a[i] - a[i - 1] > 1e-9) g = Math.min(g, a[i] - a[i - 1]);
    return g === Infinity ? 10 : g;
  }

  function drawHoverOnMap(ctx, f, X, Y, k) {
    const h = state.hover;
    if (!h) return;
    const p = f.panels.find((q) => q.name === h.name);
    if (!p || p.win_off < 0) return;
    const w = i16(state.data, p.win_off, 4 * f.output_size);
    const n = f.output_size;
    const r0 = w[h.i], r1 = w[n + h.i], c0 = w[2 * n + h.j], c1 = w[3 * n + h.j];
    ctx.save();
    if (r1 > r0 && c1 > c0) {
      ctx.fillStyle = "rgba(255, 255, 255, 0.35)";
      ctx.fillRect(X(c0), Y(r0), (c1 - c0) * k, (r1 - r0) * k);
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2;
      ctx.strokeRect(X(c0), Y(r0), (c1 - c0) * k, (r1 - r0) * k);
    }
    const sm = f.samples;
    if (p.name === "roi_align" && sm && sm.nx && sm.ny) {
      const xs = f32(state.data, sm.x_off, sm.nx), ys = f32(state.data, sm.y_off, sm.ny);
      const gx = sm.nx / n, gy = sm.ny / n;
      ctx.fillStyle = "#ff2d55";
      for (let a = 0; a < gy; a++) for (let b = 0; b < gx; b++) {
        ctx.beginPath();
        ctx.arc(X(xs[h.j * gx + b]), Y(ys[h.i * gy + a]), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.restore();
  }

  function drawPanels() {
    const f = state.frame;
    if (!f) return;
    const n = f.output_size;
    const cell = Math.max(4, Math.floor(140 / n));
    const names = f.panels.map((p) => p.name);
    // Rebuild the panel elements only when the shown strategies change.
    if (panels.dataset.names !== names.join(",")) {
      panels.innerHTML = "";
      state.panelCanvases = {};
      for (const p of f.panels) {
        const box = el("div", "roiviz-panel", panels);
        const t = el("div", "roiviz-title", box);
        t.textContent = p.name;
        const cv = el("canvas", "roiviz-panel-canvas", box);
        cv.dataset.strategy = p.name;
        cv.addEventListener("pointermove", (e) => onPanelHover(e, p.name));
        cv.addEventListener("pointerleave", () => { state.hover = null; hover.textContent = ""; drawMap(); });
        state.panelCanvases[p.name] = cv;
      }
      panels.dataset.names = names.join(",");
      if (!f.panels.length) el("div", "roiviz-caption", panels).textContent = "no strategy selected";
    }
    const lut = bytesOf(model.get("lut"));
    for (const p of f.panels) {
      const cv = state.panelCanvases[p.name];
      const ctx = sizeCanvas(cv, n * cell, n * cell);
      cv.dataset.cell = String(cell);
      cv.dataset.n = String(n);
      const c = state.data;
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
        let r, g, b;
        if (f.scale.kind === "rgb") {
          const o = p.colors_off + 3 * (i * n + j);
          r = c[o]; g = c[o + 1]; b = c[o + 2];
        } else {
          const idx = c[p.colors_off + i * n + j];
          r = lut[3 * idx]; g = lut[3 * idx + 1]; b = lut[3 * idx + 2];
        }
        ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
      if (state.hover && state.hover.name === p.name) {
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = 2;
        ctx.strokeRect(state.hover.j * cell + 1, state.hover.i * cell + 1, cell - 2, cell - 2);
      }
    }
  }

  // One column per level: its map with the box, and ROI Align's output from it; the chosen
  // level's column is marked. Colours are the kernel's (indices into `lut`, per level's scale).
  function drawFPN() {
    const f = state.frame;
    const g = f && f.fpn;
    fpn.style.display = g ? "" : "none";
    if (!g) return;
    const key = g.levels.map((l) => l.level).join(",");
    if (fpn.dataset.levels !== key) {
      fpn.innerHTML = "";
      state.fpnEls = {};
      el("div", "roiviz-title", fpn).textContent = "FPN: the level this box is pooled from";
      state.fpnLabel = el("div", "roiviz-fpn-level", fpn);
      state.fpnBounds = el("div", "roiviz-fpn-boundaries", fpn);
      const row = el("div", "roiviz-fpn-row", fpn);
      const maps = bytesOf(model.get("fpn_maps"));
      for (const l of g.levels) {
        const col = el("div", "roiviz-fpn-col", row);
        col.dataset.level = String(l.level);
        const title = el("div", "roiviz-title", col);
        const map = el("canvas", "roiviz-fpn-map", col);
        const panel = el("canvas", "roiviz-fpn-panel", col);
        panel.dataset.level = String(l.level);
        const bmp = bitmap(maps.subarray(l.map_off, l.map_off + l.h * l.w * 3), l.h, l.w, 3);
        state.fpnEls[l.level] = { col, title, map, panel, bmp };
      }
      el("div", "roiviz-caption", fpn).textContent =
        "each column: a level's feature map (mean of its channels, coloured from its own min to " +
        "max) with the box, and roi_align's output from that map on the same colours; the FPN " +
        "rule pools the box from one level, chosen by its size.";
      fpn.dataset.levels = key;
    }
    state.fpnLabel.textContent = g.label;
    state.fpnBounds.innerHTML = "";
    g.boundaries.forEach((b, i) => {
      if (i) state.fpnBounds.appendChild(document.createTextNode(" · "));
      const span = el("span", b.level === g.level ? "roiviz-fpn-bound roiviz-fpn-chosen" : "roiviz-fpn-bound", state.fpnBounds);
      span.textContent = b.text;
    });
    const n = f.output_size, cell = Math.max(4, Math.floor(96 / n)), lut = bytesOf(model.get("lut"));
    const c = state.data;
    for (const l of g.levels) {
      const e = state.fpnEls[l.level];
      const chosen = l.level === g.level;
      e.col.classList.toggle("roiviz-fpn-chosen", chosen);
      e.title.textContent = `P${l.level} · stride ${l.stride} · ${l.h}x${l.w}` + (chosen ? " ← chosen" : "");
      const M = 96, k = M / Math.max(l.h, l.w);
      const mctx = sizeCanvas(e.map, M, M);
      mctx.fillStyle = "#1c1c1e";
      mctx.fillRect(0, 0, M, M);
      mctx.drawImage(e.bmp, 0, 0, l.w * k, l.h * k);
      const [x1, y1, x2, y2] = l.map_box;
      mctx.strokeStyle = ACTIVE;
      mctx.lineWidth = 2;
      mctx.strokeRect(x1 * k, y1 * k, (x2 - x1) * k, (y2 - y1) * k);
      const ctx = sizeCanvas(e.panel, n * cell, n * cell);
      e.panel.dataset.n = String(n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
        const idx = c[l.colors_off + i * n + j];
        ctx.fillStyle = `rgb(${lut[3 * idx]}, ${lut[3 * idx + 1]}, ${lut[3 * idx + 2]})`;
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
    }
  }

  function drawColorbar() {
    const f = state.frame;
    if (!f) return;
    const ctx = sizeCanvas(barCanvas, 160, 12);
    if (f.scale.kind === "rgb") {
      const g = ctx.createLinearGradient(0, 0, 160, 0);
      g.addColorStop(0, "#000");
      g.addColorStop(1, "#fff");
      ctx.fillStyle = g;
      ctx.fillRect(0, 0, 160, 12);
      barText.textContent = `RGB, each channel ${fmt(f.scale.lo)} .. ${fmt(f.scale.hi)}: one scale for the map and every panel`;
      return;
    }
    const lut = bytesOf(model.get("lut"));
    for (let x = 0; x < 160; x++) {
      const idx = Math.min(255, Math.floor((x / 160) * 256));
      ctx.fillStyle = `rgb(${lut[3 * idx]}, ${lut[3 * idx + 1]}, ${lut[3 * idx + 2]})`;
      ctx.fillRect(x, 0, 1, 12);
    }
    barText.textContent = `${fmt(f.scale.lo)} .. ${fmt(f.scale.hi)}: one scale for the map and every panel. ` + f.scale.note;
  }

  function fmt(v) {
    return Math.abs(v) >= 100 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(3);
  }

  function onPanelHover(e, name) {
    const f = state.frame;
    if (!f) return;
    const n = f.output_size;
    const rect = e.target.getBoundingClientRect();
    const j = Math.min(n - 1, Math.max(0, Math.floor(((e.clientX - rect.left) / rect.width) * n)));
    const i = Math.min(n - 1, Math.max(0, Math.floor(((e.clientY - rect.top) / rect.height) * n)));
    if (state.hover && state.hover.name === name && state.hover.i === i && state.hover.j === j) return;
    state.hover = { name, i, j };
    const p = f.panels.find((q) => q.name === name);
    if (p.win_off < 0) {  // a frame sent during a drag: no read windows
      hover.textContent = `${name}[${i}, ${j}]: release the box to see which cells it reads`;
      return;
    }
    const w = i16(state.data, p.win_off, 4 * n);
    let value = "";
    if (p.values_off >= 0) value = ` = ${f32(state.data, p.values_off + 4 * (i * n + j), 1)[0].toPrecision(4)}`;
    else {
      const o = p.colors_off + 3 * (i * n + j);
      value = ` = RGB bytes (${state.data[o]}, ${state.data[o + 1]}, ${state.data[o + 2]})`;
    }
    const reads = w[n + i] > w[i] && w[3 * n + j] > w[2 * n + j]
      ? `reads map rows ${w[i]}..${w[n + i] - 1}, columns ${w[2 * n + j]}..${w[3 * n + j] - 1}`
      : "reads no cell (zero fill)";
    hover.textContent = `${name}[${i}, ${j}]${value}: ${reads} (highlighted on the map)`;
    drawPanels();
    drawMap();
  }

  function draw() {
    const f = state.frame;
    if (!f) return;
    status.textContent = f.status;
    status.classList.toggle("roiviz-has-error", !!f.error);
    metrics.innerHTML = f.metrics;
    drawPicture();
    drawMap();
    drawPanels();
    drawColorbar();
    drawFPN();
    settledFlag();
  }

  // ------------------------------------------------------------------ the pointer on the picture
  function where(e) {
    const r = picture.getBoundingClientRect();
    const s = S();
    return { x: (e.clientX - r.left) / s, y: (e.clientY - r.top) / s, px: e.clientX - r.left, py: e.clientY - r.top };
  }

  function grab(p, b) {
    const s = S();
    const near = (a, v) => Math.abs(a - v * s) <= GRAB;
    const inside = p.px >= b[0] * s - GRAB && p.px <= b[2] * s + GRAB && p.py >= b[1] * s - GRAB && p.py <= b[3] * s + GRAB;
    if (!inside) return null;
    const l = near(p.px, b[0]), r = near(p.px, b[2]), t = near(p.py, b[1]), bt = near(p.py, b[3]);
    if (l || r || t || bt) return { l, r, t, b: bt };
    if (p.px > b[0] * s && p.px < b[2] * s && p.py > b[1] * s && p.py < b[3] * s) return { move: true };
    return null;
  }

  function cursorFor(g) {
    if (!g) return "crosshair";
    if (g.move) return "move";
    if ((g.l && g.t) || (g.r && g.b)) return "nwse-resize";
    if ((g.r && g.t) || (g.l && g.b)) return "nesw-resize";
    return g.l || g.r ? "ew-resize" : "ns-resize";
  }

  picture.addEventListener("pointerdown", (e) => {
    const f = state.frame;
    if (!f || e.button !== 0) return;
    const p = where(e);
    const b = f.boxes[f.active];
    let g = grab(p, b);
    if (!g) {
      // Inside another ROI: make it the active one.
      const other = f.boxes.findIndex((q, i) => i !== f.active && p.x > q[0] && p.x < q[2] && p.y > q[1] && p.y < q[3]);
      if (other >= 0) {
        model.send({ type: "active", index: other });
        return;
      }
      g = { fresh: true };
    }
    picture.setPointerCapture(e.pointerId);
    state.drag = { g, start: p, box: b.slice() };
    e.preventDefault();
    settledFlag();
  });

  picture.addEventListener("pointermove", (e) => {
    const f = state.frame;
    if (!f) return;
    const p = where(e);
    if (!state.drag) {
      picture.style.cursor = cursorFor(grab(p, f.boxes[f.active]));
      return;
    }
    const t0 = e.timeStamp || performance.now();  // when the input event happened
    const { g, start, box } = state.drag;
    const [ih, iw] = f.image_size;
    const dx = p.x - start.x, dy = p.y - start.y;
    let nb = box.slice();
    if (g.move) {
      const w = box[2] - box[0], h = box[3] - box[1];
      const x1 = Math.min(Math.max(box[0] + dx, 0), iw - w), y1 = Math.min(Math.max(box[1] + dy, 0), ih - h);
      nb = [x1, y1, x1 + w, y1 + h];
    } else if (g.fresh) {
      nb = [Math.min(start.x, p.x), Math.min(start.y, p.y), Math.max(start.x, p.x), Math.max(start.y, p.y)];
    } else {
      if (g.l) nb[0] = box[0] + dx;
      if (g.r) nb[2] = box[2] + dx;
      if (g.t) nb[1] = box[1] + dy;
      if (g.b) nb[3] = box[3] + dy;
    }
    nb = nb.map((v, i) => Math.min(Math.max(v, 0), i % 2 ? ih : iw));
    state.localBox = nb;
    drawPicture();  // the box follows the pointer in this frame
    if (nb[2] - nb[0] > 0 && nb[3] - nb[1] > 0) send(nb, true, t0);
  });

  function release(e) {
    if (!state.drag) return;
    state.releasedAt = e.timeStamp || performance.now();
    const b = state.localBox;
    state.drag = null;
    if (picture.hasPointerCapture && picture.hasPointerCapture(e.pointerId)) picture.releasePointerCapture(e.pointerId);
    if (b) send(b, false);  // the kernel validates it (clamp, widen) and adds the metrics
    else {
      state.localBox = null;
      settledFlag();
    }
  }
  picture.addEventListener("pointerup", release);
  picture.addEventListener("pointercancel", release);

  model.on("change:picture", () => { loadPicture(); draw(); });
  // One message sets `frame` and `frame_data` together: load them once.
  let queued = false;
  const onFrame = () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => { queued = false; loadFrame(); });
  };
  model.on("change:frame", onFrame);
  model.on("change:frame_data", onFrame);
  model.on("change:scale", draw);
  loadPicture();
  loadFrame();
  return () => {
    model.off("change:picture");
    model.off("change:frame");
    model.off("change:frame_data");
    model.off("change:scale");
  };
}

export default { render };
