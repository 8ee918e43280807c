// The live plot of one output port, drawn from the server's plot payload (docs/viewer.md,
// "plot"): a heat map of an image or of one slice of a stack (element maps, chosen by name)
// or of a stream's waterfall (a row per message), or curves per stream (0-d items as a time series or against an axis, 1-D items against
// their axis), with uncertainty bands, units in the axis titles and a log scale on demand.

const CONFIG = { responsive: true, displaylogo: false };
const NOT_MEASURED = "#c8ccd2"; // the plot's background, seen through NaN pixels
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"]; // Plotly's own, so a band has its line's colour

function rgba(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

// "q (nm^-1)" for an item with a unit, else its name.
function title(name, units) {
  if (!name) return "";
  return units && units[name] ? `${name} (${units[name]})` : name;
}

function format(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "NaN";
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

function decode(im) {
  const bytes = Uint8Array.from(atob(im.z), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// The heat map trace: rows of the chosen slice, NaN (not measured) as null (not drawn), on
// the axes' coordinates when the payload has them; log10 of positive values with `log`.
export function heatmap(im, log) {
  const values = decode(im);
  const z = [];
  for (let r = 0; r < im.rows; r++) {
    const row = Array.from(values.subarray(r * im.columns, (r + 1) * im.columns));
    z.push(row.map((v) => (!Number.isFinite(v) ? null : log ? (v > 0 ? Math.log10(v) : null) : v)));
  }
  const name = im.label ? `${im.name} ${im.label}` : im.name;
  const trace = {
    type: "heatmap",
    z,
    colorscale: "Viridis",
    hoverongaps: false,
    colorbar: { title: { text: log ? `log10 ${name}` : name } },
  };
  if (im.x) trace.x = im.x;
  if (im.y) trace.y = im.y;
  return trace;
}

function showImage(div, info, p, log) {
  const im = p.image;
  const stack = im.slices > 1 ? ` [${im.label}]${im.labels.length < im.slices ? `, first ${im.labels.length} of ${im.slices} kept` : ""}` : "";
  if (p.kind === "waterfall") {
    info.textContent = `${im.stream}: ${im.rows} of ${im.shape[0]} messages` +
      (im.stride > 1 ? ` (every ${im.stride}th)` : "") + ` × ${im.shape[1]} points` +
      (im.binning > 1 ? `, binned by ${im.binning}` : "");
  } else {
    info.textContent = `${im.stream} #${im.id}: ${im.shape.join("×")}${stack}` +
      (im.binning > 1 ? `, shown binned ${im.binning}×${im.binning}` : "") +
      (im.missing ? `, ${im.missing} px not measured (grey)` : "");
  }
  const axes = !!(im.x && im.y);
  const units = p.units || {};
  const same = !axes || units[im.x_axis] === units[im.y_axis];
  Plotly.react(div, [heatmap(im, log)], {
    margin: { t: 10, r: 10, b: axes ? 45 : 30, l: axes ? 60 : 40 },
    plot_bgcolor: NOT_MEASURED,
    // Detector images: row 0 at the top. Maps on motor axes: y upwards.
    yaxis: { autorange: axes ? true : "reversed", scaleanchor: same ? "x" : undefined, constrain: "domain",
      title: { text: title(im.y_axis, units) }, showgrid: false, zeroline: false },
    xaxis: { constrain: "domain", title: { text: title(im.x_axis, units) }, showgrid: false, zeroline: false },
    uirevision: `${im.name}/${im.shape.join("x")}`,
  }, CONFIG);
}

// One line per stream (the open one thicker), each with a band of ± sigma when sent.
function traces(p) {
  const out = [];
  p.traces.forEach((t, i) => {
    const colour = COLOURS[i % COLOURS.length];
    if (t.sigma) {
      const band = { type: "scatter", mode: "lines", line: { width: 0 }, hoverinfo: "skip",
        showlegend: false, legendgroup: t.stream, x: t.x };
      out.push({ ...band, name: `${t.stream} + sigma`, y: t.y.map((v, k) => v + t.sigma[k]) });
      out.push({ ...band, name: `${t.stream} - sigma`, y: t.y.map((v, k) => v - t.sigma[k]),
        fill: "tonexty", fillcolor: rgba(colour, 0.25) });
    }
    const markers = t.y.length <= 200;
    out.push({
      type: "scatter",
      mode: markers && p.kind === "points" ? "lines+markers" : "lines",
      name: t.stream,
      legendgroup: t.stream,
      x: t.x,
      y: t.y,
      line: { width: t.finished ? 1.5 : 2.5, color: colour },
      meta: { stream: t.stream, role: "data", index: i },
    });
  });
  return out;
}

// The latest value of a 0-d item (the newest stream's last point), e.g. the hit rate.
function latest(p) {
  const t = p.traces[p.traces.length - 1];
  if (!t || !t.y.length) return "";
  return `${p.key} = ${format(t.y[t.y.length - 1])} (${t.stream}, #${t.last_id})`;
}

// Draw payload `p` of a port into `div`; `info` and `value` are the card's text fields.
export function showPayload(div, info, value, p, log) {
  info.textContent = `${p.messages} messages seen`;
  value.textContent = "";
  if (p.kind === "images" || p.kind === "waterfall") {
    if (p.image) showImage(div, info, p, log);
    return;
  }
  if (p.kind !== "points" && p.kind !== "curves") {
    Plotly.purge(div);
    info.textContent = p.messages ? `${p.messages} messages seen, nothing to plot in them` : "nothing seen yet";
    return;
  }
  if (p.kind === "points") value.textContent = latest(p);
  const time = p.axis === "time";
  const units = p.units || {};
  Plotly.react(div, traces(p), {
    margin: { t: 10, r: 10, b: 40, l: 60 },
    xaxis: { title: { text: time ? "time" : title(p.axis, units) || "index" }, type: time ? "date" : "-" },
    yaxis: { title: { text: title(p.key, units) }, type: log ? "log" : "linear" },
    legend: { orientation: "h", y: -0.25 },
    uirevision: `${p.key}/${log}`,
  }, CONFIG);
}
