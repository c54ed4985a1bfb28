// The compare page: each job's validation curves, overlaid, from its metrics (the same
// JSON as GET /v1/jobs/{id}/metrics).
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const box = document.getElementById("compare-curves");
  if (!box) return;
  const ids = JSON.parse(box.dataset.jobs || "[]");
  if (!ids.length) return;
  const all = await Promise.all(ids.map(async (id) => {
    const response = await fetch(`/ui/jobs/${encodeURIComponent(id)}/metrics`, { credentials: "same-origin" });
    return response.ok ? response.json() : null;
  }));
  const jobs = ids.map((id, i) => ({ id, metrics: all[i] })).filter((j) => j.metrics);
  const epochs = [...new Set(jobs.flatMap((j) => j.metrics.history.map((r) => r.epoch)))].sort((a, b) => a - b);
  const names = jobs.map((j) => j.id.slice(0, 8));
  const column = (f) => jobs.map((j) => {
    const byEpoch = new Map(j.metrics.history.map((r) => [r.epoch, r]));
    return epochs.map((e) => (byEpoch.has(e) ? f(byEpoch.get(e), j.metrics) : null));
  });
  const minority = (row, m) => {
    const counts = m.train_class_counts;
    const k = counts.indexOf(Math.min(...counts));
    return row.val && row.val.per_class_recall ? row.val.per_class_recall[k] : null;
  };
  const { lineChart } = window.CounterweightCharts;
  const charts = [
    [lineChart(document.getElementById("chart-val-loss"), "Validation loss", names), (r) => r.val_loss],
    [lineChart(document.getElementById("chart-val-balanced"), "Validation balanced accuracy", names, { unit: true }),
      (r) => r.val && r.val.balanced_accuracy],
    [lineChart(document.getElementById("chart-minority"), "Validation minority recall", names, { unit: true }), minority],
  ];
  for (const [chart, f] of charts) chart.set(epochs, column(f));
  box.dataset.drawn = String(jobs.length);
});
