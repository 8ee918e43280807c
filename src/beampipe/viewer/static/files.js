// The file browser: the HDF5/NeXus files the sinks write, read through the viewer's h5grove
// endpoints (/api/files/{node}/meta|attr|data). Groups list their children; a dataset shows
// its value, curve or image; an NXdata group plots its signal against its axes.

const MAX_POINTS = 1 << 20; // values fetched at most for one plot (larger data is strided)

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

async function get(node, what, params) {
  const query = new URLSearchParams(params);
  const response = await fetch(`/api/files/${encodeURIComponent(node)}/${what}?${query}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function join(path, name) {
  return path === "/" ? `/${name}` : `${path}/${name}`;
}

function text(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

async function showFiles() {
  const list = document.getElementById("file-list");
  const files = await (await fetch("/api/files")).json();
  list.replaceChildren(...files.map((f) => {
    const b = el("button", { type: "button", "data-node": f.node, title: f.path }, `${f.node}: ${f.path.split("/").pop()}`);
    b.disabled = !f.exists;
    b.addEventListener("click", () => openFile(f.node, "/"));
    return b;
  }));
  if (!files.length) list.append(el("p", { class: "hint" }, "No sink of this pipeline writes a file."));
  return files;
}

export function openEntry(node, entry) {
  document.getElementById("files-section").scrollIntoView({ block: "nearest" });
  openFile(node, entry);
}

let shown = null; // {node, path} of the group on view
let opened = 0; // calls of openFile: an older one still waiting for the server gives up

// Show the group on view again (its children change as streams start).
export function refreshFile() {
  if (shown) openFile(shown.node, shown.path);
  else if (!opened) start();
}

export async function openFile(node, path) {
  history.replaceState(null, "", `#file=${encodeURIComponent(node)}&path=${encodeURIComponent(path)}`);
  const generation = ++opened;
  const view = document.getElementById("file-view");
  const children = document.getElementById("file-children");
  let meta, attrs, failure = null;
  try {
    meta = await get(node, "meta", { path });
    attrs = meta.attributes && meta.attributes.length ? await get(node, "attr", { path }) : {};
  } catch (err) {
    failure = err;
  }
  if (generation !== opened) return;
  view.replaceChildren();
  children.replaceChildren();
  breadcrumb(node, path);
  if (failure) {
    view.append(el("p", { class: "error" }, `${path}: ${failure.message}`));
    return;
  }
  view.dataset.path = path;
  view.dataset.kind = meta.kind;
  shown = meta.kind === "group" ? { node, path } : null;
  if (meta.kind === "group") {
    for (const c of meta.children || []) {
      const li = el("li", { "data-kind": c.kind });
      const a = el("a", { href: "#" }, c.name);
      a.addEventListener("click", (e) => { e.preventDefault(); openFile(node, join(path, c.name)); });
      li.append(a);
      if (c.kind === "dataset") li.append(el("span", { class: "shape" }, ` [${c.shape.join("×")}]`));
      children.append(li);
    }
  }
  showAttributes(view, attrs);
  try {
    if (meta.kind === "dataset") await showDataset(view, node, path, meta);
    else if (attrs.NX_class === "NXdata" && attrs.signal) await showNXdata(view, node, path, attrs);
  } catch (err) {
    view.append(el("p", { class: "error" }, err.message));
  }
}

function breadcrumb(node, path) {
  const nav = document.getElementById("file-path");
  nav.replaceChildren();
  const parts = path.split("/").filter((p) => p);
  const root = el("a", { href: "#" }, `${node}:/`);
  root.addEventListener("click", (e) => { e.preventDefault(); openFile(node, "/"); });
  nav.append(root);
  parts.forEach((p, i) => {
    const target = "/" + parts.slice(0, i + 1).join("/");
    const a = el("a", { href: "#" }, p);
    a.addEventListener("click", (e) => { e.preventDefault(); openFile(node, target); });
    nav.append(i ? " / " : "", a);
  });
}

function showAttributes(view, attrs) {
  const names = Object.keys(attrs);
  if (!names.length) return;
  const table = el("table", { class: "attributes" });
  for (const k of names) {
    const tr = el("tr");
    tr.append(el("th", {}, `@${k}`), el("td", {}, text(attrs[k])));
    table.append(tr);
  }
  view.append(table);
}

function stride(shape) {
  const n = shape.reduce((a, b) => a * b, 1);
  return Math.max(1, Math.ceil(Math.sqrt(n / MAX_POINTS)));
}

async function showDataset(view, node, path, meta) {
  const shape = meta.shape || [];
  view.append(el("p", { class: "dataset-info" }, `${meta.type.dtype || meta.type.class} [${shape.join("×") || "scalar"}]`));
  const numeric = ["Integer", "Float", "Boolean"].includes(meta.type.class);
  if (!shape.length || !numeric) {
    const value = await get(node, "data", { path });
    view.append(el("pre", { class: "value" }, text(value)));
    return;
  }
  const div = el("div", { class: "plot file-plot" });
  view.append(div);
  if (shape.length === 1) {
    const s = Math.max(1, Math.ceil(shape[0] / MAX_POINTS));
    const y = await get(node, "data", { path, selection: s > 1 ? `::${s}` : ":" });
    Plotly.react(div, [{ type: "scatter", mode: "lines", y, x: y.map((_, i) => i * s), name: path }],
      { margin: { t: 10, r: 10, b: 40, l: 60 }, xaxis: { title: { text: "index" } } }, { displaylogo: false });
    return;
  }
  const lead = shape.slice(0, -2).map(() => "0");
  const s = stride(shape.slice(-2));
  const selection = [...lead, `::${s}`, `::${s}`].join(",");
  const z = await get(node, "data", { path, selection });
  view.append(el("p", { class: "hint" }, `slice [${selection}]`));
  Plotly.react(div, [{ type: "heatmap", z, colorscale: "Viridis" }],
    { margin: { t: 10, r: 10, b: 30, l: 40 }, yaxis: { autorange: "reversed", scaleanchor: "x" } }, { displaylogo: false });
}

async function showNXdata(view, node, path, attrs) {
  const signalPath = join(path, attrs.signal);
  const meta = await get(node, "meta", { path: signalPath });
  const axes = [].concat(attrs.axes || []).filter((a) => a !== ".");
  const shape = meta.shape || [];
  view.append(el("p", { class: "dataset-info" }, `NXdata: ${attrs.signal}${axes.length ? ` vs ${axes[axes.length - 1]}` : ""} [${shape.join("×")}]`));
  if (shape.length !== 1) {
    await showDataset(view, node, signalPath, meta);
    return;
  }
  const div = el("div", { class: "plot file-plot", id: "nxdata-plot" });
  view.append(div);
  const y = await get(node, "data", { path: signalPath });
  const axis = axes.length ? axes[axes.length - 1] : null;
  const x = axis ? await get(node, "data", { path: join(path, axis) }) : y.map((_, i) => i);
  Plotly.react(div, [{ type: "scatter", mode: "lines", x, y, name: attrs.signal }], {
    margin: { t: 10, r: 10, b: 40, l: 60 },
    xaxis: { title: { text: axis || "index" } },
    yaxis: { title: { text: attrs.signal } },
  }, { displaylogo: false });
}

// Files appear when the first stream starts: look again until one exists, then open the one
// the address names (#file=NODE&path=/entry) or the first.
async function start() {
  const files = await showFiles();
  if (files.length && !files.some((f) => f.exists)) {
    setTimeout(start, 2000);
    return;
  }
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("file")) openFile(params.get("file"), params.get("path") || "/");
  else if (files.length) openFile(files.find((f) => f.exists).node, "/");
}

start();
