// The beampipe viewer page: pipeline graph, live plots of the selected node, stream list.
// Talks to the server over /ws (protocol: docs/viewer.md); every message is acknowledged
// after it has been handled, and the server sends the next one only then.
import { openEntry, openFile, refreshFile } from "./files.js";

const state = {
  graph: null,
  status: null,
  selected: null,
  keys: {},        // port -> data item chosen
  log: {},         // port -> log colour scale for images
  payloads: {},    // port -> last plot payload
  updates: 0,
  plotsReceived: 0,
  socket: null,
};
window.beampipe = state; // for the curious (and the tests): the page's data

const NODE_W = 240, NODE_H = 100, COL_GAP = 100, ROW_GAP = 26, PAD = 16, DETOUR = 44;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

function svg(tag, attrs = {}, text = null) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

// -- formatting ---------------------------------------------------------------------------

function rate(x) {
  if (x >= 1000) return `${(x / 1000).toFixed(1)}k`;
  return x >= 10 ? x.toFixed(0) : x.toFixed(1);
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)}µs`;
  if (s < 1) return `${(s * 1e3).toFixed(1)}ms`;
  return `${s.toFixed(2)}s`;
}

// -- websocket ----------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.socket = ws;
  setBadge("connection", "connecting", "connecting");
  ws.onopen = () => {
    setBadge("connection", "connected", "live");
    if (state.selected) select(state.selected);
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    try {
      handle(msg);
    } finally {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ack", seq: msg.seq }));
    }
  };
  ws.onclose = () => {
    setBadge("connection", "disconnected", "disconnected");
    setTimeout(connect, 2000);
  };
}

function send(msg) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(msg));
}

function handle(msg) {
  if (msg.type === "hello") {
    state.graph = msg.pipeline;
    document.getElementById("pipeline-name").textContent = msg.pipeline.name;
    document.title = `beampipe: ${msg.pipeline.name}`;
    drawGraph(msg.pipeline);
    return;
  }
  if (msg.type !== "update") return;
  state.updates += 1;
  state.status = msg;
  showRun(msg.run);
  showNodes(msg.nodes);
  showStreams(msg.streams);
  if (msg.plots && msg.node === state.selected) {
    state.plotsReceived += 1;
    for (const [port, payload] of Object.entries(msg.plots)) showPlot(port, payload);
  }
}

function setBadge(id, key, text) {
  const b = document.getElementById(id);
  b.dataset.state = key;
  b.textContent = text;
}

// -- run and graph ------------------------------------------------------------------------

function showRun(run) {
  setBadge("run-state", run.state, run.state);
  document.getElementById("elapsed").textContent = `${run.elapsed.toFixed(0)} s`;
  const list = document.getElementById("errors");
  list.replaceChildren(
    ...run.errors.map((e) => el("li", { class: "error" }, e)),
    ...(run.notices || []).map((n) => el("li", { class: "notice" }, n)),
  );
}

function layout(graph) {
  // Columns by the longest path from a source, rows in file order.
  const depth = Object.fromEntries(graph.nodes.map((n) => [n.name, 0]));
  for (let i = 0; i < graph.nodes.length; i++) {
    for (const c of graph.connections) depth[c.target] = Math.max(depth[c.target], depth[c.source] + 1);
  }
  const rows = {};
  const pos = {};
  for (const n of graph.nodes) {
    const col = depth[n.name];
    rows[col] = (rows[col] || 0) + 1;
    pos[n.name] = { x: PAD + col * (NODE_W + COL_GAP), y: PAD + (rows[col] - 1) * (NODE_H + ROW_GAP) };
  }
  const cols = Math.max(...Object.values(depth)) + 1;
  const nrows = Math.max(...Object.values(rows));
  const bottom = PAD + nrows * NODE_H + (nrows - 1) * ROW_GAP;
  // Connections that skip a column go around underneath the nodes.
  const detour = graph.connections.some((c) => depth[c.target] - depth[c.source] > 1);
  return {
    pos,
    depth,
    bottom,
    width: 2 * PAD + cols * NODE_W + (cols - 1) * COL_GAP,
    height: bottom + PAD + (detour ? DETOUR : 0),
  };
}

function drawGraph(graph) {
  const g = document.getElementById("graph");
  const { pos, depth, bottom, width, height } = layout(graph);
  g.setAttribute("viewBox", `0 0 ${width} ${height}`);
  g.style.width = `${width}px`; // shrinks to the window's width (CSS max-width), never grows

  g.replaceChildren();
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  defs.append(marker);
  g.append(defs);
  const fanOut = {};
  for (const c of graph.connections) {
    const a = pos[c.source], b = pos[c.target];
    const k = (fanOut[c.source] = (fanOut[c.source] || 0) + 1) - 1;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2 + k * 10, x2 = b.x, y2 = b.y + NODE_H / 2;
    const label = `${c.source_port} → ${c.target_port}${c.routing === "round_robin" ? "" : ` (${c.routing})`}`;
    let d, lx, ly;
    if (depth[c.target] - depth[c.source] > 1) {
      const yb = bottom + DETOUR * 0.7;
      d = `M${x1},${y1} C${x1 + COL_GAP / 2},${y1} ${x1 + COL_GAP / 2},${yb} ${x1 + COL_GAP},${yb} ` +
        `L${x2 - COL_GAP},${yb} C${x2 - COL_GAP / 2},${yb} ${x2 - COL_GAP / 2},${y2} ${x2},${y2}`;
      lx = (x1 + x2) / 2; ly = yb - 4;
    } else {
      const mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
      lx = mx; ly = Math.min(y1, y2) - 6;
    }
    g.append(svg("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
    g.append(svg("text", { x: lx, y: ly, class: "edge-label", "text-anchor": "middle" }, label));
  }
  for (const n of graph.nodes) {
    const { x, y } = pos[n.name];
    const node = svg("g", { class: "node", "data-node": n.name, "data-kind": n.kind, "data-state": "starting", transform: `translate(${x},${y})`, tabindex: 0 });
    node.append(svg("rect", { width: NODE_W, height: NODE_H, rx: 8, class: "box" }));
    node.append(svg("text", { x: 10, y: 20, class: "name" }, n.name + (n.replicas > 1 ? ` ×${n.replicas}` : "")));
    node.append(svg("text", { x: NODE_W - 10, y: 20, class: "state", "text-anchor": "end" }, "starting"));
    node.append(svg("text", { x: 10, y: 38, class: "use" }, n.use));
    node.append(svg("text", { x: 10, y: 56, class: "line rates" }, "- msg/s · - MB/s"));
    node.append(svg("text", { x: 10, y: 73, class: "line flight" }, "in flight - · latency -"));
    node.append(svg("text", { x: 10, y: 90, class: "line errors" }, "errors 0 · restarts 0"));
    node.append(svg("title", {}, n.name));
    node.addEventListener("click", () => select(n.name));
    node.addEventListener("keydown", (e) => { if (e.key === "Enter") select(n.name); });
    g.append(node);
  }
}

function showNodes(nodes) {
  for (const [name, s] of Object.entries(nodes)) {
    const node = document.querySelector(`#graph g.node[data-node="${CSS.escape(name)}"]`);
    if (!node) continue;
    node.dataset.state = s.state;
    node.dataset.rate = s.rate;
    node.dataset.mbRate = s.mb_rate;
    node.dataset.errors = s.errors;
    node.dataset.warnings = s.warnings;
    node.dataset.messages = s.messages;
    node.classList.toggle("has-errors", s.errors > 0 || s.state === "failed");
    node.querySelector(".state").textContent = s.state;
    node.querySelector(".rates").textContent = `${rate(s.rate)} msg/s · ${s.mb_rate.toFixed(2)} MB/s`;
    node.querySelector(".flight").textContent =
      `in flight ${s.in_flight + s.held} · latency ${duration(s.latency_p50)}/${duration(s.latency_p99)}`;
    const warned = s.warnings;
    node.querySelector(".errors").textContent =
      `errors ${s.errors}` + (warned ? ` · warnings ${warned}` : "") + ` · restarts ${s.restarts}`;
    node.querySelector("title").textContent =
      `${name}: ${s.messages} messages (in ${s.messages_in}, out ${s.messages_out}), latency p50/p99 ` +
      `${duration(s.latency_p50)}/${duration(s.latency_p99)}, ` +
      `process p50/p99 ${duration(s.process_p50)}/${duration(s.process_p99)}, ` +
      `skipped ${s.skipped}, corrupt frames ${s.corrupt_frames}, retries ${s.retries}, ` +
      `warnings ${s.warnings}, dropped ${s.dropped}, non-finite values ${s.nonfinite}, pids ${s.pids.join(" ")}` +
      Object.entries(s.info || {}).map(([key, value]) => `\n${key}: ${value}`).join("");
  }
}

// -- plots --------------------------------------------------------------------------------

function select(name) {
  state.selected = name;
  document.querySelectorAll("#graph g.node").forEach((n) => n.classList.toggle("selected", n.dataset.node === name));
  document.getElementById("selected-node").textContent = name;
  const node = state.graph.nodes.find((n) => n.name === name);
  const plots = document.getElementById("plots");
  plots.replaceChildren();
  state.payloads = {};
  if (!node.outputs.length) {
    plots.append(el("p", { class: "hint" }, node.file
      ? `${name} has no output port; it writes ${node.file} (see Files).`
      : `${name} has no output port.`));
    if (node.file) openFile(name, "/");
  }
  for (const port of node.outputs) {
    const card = el("div", { class: "plot-card", "data-port": port });
    const head = el("div", { class: "plot-head" });
    head.append(el("b", {}, port));
    const label = el("label", {}, "item ");
    const choose = el("select", { class: "key", "data-port": port });
    choose.addEventListener("change", () => {
      state.keys[port] = choose.value;
      send({ type: "select", node: name, keys: state.keys });
    });
    label.append(choose);
    head.append(label);
    const logLabel = el("label", { class: "log" });
    const log = el("input", { type: "checkbox", "data-port": port });
    log.checked = !!state.log[port];
    log.addEventListener("change", () => {
      state.log[port] = log.checked;
      if (state.payloads[port]) showPlot(port, state.payloads[port]);
    });
    logLabel.append(log, " log colour scale");
    head.append(logLabel);
    head.append(el("span", { class: "info" }));
    card.append(head, el("div", { class: "plot", id: `plot-${port}` }));
    plots.append(card);
  }
  send({ type: "select", node: name, keys: state.keys });
}

function showPlot(port, p) {
  state.payloads[port] = p;
  const card = document.querySelector(`.plot-card[data-port="${CSS.escape(port)}"]`);
  if (!card) return;
  const choose = card.querySelector("select.key");
  const keys = Object.keys(p.keys);
  if (choose.options.length !== keys.length) {
    choose.replaceChildren(...keys.map((k) => el("option", { value: k }, `${k} (${p.keys[k]})`)));
  }
  if (p.key) choose.value = p.key;
  card.dataset.kind = p.kind || "";
  card.querySelector("label.log").style.display = p.kind === "images" ? "" : "none";
  const div = card.querySelector(".plot");
  const info = card.querySelector(".info");
  info.textContent = `${p.messages} messages seen`;
  const config = { responsive: true, displaylogo: false };
  if (p.kind === "images") {
    if (!p.image) return;
    const im = p.image;
    info.textContent = `${im.stream} #${im.id}: ${im.shape[0]}×${im.shape[1]} px` +
      (im.binning > 1 ? `, shown binned ${im.binning}×${im.binning}` : "");
    Plotly.react(div, [heatmap(im, !!state.log[port])], {
      margin: { t: 10, r: 10, b: 30, l: 40 },
      yaxis: { autorange: "reversed", scaleanchor: "x", constrain: "domain" },
      xaxis: { constrain: "domain" },
    }, config);
    return;
  }
  if (p.kind !== "points" && p.kind !== "curves") {
    Plotly.purge(div);
    info.textContent = p.messages ? `${p.messages} messages seen, nothing to plot in them` : "nothing seen yet";
    return;
  }
  const time = p.axis === "time";
  const traces = p.traces.map((t) => ({
    type: "scatter",
    mode: "lines",
    name: t.stream,
    x: t.x,
    y: t.y,
    line: { width: t.finished ? 1.5 : 2.5 },
  }));
  Plotly.react(div, traces, {
    margin: { t: 10, r: 10, b: 40, l: 60 },
    xaxis: { title: { text: time ? "time" : p.axis || "index" }, type: time ? "date" : "-" },
    yaxis: { title: { text: p.key } },
    legend: { orientation: "h", y: -0.25 },
    uirevision: `${state.selected}/${port}/${p.key}`,
  }, config);
}

function heatmap(im, log) {
  const bytes = Uint8Array.from(atob(im.z), (c) => c.charCodeAt(0));
  const values = new Float32Array(bytes.buffer);
  const z = [];
  for (let r = 0; r < im.rows; r++) {
    const row = Array.from(values.subarray(r * im.columns, (r + 1) * im.columns));
    z.push(log ? row.map((v) => (v > 0 ? Math.log10(v) : null)) : row);
  }
  return {
    type: "heatmap",
    z,
    colorscale: "Viridis",
    colorbar: { title: { text: log ? `log10 ${im.name}` : im.name } },
  };
}

// -- streams ------------------------------------------------------------------------------

let entriesShown = -1;

function showStreams(streams) {
  const entries = streams.reduce((n, s) => n + s.files.length, 0);
  if (entries !== entriesShown) {
    entriesShown = entries;
    refreshFile(); // new entries in the files: show them
  }
  const body = document.querySelector("#streams tbody");
  body.replaceChildren(...streams.slice().reverse().map((s) => {
    const tr = el("tr", { "data-stream": s.name, "data-state": s.state });
    tr.append(el("td", { class: "name" }, s.name));
    tr.append(el("td", { class: "state" }, s.state));
    const counts = Object.entries(s.nodes).map(([n, c]) => `${n}: ${c}`).join(", ");
    tr.append(el("td", { class: "messages", title: counts }, String(s.messages)));
    const files = el("td", { class: "files" });
    for (const f of s.files) {
      const a = el("a", { href: `#file=${encodeURIComponent(f.node)}&path=${encodeURIComponent(f.entry)}`, "data-node": f.node, "data-entry": f.entry }, f.entry.replace(/^\//, ""));
      a.addEventListener("click", (e) => { e.preventDefault(); openEntry(f.node, f.entry); });
      files.append(a);
    }
    tr.append(files);
    return tr;
  }));
}

connect();
