// The new-job page: the spec is validated by the API as it is typed (POST
// /ui/api/validate calls /v1/jobs/validate's own function), and submitted from here.
// Everything shown is set as text.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const editor = document.getElementById("spec");
  const submit = document.getElementById("submit");
  const state = document.getElementById("report-state");
  const errors = document.getElementById("report-errors");
  const warnings = document.getElementById("report-warnings");
  const notes = document.getElementById("report-notes");
  const table = document.getElementById("report-table");
  const result = document.getElementById("submit-result");
  let timer = null;
  let asked = 0;

  function paragraphs(box, lines, cls) {
    box.replaceChildren(...lines.map((line) => {
      const p = document.createElement("p");
      p.className = cls;
      p.textContent = line;
      return p;
    }));
  }

  function cell(tag, text) {
    const c = document.createElement(tag);
    c.textContent = text;
    return c;
  }

  function show(report) {
    const body = table.tBodies[0];
    body.replaceChildren(...report.class_names.map((name, i) => {
      const tr = document.createElement("tr");
      tr.append(cell("th", name), cell("td", report.counts.train[i]), cell("td", report.counts.val[i]),
        cell("td", report.counts.test[i]), cell("td", Number(report.class_weight[i]).toPrecision(4)));
      return tr;
    }));
    table.hidden = false;
    paragraphs(warnings, report.warnings, "warning");
    paragraphs(notes, report.notes, "note");
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", body, credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
    });
    let answer = null;
    try { answer = await response.json(); } catch (e) { answer = { detail: response.statusText }; }
    return { ok: response.ok, status: response.status, answer };
  }

  function refused(status, answer) {
    const fields = answer && answer.errors ? answer.errors.map((e) => `${e.field}: ${e.msg}`) : [];
    return fields.length ? fields : [`${status}: ${answer && answer.detail ? answer.detail : "refused"}`];
  }

  // The form shows what the spec says, however it was edited.
  function reflect(spec) {
    if (!spec || typeof spec !== "object") return; // validate will say what it must be
    const set = (id, value) => {
      const control = document.getElementById(id);
      const known = control.tagName !== "SELECT" || [...control.options].some((o) => o.value === value);
      if (known) control.value = value;
    };
    set("quick-loss", (spec.loss && spec.loss.type) || "cross_entropy");
    set("quick-sampler", spec.sampler || "none");
    set("quick-class-weight", spec.class_weight == null ? "none" : String(spec.class_weight));
    if (spec.train && spec.train.epochs != null) set("quick-epochs", String(spec.train.epochs));
  }

  async function check() {
    const mine = ++asked;
    const text = editor.value;
    try { reflect(JSON.parse(text)); } catch (e) {
      state.textContent = "not JSON yet";
      paragraphs(errors, [String(e.message)], "error");
      submit.disabled = true;
      return;
    }
    state.textContent = "checking...";
    const { ok, status, answer } = await post("/ui/api/validate", text);
    if (mine !== asked) return; // a newer check is under way
    if (ok) {
      state.textContent = "valid";
      paragraphs(errors, [], "error");
      show(answer);
      submit.disabled = false;
    } else {
      state.textContent = "invalid";
      paragraphs(errors, refused(status, answer), "error");
      paragraphs(warnings, [], "warning");
      table.hidden = true;
      submit.disabled = true;
    }
  }

  // The form: each control sets one field of the spec in the editor, then validates.
  const quick = {
    "quick-dataset": (spec, value) => {
      const chosen = JSON.parse(value);
      const same = spec.dataset && spec.dataset.name === chosen.name && spec.dataset.id === chosen.id;
      spec.dataset = same ? { ...spec.dataset, ...chosen } : chosen; // another's classes may not exist
    },
    "quick-loss": (spec, value) => { spec.loss = { type: value }; },
    "quick-class-weight": (spec, value) => { spec.class_weight = value === "none" ? null : value; },
    "quick-sampler": (spec, value) => { spec.sampler = value; },
    "quick-epochs": (spec, value) => { spec.train = { ...(spec.train || {}), epochs: Number(value) }; },
  };
  for (const [id, set] of Object.entries(quick)) {
    document.getElementById(id).addEventListener("change", (event) => {
      let spec;
      try { spec = JSON.parse(editor.value); } catch (e) { return; } // fix the JSON first
      set(spec, event.target.value);
      editor.value = JSON.stringify(spec, null, 2);
      check();
    });
  }

  editor.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  submit.addEventListener("click", async () => {
    submit.disabled = true;
    const { ok, status, answer } = await post("/ui/api/jobs", editor.value);
    if (ok) {
      window.location.assign(`/ui/jobs/${encodeURIComponent(answer.id)}`);
    } else {
      result.textContent = refused(status, answer).join("; ");
      submit.disabled = false;
    }
  });
  check();
});
