// The aml web view: a read-only page over the JSON API of `aml ui`.
// Everything a run wrote (names, values, log lines) is untrusted: it reaches
// the page only through textContent and setAttribute, never as HTML.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const ACTIVE = new Set(["NotStarted", "Queued", "Preparing", "Starting", "Running", "Finalizing", "CancelRequested"]);
const STATUSES = ["NotStarted", "Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed", "Failed", "CancelRequested", "Canceled"];

let timers = [];
let generation = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function every(ms, fn) { timers.push(setInterval(fn, ms)); }
function stopTimers() { timers.forEach(clearInterval); timers = []; }
function refreshed() { document.getElementById("refreshed").textContent = "refreshed " + new Date().toLocaleTimeString(); }

function ago(iso) {
  if (!iso) return "-";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 1) return "just now";
  return dur(s) + " ago";
}

function dur(s) {
  if (!s || s <= 0) return "-";
  if (s < 10) return s.toFixed(1) + "s";
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
}

function num(v, digits) {
  if (v === undefined || v === null) return "-";
  return Number.isInteger(v) ? String(v) : Number(v.toPrecision(digits || 6)).toString();
}

function status(s, reason) {
  return el("span", { class: "status st-" + s, "data-status": s }, s + (reason && s !== "Completed" ? " (" + reason + ")" : ""));
}

function runLink(id) { return el("a", { href: "#/run/" + encodeURIComponent(id), class: "run-link" }, id); }

function route() {
  stopTimers();
  generation++;
  const gen = generation;
  const main = document.getElementById("main");
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  main.replaceChildren();
  let page;
  if (parts[0] === "runs") page = runsPage(main, params, gen);
  else if (parts[0] === "run" && parts[1]) page = runPage(main, parts[1], gen);
  else page = homePage(main, gen);
  page.catch(err => main.append(el("p", { class: "error" }, String(err.message || err))));
}

async function header() {
  const ws = await api("/api/workspace");
  document.getElementById("ws-name").textContent = "workspace " + ws.name;
  document.title = "aml · " + ws.name;
  return ws;
}

// ---- compute targets and experiments ----

async function homePage(main, gen) {
  const ws = await header();
  main.append(el("h1", {}, "Workspace " + ws.name), el("p", { class: "muted" }, ws.id + " · " + ws.dir));
  const targets = el("div", { id: "targets" });
  const exps = el("div", { id: "experiments" });
  main.append(el("h2", {}, "Compute targets"), targets, el("h2", {}, "Experiments"), exps);
  const draw = async () => {
    const [ts, es] = await Promise.all([api("/api/targets"), api("/api/experiments")]);
    if (gen !== generation) return;
    targets.replaceChildren(targetTable(ts));
    exps.replaceChildren(experimentTable(es));
    refreshed();
  };
  await draw();
  every(3000, () => draw().catch(() => {}));
}

function targetTable(ts) {
  const t = el("table", { id: "targets-table" },
    el("tr", {}, ...["Name", "Kind", "State", "Idle", "Busy", "Starting", "Queued runs", "Facts"].map(h => el("th", {}, h))));
  for (const x of ts) {
    const n = x.nodes;
    const f = x.facts || {};
    const facts = [x.address, f.os && f.os + "/" + f.arch, f.cores && f.cores + " cores",
      f.memory_bytes && (f.memory_bytes / 2 ** 30).toFixed(1) + " GiB", f.gpus && f.gpus + " GPUs", f.python && "python " + f.python].filter(Boolean).join(", ");
    t.append(el("tr", { "data-target": x.name },
      el("td", {}, x.name), el("td", {}, x.kind), el("td", {}, x.provisioning_state),
      el("td", { class: "num nodes-idle" }, n ? n.idle : "-"), el("td", { class: "num nodes-busy" }, n ? n.busy : "-"),
      el("td", { class: "num nodes-starting" }, n ? n.starting : "-"), el("td", { class: "num" }, n ? n.queued_runs : "-"),
      el("td", {}, facts)));
  }
  return t;
}

function experimentTable(es) {
  if (!es.length) return el("p", { class: "muted" }, "No runs yet.");
  const t = el("table", { id: "experiments-table" }, el("tr", {}, ...["Experiment", "Runs", "Active", "Last run", "Metrics"].map(h => el("th", {}, h))));
  for (const e of es) {
    t.append(el("tr", {},
      el("td", {}, el("a", { href: "#/runs?experiment=" + encodeURIComponent(e.name) }, e.name)),
      el("td", { class: "num" }, e.runs), el("td", { class: "num" }, e.active), el("td", {}, ago(e.last)),
      el("td", {}, e.metrics.join(", "))));
  }
  return t;
}

// ---- runs table: sortable by any column or metric, filtered by status ----

async function runsPage(main, params, gen) {
  await header();
  const experiment = params.get("experiment") || "";
  let statusFilter = params.get("status") || "";
  let sortKey = params.get("sort") || "created_at";
  let sortDesc = params.get("dir") !== "asc";
  main.append(el("h1", {}, experiment ? "Runs of " + experiment : "All runs"));
  const select = el("select", { id: "status-filter" }, el("option", { value: "" }, "any status"), ...STATUSES.map(s => el("option", { value: s }, s)));
  select.value = statusFilter;
  select.addEventListener("change", () => { statusFilter = select.value; navigate(); });
  main.append(el("div", { class: "filters" }, el("label", {}, "Status ", select)));
  const holder = el("div", {});
  main.append(holder);

  function navigate() {
    const p = new URLSearchParams();
    if (experiment) p.set("experiment", experiment);
    if (statusFilter) p.set("status", statusFilter);
    p.set("sort", sortKey);
    p.set("dir", sortDesc ? "desc" : "asc");
    history.replaceState(null, "", "#/runs?" + p.toString());
    draw().catch(() => {});
  }
  let runs = [];
  const draw = async () => {
    const q = new URLSearchParams();
    if (experiment) q.set("experiment", experiment);
    if (statusFilter) q.set("status", statusFilter);
    runs = await api("/api/runs?" + q.toString());
    if (gen !== generation) return;
    holder.replaceChildren(runsTable(runs, sortKey, sortDesc, key => {
      if (key === sortKey) sortDesc = !sortDesc; else { sortKey = key; sortDesc = true; }
      navigate();
    }));
    refreshed();
  };
  await draw();
  every(3000, () => draw().catch(() => {}));
}

function sortValue(r, key) {
  if (key.startsWith("metric:")) return r.metrics[key.slice(7)];
  if (key === "created_at" || key === "start_time" || key === "end_time") return r[key] ? new Date(r[key]).getTime() : undefined;
  return r[key];
}

function runsTable(runs, sortKey, sortDesc, onSort) {
  if (!runs.length) return el("p", { class: "muted", id: "no-runs" }, "No runs match.");
  const metricNames = [...new Set(runs.flatMap(r => Object.keys(r.metrics)))].sort();
  const cols = [["run_id", "Run"], ["experiment", "Experiment"], ["compute_target", "Target"], ["status", "Status"],
    ["start_time", "Started"], ["duration_seconds", "Duration"], ...metricNames.map(m => ["metric:" + m, m])];
  const sorted = runs.slice().sort((a, b) => {
    const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
    if (x === undefined && y === undefined) return 0;
    if (x === undefined) return 1; // runs without the key sort last either way
    if (y === undefined) return -1;
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return sortDesc ? -c : c;
  });
  const head = el("tr", {}, ...cols.map(([key, label]) => el("th", {
    class: "sortable" + (key === sortKey ? (sortDesc ? " sorted-desc" : " sorted-asc") : ""),
    "data-sort": key, onclick: () => onSort(key),
  }, label)));
  const t = el("table", { id: "runs-table" }, head);
  for (const r of sorted) {
    t.append(el("tr", { "data-run": r.run_id },
      el("td", {}, runLink(r.run_id)), el("td", {}, r.experiment), el("td", {}, r.compute_target),
      el("td", {}, status(r.status, r.failure_reason)), el("td", {}, ago(r.start_time || r.created_at)),
      el("td", { class: "num" }, dur(r.duration_seconds)),
      ...metricNames.map(m => el("td", { class: "num metric", "data-metric": m }, num(r.metrics[m])))));
  }
  return t;
}

// ---- one run ----

async function runPage(main, runID, gen) {
  await header();
  const base = "/api/runs/" + encodeURIComponent(runID);
  let r = await api(base);
  const head = el("div", { id: "run-head" });
  const charts = el("div", { class: "charts", id: "charts" });
  const logPre = el("pre", { class: "log", id: "log" });
  const outputs = el("ul", { class: "files", id: "outputs" });
  main.append(head, el("h2", {}, "Metrics"), charts, el("h2", {}, "Log ", el("span", { class: "muted", id: "log-state" })), logPre,
    el("h2", {}, "Output files"), outputs, el("h2", {}, "Snapshot files"), el("ul", { class: "files", id: "snapshot" }));
  const drawHead = () => {
    head.replaceChildren(runHeader(r));
    outputs.replaceChildren(...(r.output_files.length ? r.output_files.map(f =>
      el("li", {}, el("a", { href: base + "/outputs/" + f.split("/").map(encodeURIComponent).join("/"), download: "" }, f)))
      : [el("li", { class: "muted" }, r.status === "Completed" || !ACTIVE.has(r.status) ? "none" : "once the run has ended")]));
    document.getElementById("snapshot").replaceChildren(...r.snapshot_files.map(f => el("li", {}, f.path + "  (" + f.size + " B)")));
  };
  drawHead();
  const drawCharts = async () => {
    const series = await api(base + "/metrics");
    if (gen !== generation) return;
    charts.replaceChildren(...metricCharts(series, r.run_id));
  };
  await drawCharts();

  // The log: read from offset 0, then follow while the run is active.
  let offset = 0, shown = 0;
  const MAX_SHOWN = 2 << 20;
  const pull = async () => {
    for (;;) {
      const chunk = await api(base + "/logs?offset=" + offset);
      if (gen !== generation) return false;
      if (chunk.text) {
        logPre.append(document.createTextNode(chunk.text));
        shown += chunk.text.length;
        while (shown > MAX_SHOWN && logPre.firstChild) { shown -= logPre.firstChild.textContent.length; logPre.firstChild.remove(); }
        logPre.scrollTop = logPre.scrollHeight;
      }
      offset = chunk.next;
      document.getElementById("log-state").textContent = chunk.active ? "(live)" : "";
      if (!chunk.text || chunk.text.length < (1 << 20) - 4096) return chunk.active;
    }
  };
  let live = await pull();
  refreshed();
  if (!live && !ACTIVE.has(r.status)) return;
  let busy = false;
  every(1000, async () => {
    if (busy) return;
    busy = true;
    try {
      live = await pull();
      r = await api(base);
      if (gen !== generation) return;
      drawHead();
      await drawCharts();
      refreshed();
      if (!live && !ACTIVE.has(r.status)) { await pull(); stopTimers(); }
    } catch (e) { /* the next tick tries again */ } finally { busy = false; }
  });
}

function runHeader(r) {
  const frag = el("div", {});
  frag.append(el("h1", {}, "Run ", el("span", { id: "run-id" }, r.run_id), " ", status(r.status, r.failure_reason)));
  const tl = el("div", { class: "timeline", id: "timeline" });
  for (const p of r.timeline) {
    tl.append(el("div", { class: "phase" + (p.at ? " done" : ""), "data-phase": p.phase }, p.phase, el("small", {}, p.at ? new Date(p.at).toLocaleString() : "…")));
  }
  frag.append(tl);
  const kv = el("dl", { class: "kv", id: "params" });
  const add = (k, v) => { if (v !== undefined && v !== null && v !== "") kv.append(el("dt", {}, k), el("dd", {}, v)); };
  add("experiment", r.experiment);
  add("compute target", r.compute_target);
  add("run configuration", r.run_configuration);
  add("script", r.command && r.command.length ? r.command.join(" ") : r.script);
  add("arguments", r.arguments.join(" "));
  add("exit code", r.exit_code);
  add("duration", dur(r.duration_seconds));
  add("environment hash", r.environment_hash);
  add("snapshot", r.snapshot_hash + " (" + r.snapshot_file_count + " files, " + r.snapshot_bytes + " bytes)");
  add("source directory", r.source_directory);
  for (const k of Object.keys(r.metrics || {}).sort()) add("metric " + k, num(r.metrics[k]));
  for (const [k, v] of Object.entries(r.params || {})) add("param " + k, v);
  for (const [k, v] of Object.entries(r.tags || {})) add("tag " + k, v);
  add("message", r.message);
  add("log", r.log_path);
  frag.append(kv);
  if (r.traceback) frag.append(el("h2", {}, "Traceback"), el("pre", { class: "log" }, r.traceback));
  return frag;
}

// metricCharts draws one line chart per metric the run logged more than
// once (by step; a value logged without a step is placed at its index), every
// run of the series overlaid. A metric logged once is a value, shown above.
function metricCharts(series, self) {
  const counts = {};
  for (const m of (series.find(s => s.run_id === self) || { metrics: [] }).metrics) counts[m.name] = (counts[m.name] || 0) + 1;
  const names = Object.keys(counts).filter(n => counts[n] > 1).sort();
  if (!names.length) return [el("p", { class: "muted", id: "no-metrics" }, "No metric series logged (yet).")];
  return names.map((name, idx) => {
    const W = 440, H = 220, L = 56, R = 10, T = 10, B = 28;
    const lines = series.map((s, i) => {
      let k = 0;
      const pts = s.metrics.filter(m => m.name === name).map(m => ({ x: m.step === null || m.step === undefined ? k++ : m.step, y: m.value }));
      pts.sort((a, b) => a.x - b.x);
      return { run: s.run_id, color: COLORS[i % COLORS.length], pts };
    }).filter(l => l.pts.length);
    const all = lines.flatMap(l => l.pts);
    let [x0, x1] = [Math.min(...all.map(p => p.x)), Math.max(...all.map(p => p.x))];
    let [y0, y1] = [Math.min(...all.map(p => p.y)), Math.max(...all.map(p => p.y))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const g = svg("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-index": idx });
    g.setAttribute("data-metric", name);
    g.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    g.append(svg("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, num(y1, 4)), svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, num(y0, 4)));
    g.append(svg("text", { x: L, y: H - 8 }, num(x0)), svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, num(x1)), svg("text", { x: (L + W) / 2, y: H - 8, "text-anchor": "middle" }, "step"));
    // the run of the page last, on top
    lines.sort((a, b) => (a.run === self) - (b.run === self));
    for (const l of lines) {
      const mine = l.run === self;
      const grp = svg("g", { class: "series" + (mine ? " self" : ""), "data-run": l.run });
      grp.append(svg("polyline", { fill: "none", stroke: l.color, "stroke-width": mine ? 2.5 : 1.2, opacity: mine ? 1 : 0.65,
        points: l.pts.map(p => sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1)).join(" ") }));
      for (const p of l.pts) {
        const c = svg("circle", { class: "pt", cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: mine ? 2.6 : 1.6, fill: l.color });
        c.append(svg("title", {}, l.run + " step " + num(p.x) + ": " + num(p.y)));
        grp.append(c);
      }
      g.append(grp);
    }
    const legend = el("div", { class: "legend" }, ...lines.slice().reverse().map(l =>
      el("span", {}, el("i", {}), l.run === self ? l.run + " (this run)" : l.run)));
    // colours of the legend: set through the DOM (the CSP forbids inline style attributes)
    legend.querySelectorAll("i").forEach((i, k) => { i.style.background = lines.slice().reverse()[k].color; });
    return el("div", { class: "chart-box" }, el("h3", {}, name), g, legend);
  });
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
