// The job page: curves drawn from the job's event stream (the same events as
// GET /v1/jobs/{id}/events), one point per finished epoch, live while it runs.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("curves");
  if (!box) return;
  const jobId = box.dataset.job;
  const classes = JSON.parse(box.dataset.classes || "[]");
  let selected = box.dataset.selected ? Number(box.dataset.selected) : null;
  const { lineChart } = window.CounterweightCharts;
  const sel = () => selected;
  const total = Number(box.dataset.epochsTotal) || 0;
  const loss = lineChart(document.getElementById("chart-loss"), "Loss",
    ["train loss", "validation loss"], { selected: sel, epochs: total });
  const balanced = lineChart(document.getElementById("chart-balanced"),
    "Validation balanced accuracy", ["balanced accuracy"], { selected: sel, unit: true, epochs: total });
  const recall = lineChart(document.getElementById("chart-recall"),
    "Validation recall per class", classes.map((c) => `recall ${c}`), { selected: sel, unit: true, epochs: total });
  const rows = new Map();
  const seen = document.getElementById("epochs-seen");

  function redraw() {
    const epochs = [...rows.keys()].sort((a, b) => a - b);
    const pick = (f) => epochs.map((e) => { const v = f(rows.get(e)); return v == null ? null : v; });
    loss.set(epochs, [pick((r) => r.train_loss), pick((r) => r.val_loss)]);
    balanced.set(epochs, [pick((r) => r.val && r.val.balanced_accuracy)]);
    recall.set(epochs, classes.map((_, i) => pick((r) => r.val && r.val.per_class_recall
      ? r.val.per_class_recall[i] : null)));
    const ended = box.dataset.ended === "true";
    seen.textContent = ended ? `${epochs.length} epoch(s) trained`
      : epochs.length ? `${epochs.length} epoch(s) so far` : "no epoch finished yet";
    box.dataset.epochs = String(epochs.length);
  }
  redraw();

  const source = new EventSource(`/ui/jobs/${encodeURIComponent(jobId)}/events`);
  source.addEventListener("epoch", (event) => {
    const row = JSON.parse(event.data);
    rows.set(row.epoch, row);
    redraw();
  });
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data).status;
    if (["succeeded", "failed", "cancelled"].includes(status)) {
      source.close();
      // The final tables exist now: show them, unless the page already does.
      if (box.dataset.ended !== "true") window.location.reload();
    }
  });
  source.addEventListener("error", () => { if (box.dataset.ended === "true") source.close(); });
});
