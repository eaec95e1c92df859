// mlproj board: selection for compare, uPlot charts from the board's JSON, live updates of a running run.
// Everything drawn comes from JSON (fetch or the page's application/json block) and is set as text, never as HTML.
"use strict";
(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const POLL_MS = 3000;
  const OUTPUT_CHARS = 200 * 1024;  // the end of a running run's output kept in the page
  const block = document.getElementById("board-data");
  const data = block ? JSON.parse(block.textContent) : null;

  // ----------------------------------------------------------------- selection (runs table, trials)
  const KEY = "mlproj-board-selection";
  function selected() { try { return JSON.parse(sessionStorage.getItem(KEY)) || []; } catch (e) { return []; } }
  function setSelected(ids) { sessionStorage.setItem(KEY, JSON.stringify(ids)); showSelection(); }
  function showSelection() {
    const label = document.getElementById("selection");
    const button = document.getElementById("compare");
    if (!label || !button) return;
    const ids = selected();
    const max = Number(label.dataset.max) || Infinity;  // the server's MAX_COMPARED, named by the page
    label.textContent = ids.length ? `selected: runs ${ids.join(", ")}` : "none selected";
    button.disabled = ids.length < 2 || ids.length > max;
    button.title = ids.length > max ? `select at most ${max} runs` : ids.length < 2 ? "select 2 or more runs" : "";
    document.querySelectorAll("input.pick").forEach((box) => { box.checked = ids.includes(box.value); });
  }
  document.querySelectorAll("input.pick").forEach((box) => box.addEventListener("change", () => {
    const ids = selected().filter((id) => id !== box.value);
    if (box.checked) ids.push(box.value);
    setSelected(ids);
  }));
  const compare = document.getElementById("compare");
  if (compare) compare.addEventListener("click", () => {
    const query = new URLSearchParams();
    selected().forEach((id) => query.append("run", id));
    window.location.href = `${compare.dataset.url}?${query}`;
  });
  const clear = document.getElementById("clear-selection");
  if (clear) clear.addEventListener("click", () => setSelected([]));
  showSelection();

  // ----------------------------------------------------------------- charts
  const charts = document.getElementById("charts");
  const plots = {};
  const layouts = {};  // each chart's series labels: a chart whose series change is made again

  function chartBox(metric) {
    let box = document.getElementById(`chart-${metric}`);
    if (!box) {
      box = document.createElement("div");
      box.className = "chart";
      box.id = `chart-${metric}`;
      box.dataset.metric = metric;
      charts.appendChild(box);
    }
    return box;
  }

  // A chart is made once per metric; new points of a running run go in with setData, so the
  // x range the user zoomed to (drag on the chart; double-click resets) stays.
  function draw(metric, x, series, note) {
    const box = chartBox(metric);
    const { opts, columns, hidden } = chartSpec(metric, x, series);
    const layout = opts.series.map((s) => s.label).join("\n");
    const plot = plots[metric];
    if (plot && layouts[metric] === layout) {
      const shown = plot.data[0];
      const zoomed = shown.length && (plot.scales.x.min > shown[0] || plot.scales.x.max < shown[shown.length - 1]);
      plot.setData(columns, !zoomed);
    } else {
      if (plot) plot.destroy();
      box.textContent = "";
      plots[metric] = new uPlot(opts, columns, box);
      layouts[metric] = layout;
      const entries = box.querySelectorAll(".u-legend .u-series");
      hidden.forEach((index) => { if (entries[index]) entries[index].style.display = "none"; });
    }
    let p = box.querySelector("p.note");
    if (note && !p) {
      p = document.createElement("p");
      p.className = "note";
      box.appendChild(p);
    }
    if (p) p.textContent = note;
    box.dataset.drawn = "1";
    box.dataset.draws = String(Number(box.dataset.draws || 0) + 1);  // the browser tests wait on it
  }

  function chartSpec(metric, x, series) {
    const box = chartBox(metric);
    const opts = {
      title: metric, width: Math.max(box.clientWidth - 10, 300), height: 260,
      scales: { x: { time: false } },
      axes: [{}, { size: 60, values: (u, splits) => splits.map((v) => (v == null ? "" : String(Number(v.toPrecision(4))))) }],
      series: [{ label: "step" }],
      bands: [],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      // The x range shown, for the browser tests (a zoom that survives an update keeps it).
      hooks: { setScale: [(u, key) => { if (key === "x") box.dataset.range = `${u.scales.x.min} ${u.scales.x.max}`; }] },
    };
    const columns = [x];
    const hidden = [];  // the band edges: drawn as the band, not listed in the legend
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      if (s.low && s.high) {
        const at = columns.length;
        columns.push(s.high, s.low);
        opts.series.push({ label: `${s.label} +std`, stroke: color, width: 0, points: { show: false }, spanGaps: true });
        opts.series.push({ label: `${s.label} -std`, stroke: color, width: 0, points: { show: false }, spanGaps: true });
        opts.bands.push({ series: [at, at + 1], fill: color + "33" });
        hidden.push(at, at + 1);
      }
      columns.push(s.values);
      opts.series.push({ label: s.label, stroke: color, width: 1.5, spanGaps: true, points: { show: (u) => u.data[0].length < 40 } });
    });
    return { opts, columns, hidden };
  }

  async function getJSON(url) {
    const response = await fetch(url);  // as the page's preload asked for it, so that one answer serves both
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function fail(error) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = `curves could not be loaded: ${error.message}`;
    charts.appendChild(p);
  }

  async function drawRun() {
    const body = await getJSON(data.curves);
    const none = document.getElementById("no-metrics");
    if (none && Object.keys(body.metrics).length) none.remove();  // a running run logged its first metrics
    for (const [metric, curve] of Object.entries(body.metrics)) {
      const note = curve.count > curve.steps.length ? `${curve.count.toLocaleString()} points logged, ${curve.steps.length.toLocaleString()} drawn (min and max of each bucket)` : "";
      draw(metric, curve.steps, [{ label: metric, values: curve.values }], note);
    }
    charts.setAttribute("aria-busy", "false");
    // Since navigation, once uPlot has drawn (it draws in a microtask, before the next frame): `mlproj.bench --board` reads it.
    requestAnimationFrame(() => { charts.dataset.drawnMs = String(Math.round(performance.now())); });
    return body.stamp;
  }

  async function drawCompare() {
    await Promise.all(data.metrics.map(async (metric) => {
      const query = new URLSearchParams();
      data.runs.forEach((id) => query.append("run", id));
      query.set("metric", metric);
      if (data.group) query.set("group", data.group);
      chartBox(metric);
      const body = await getJSON(`${data.curves}?${query}`);
      draw(metric, body.x, body.series, data.group ? `mean ± std over ${data.group}` : "");
    }));
    charts.setAttribute("aria-busy", "false");
  }

  // ----------------------------------------------------------------- a running run
  // The server's answer starts where the last line we show begins when that line was unfinished
  // (a progress bar the run redraws), so it replaces what follows our last newline; an offset
  // that went back means cout.txt was written anew, and the answer replaces everything.
  function showOutput(output, live, asked) {
    const shown = output.textContent;
    const kept = live.offset < asked ? "" : shown.slice(0, shown.lastIndexOf("\n") + 1);
    let text = kept + live.output;
    if (text.length > OUTPUT_CHARS) {  // only the end is kept: a run that prints for days would fill the tab's memory
      const cut = text.indexOf("\n", text.length - OUTPUT_CHARS);
      text = text.slice(cut >= 0 ? cut + 1 : text.length - OUTPUT_CHARS);
    }
    if (text === shown) return;
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    output.textContent = text;
    if (atBottom) output.scrollTop = output.scrollHeight;
  }

  async function follow(stamp) {
    let offset = data.offset;
    const output = document.getElementById("output");
    const status = document.getElementById("status");
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      let live;
      try { live = await getJSON(`${data.live}?offset=${offset}`); } catch (e) { continue; }
      showOutput(output, live, offset);
      offset = live.offset;
      status.textContent = live.status;
      status.className = `status ${live.status}`;
      for (const key of ["duration", "result"]) {
        const cell = document.getElementById(`fact-${key}`);
        if (cell) cell.textContent = live[key];
      }
      if (JSON.stringify(live.stamp) !== JSON.stringify(stamp)) {
        // A failed fetch (a record caught half-written, a 4xx/5xx) must not end the updates: the
        // stamp stays, so the next poll asks for the curves again.
        try { stamp = await drawRun(); } catch (e) { /* next poll */ }
      }
      if (!live.running) break;
    }
  }

  if (charts && data && data.runs) drawCompare().catch(fail);
  else if (charts && data) drawRun().then((stamp) => { if (data.running) follow(stamp); }).catch(fail);
  else if (data && data.running) follow(data.stamp);

  window.addEventListener("resize", () => {
    Object.entries(plots).forEach(([metric, plot]) => {
      const box = document.getElementById(`chart-${metric}`);
      plot.setSize({ width: Math.max(box.clientWidth - 10, 300), height: 260 });
    });
  });
})();
