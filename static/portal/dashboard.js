// The dashboard's charts, drawn with uPlot (static/vendor/uplot) from the series the page carries
// (<script type="application/json" id="usage-series">). The same numbers are in the page's tables,
// which is what screen readers read; each chart's container says so in its aria-label.
(function () {
  "use strict";

  const COLORS = { primary: "#3b4cca", ok: "#1e6b3a", warn: "#b45309", danger: "#b42318", muted: "#55606e" };

  // As the page writes dollars (apps/portal/templatetags/usage_format.py): two decimals from a
  // dollar, four below, and two significant digits below a hundredth of a cent (never "$0.0000").
  function usd(value) {
    if (value == null) return "—";
    const size = Math.abs(value);
    if (size >= 1 || value === 0) return "$" + value.toFixed(2);
    if (size >= 0.0001) return "$" + value.toFixed(4);
    return "$" + value.toFixed(Math.min(8, 1 - Math.floor(Math.log10(size))));
  }
  // An axis's ticks with the decimals their spacing needs (ticks 0.00001 apart are not all "$0.0000").
  function usdTicks(u, ticks, axis, space, increment) {
    const places = Math.min(8, Math.max(2, Math.ceil(-Math.log10(increment || 1))));
    return ticks.map((tick) => "$" + tick.toFixed(places));
  }
  // Counts are whole: their axes step by whole numbers (no "0 1 1 2 2" from ticks half a unit apart).
  const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 1e8, 1e9];
  // A line needs two points in a row to be drawn: with few points, each is drawn as a dot too.
  function dots(values) {
    return { show: values.filter((value) => value != null).length <= 24, size: 6 };
  }
  function count(value) {
    return value == null ? "—" : Math.round(value).toLocaleString("en-US");
  }
  function ms(value) {
    return value == null ? "—" : Math.round(value).toLocaleString("en-US") + " ms";
  }

  function definitions(data) {
    const bars = uPlot.paths.bars({ size: [0.7, 40] });
    return {
      spend: {
        values: [data.cost, data.saved],
        series: [
          { label: "Spend", stroke: COLORS.primary, fill: "rgba(59, 76, 202, 0.55)", paths: bars, value: (u, v) => usd(v) },
          { label: "Saved by cache", stroke: COLORS.ok, width: 2, points: dots(data.saved), value: (u, v) => usd(v) },
        ],
        axis: usdTicks,
      },
      requests: {
        values: [data.requests, data.cache_hits, data.errors],
        series: [
          { label: "Requests", stroke: COLORS.primary, fill: "rgba(59, 76, 202, 0.55)", paths: bars, value: (u, v) => count(v) },
          { label: "Cache hits", stroke: COLORS.ok, width: 2, points: dots(data.cache_hits), value: (u, v) => count(v) },
          { label: "Errors", stroke: COLORS.danger, width: 2, points: dots(data.errors), value: (u, v) => count(v) },
        ],
        axis: (u, ticks) => ticks.map(count),
        incrs: WHOLE_STEPS,
      },
      tokens: {
        values: [data.input_tokens, data.output_tokens],
        series: [
          { label: "Input", stroke: COLORS.primary, width: 2, fill: "rgba(59, 76, 202, 0.12)", points: dots(data.input_tokens), value: (u, v) => count(v) },
          { label: "Output", stroke: COLORS.warn, width: 2, points: dots(data.output_tokens), value: (u, v) => count(v) },
        ],
        axis: (u, ticks) => ticks.map(count),
        incrs: WHOLE_STEPS,
      },
      latency: {
        values: [data.p50, data.p95],
        series: [
          { label: "p50", stroke: COLORS.primary, width: 2, points: dots(data.p50), value: (u, v) => ms(v) },
          { label: "p95", stroke: COLORS.danger, width: 2, dash: [6, 4], points: dots(data.p95), value: (u, v) => ms(v) },
        ],
        axis: (u, ticks) => ticks.map(ms),
      },
    };
  }

  // The y axis as wide as its longest label ("$0.000015" needs more room than "2").
  function labelsWidth(u, labels) {
    const longest = labels ? Math.max(0, ...labels.map((label) => String(label).length)) : 0;
    return Math.max(40, 18 + 7 * longest);
  }

  function draw(container, definition, data) {
    const width = Math.max(240, container.clientWidth);
    const options = {
      width: width,
      height: 220,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { points: { size: 6 } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: COLORS.muted, grid: { stroke: "#eef0f4" } },
        { stroke: COLORS.muted, grid: { stroke: "#eef0f4" }, size: labelsWidth, values: definition.axis, ...(definition.incrs ? { incrs: definition.incrs } : {}) },
      ],
      series: [{ label: data.span === "hour" ? "Hour (UTC)" : "Day (UTC)" }, ...definition.series],
    };
    return new uPlot(options, [data.time, ...definition.values], container);
  }

  function start() {
    const source = document.getElementById("usage-series");
    if (!source || typeof uPlot === "undefined") return;
    const data = JSON.parse(source.textContent);
    const all = definitions(data);
    const plots = [];
    document.querySelectorAll("[data-chart]").forEach((container) => {
      const definition = all[container.dataset.chart];
      if (definition) plots.push([container, draw(container, definition, data)]);
    });
    // Charts follow their container's width (the grid goes to one column on a phone).
    if (typeof ResizeObserver !== "undefined") {
      const observer = new ResizeObserver(() => {
        plots.forEach(([container, plot]) => {
          const width = Math.max(240, container.clientWidth);
          if (width !== plot.width) plot.setSize({ width: width, height: 220 });
        });
      });
      plots.forEach(([container]) => observer.observe(container));
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
