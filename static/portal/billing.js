// The Plan and billing page's chart, drawn with uPlot (static/vendor/uplot) from the numbers the page
// carries (<script type="application/json" id="billing-usage">): usage so far this period, added up
// day by day, the plan's included amount, and the projection (the pace so far, as a straight line
// to the period's end). The same numbers are in the page's table, which is what screen readers read.
(function () {
  "use strict";

  const COLORS = { primary: "#3b4cca", ok: "#1e6b3a", warn: "#b45309", muted: "#55606e" };

  // As the page writes dollars (apps/portal/templatetags/usage_format.py).
  function usd(value) {
    if (value == null) return "—";
    const size = Math.abs(value);
    if (size >= 1 || value === 0) return "$" + value.toFixed(2);
    if (size >= 0.0001) return "$" + value.toFixed(4);
    return "$" + value.toFixed(Math.min(8, 1 - Math.floor(Math.log10(size))));
  }
  function usdTicks(u, ticks, axis, space, increment) {
    const places = Math.min(8, Math.max(2, Math.ceil(-Math.log10(increment || 1))));
    return ticks.map((tick) => "$" + tick.toFixed(places));
  }

  function options(width, data) {
    const top = Math.max(...data.included, ...data.used.filter((v) => v != null), ...data.projected.filter((v) => v != null));
    return {
      width: width,
      height: 240,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { points: { size: 6 } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: () => [0, top > 0 ? top * 1.1 : 1] } },
      axes: [
        { stroke: COLORS.muted, grid: { stroke: "#eef0f4" } },
        { stroke: COLORS.muted, grid: { stroke: "#eef0f4" }, size: 70, values: usdTicks },
      ],
      series: [
        { label: "Day (UTC)" },
        { label: "Used", stroke: COLORS.primary, width: 2, fill: "rgba(59, 76, 202, 0.12)", points: { show: true, size: 5 }, value: (u, v) => usd(v) },
        { label: "Included", stroke: COLORS.ok, width: 2, points: { show: false }, value: (u, v) => usd(v) },
        { label: "Projected", stroke: COLORS.warn, width: 2, dash: [6, 4], points: { show: false }, value: (u, v) => usd(v) },
      ],
    };
  }

  function start() {
    const source = document.getElementById("billing-usage");
    const container = document.querySelector("[data-billing-chart]");
    if (!source || !container || typeof uPlot === "undefined") return;
    const data = JSON.parse(source.textContent);
    const width = () => Math.max(240, container.clientWidth);
    const plot = new uPlot(options(width(), data), [data.time, data.used, data.included, data.projected], container);
    // The chart follows its container's width (narrower on a phone).
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(() => {
        if (width() !== plot.width) plot.setSize({ width: width(), height: 240 });
      }).observe(container);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
