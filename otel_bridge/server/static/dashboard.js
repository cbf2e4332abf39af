// otel-bridge dashboard: draws the charts described in #chart-data with Chart.js; range/refresh pickers.
(function () {
  "use strict";
  const PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#f97316", "#64748b", "#ec4899"];
  const usd = (v) => v == null ? "" : v === 0 ? "$0" : Math.abs(v) < 0.1 ? "$" + Number(v.toPrecision(2)) : "$" + v.toFixed(2);
  const num = (v) => v == null ? "" : Math.abs(v) >= 1e6 ? (v / 1e6).toFixed(1) + "M" : Math.abs(v) >= 1e3 ? (v / 1e3).toFixed(1) + "k" : String(Math.round(v));
  const ms = (v) => v == null ? "" : v === 0 ? "0" : v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";
  const pct = (v) => v == null ? "" : v.toFixed(1) + "%";
  const FORMAT = { usd: usd, tokens: num, ms: ms, pct: pct };

  function config(c) {
    const fmt = FORMAT[c.unit] || num;
    const horizontal = c.kind === "hbar";
    const datasets = c.datasets.map((d, i) => ({
      label: d.label, data: d.data,
      backgroundColor: PALETTE[i % PALETTE.length] + (c.kind === "line" ? "33" : "dd"),
      borderColor: PALETTE[i % PALETTE.length], borderWidth: c.kind === "line" ? 2 : 0,
      spanGaps: true, pointRadius: c.kind === "line" ? 2 : 0, tension: 0, fill: false, borderRadius: 2,
    }));
    const valueAxis = { stacked: c.stacked, beginAtZero: true, ticks: { callback: (v) => fmt(v) }, grid: { color: "#eef0f4" } };
    const labelAxis = { stacked: c.stacked, grid: { display: false }, ticks: { autoSkip: true, maxRotation: 0 } };
    return {
      type: c.kind === "hbar" ? "bar" : c.kind,
      data: { labels: c.labels, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, indexAxis: horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10 } },
          tooltip: { callbacks: { label: (ctx) => ctx.dataset.label + ": " + fmt(horizontal ? ctx.parsed.x : ctx.parsed.y) } },
        },
        scales: horizontal ? { x: valueAxis, y: labelAxis } : { x: labelAxis, y: valueAxis },
      },
    };
  }

  function draw() {
    const el = document.getElementById("chart-data");
    if (!el) return;
    for (const c of JSON.parse(el.textContent)) {
      const canvas = document.getElementById("chart-" + c.id);
      if (canvas) new Chart(canvas, config(c));
    }
  }

  function pickers() {
    for (const sel of document.querySelectorAll("[data-autosubmit]")) {
      sel.addEventListener("change", () => sel.form.submit());
    }
    const seconds = Number(document.body.dataset.refresh || 0);
    if (seconds > 0) setTimeout(() => window.location.reload(), seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", () => { pickers(); draw(); });
})();
