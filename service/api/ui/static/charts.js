// Line charts (uPlot) shared by the job and compare pages. Every label is set by uPlot
// as text (textContent), never as HTML.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function colour(i) { return PALETTE[i % PALETTE.length]; }

// A vertical dashed line at the selected epoch (null: none).
function markEpoch(getEpoch) {
  return {
    hooks: {
      draw: [(u) => {
        const epoch = getEpoch();
        if (epoch == null) return;
        const x = u.valToPos(epoch, "x", true);
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "#444";
        ctx.setLineDash([6, 4]);
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.restore();
      }],
    },
  };
}

// A chart of one line per name against the epoch; set(epochs, columns) redraws it.
function lineChart(element, title, names, options = {}) {
  const width = Math.max(320, Math.min(element.clientWidth || 560, 560));
  const series = [{ label: "epoch" }].concat(names.map((name, i) => ({
    label: String(name), stroke: colour(i), width: 2, points: { show: true, size: 5 },
    dash: options.dashed && options.dashed[i] ? [6, 4] : undefined, spanGaps: true,
  })));
  const plot = new uPlot({
    title, width, height: 240,
    // A job's whole run from the start (options.epochs), so a live chart does not rescale.
    scales: {
      x: options.epochs >= 2 ? { time: false, range: [1, options.epochs] } : { time: false },
      y: options.unit ? { range: [0, 1] } : {},
    },
    axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, {}],
    series,
    plugins: [markEpoch(() => options.selected ? options.selected() : null)],
  }, [[], ...names.map(() => [])], element);
  return {
    set(epochs, columns) { plot.setData([epochs, ...columns]); },
    redraw() { plot.redraw(); },
    plot,
  };
}

window.CounterweightCharts = { lineChart, colour };
