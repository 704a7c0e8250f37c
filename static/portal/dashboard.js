// The dashboard's charts, drawn with uPlot (static/vendor/uplot) from the series the page carries
// (<script type="application/json" id="usage-series">). The same numbers are in the page's tables,
// which is what screen readers read; each chart's container says so in its aria-label.
(function () {
  "use strict";

  const COLORS = { primary: "#3b4cca", ok: "#1e6b3a", warn: "#b45309", danger: "#b42318", muted: "#55606e" };

  function usd(value) {
    if (value == null) return "—";
    return value >= 1 || value === 0 ? "$" + value.toFixed(2) : "$" + value.toFixed(4);
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
          { label: "Saved by cache", stroke: COLORS.ok, width: 2, value: (u, v) => usd(v) },
        ],
        axis: (u, ticks) => ticks.map(usd),
      },
      requests: {
        values: [data.requests, data.cache_hits, data.errors],
        series: [
          { label: "Requests", stroke: COLORS.primary, fill: "rgba(59, 76, 202, 0.55)", paths: bars, value: (u, v) => count(v) },
          { label: "Cache hits", stroke: COLORS.ok, width: 2, value: (u, v) => count(v) },
          { label: "Errors", stroke: COLORS.danger, width: 2, value: (u, v) => count(v) },
        ],
        axis: (u, ticks) => ticks.map(count),
      },
      tokens: {
        values: [data.input_tokens, data.output_tokens],
        series: [
          { label: "Input", stroke: COLORS.primary, width: 2, fill: "rgba(59, 76, 202, 0.12)", value: (u, v) => count(v) },
          { label: "Output", stroke: COLORS.warn, width: 2, value: (u, v) => count(v) },
        ],
        axis: (u, ticks) => ticks.map(count),
      },
      latency: {
        values: [data.p50, data.p95],
        series: [
          { label: "p50", stroke: COLORS.primary, width: 2, value: (u, v) => ms(v) },
          { label: "p95", stroke: COLORS.danger, width: 2, dash: [6, 4], value: (u, v) => ms(v) },
        ],
        axis: (u, ticks) => ticks.map(ms),
      },
    };
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
        { stroke: COLORS.muted, grid: { stroke: "#eef0f4" }, size: 70, values: definition.axis },
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
