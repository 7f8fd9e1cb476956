// otfuzz dashboard: keeps a page current from its server-sent events.
// Every value is written with textContent or as an attribute the page controls: nothing a
// device sent can become markup or code. Charts are images, reloaded when their data changed.
"use strict";

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function runHref(id) {
  return "/run/" + id.split("/").map(encodeURIComponent).join("/");
}

function freshBody(id, empty, columns, count) {
  // A new tbody to fill and swap in whole; a single grey row when there is nothing to show.
  const body = document.createElement("tbody");
  body.id = id;
  if (count === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    cell(tr, empty).colSpan = columns;
    body.appendChild(tr);
  }
  return body;
}

function setText(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value === null || value === undefined ? "-" : String(value);
}

function renderRuns(rows) {
  const body = document.getElementById("runs");
  const fresh = freshBody("runs", "no run folders here yet", 8, rows.length);
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.run = r.id;
    const td = cell(tr, "");
    const a = document.createElement("a");
    a.href = runHref(r.id);
    a.textContent = r.id;
    td.appendChild(a);
    cell(tr, r.status, "status-" + r.status);
    cell(tr, r.kind);
    cell(tr, r.target);
    cell(tr, r.protocol);
    cell(tr, r.cases, "num");
    cell(tr, r.findings, "num");
    cell(tr, r.verdict, "verdict-" + r.verdict);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function renderFindings(list) {
  const body = document.getElementById("findings");
  const fresh = freshBody("findings", "no findings yet", 7, list.length);
  for (const f of list) {
    const tr = document.createElement("tr");
    tr.dataset.finding = String(f.id);
    cell(tr, f.id, "num");
    cell(tr, f.severity, "sev-" + f.severity);
    cell(tr, f["class"]);
    cell(tr, f.title);
    cell(tr, f.occurrences, "num");
    cell(tr, f.status);
    const td = cell(tr, "");
    const cases = document.createElement("div");
    cases.className = "cases";
    cases.textContent = "cases " + f.case_ids.join(", ") + (f.minimised ? " (minimised)" : "");
    td.appendChild(cases);
    for (const h of f.frames_hex) {
      const code = document.createElement("code");
      code.className = "hex";
      code.textContent = h;
      td.appendChild(code);
    }
    if (f.more_frames) {
      const more = document.createElement("div");
      more.textContent = "… " + f.more_frames + " more frames in the report";
      td.appendChild(more);
    }
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function renderIdentity(identity) {
  const body = document.getElementById("identity");
  const fresh = document.createElement("tbody");
  fresh.id = "identity";
  const keys = Object.keys(identity).sort();
  for (const k of keys) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = k;
    tr.appendChild(th);
    cell(tr, identity[k]);
    fresh.appendChild(tr);
  }
  if (keys.length === 0) {
    const tr = document.createElement("tr");
    cell(tr, "the device did not identify itself");
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function renderReports(files) {
  const list = document.getElementById("reports");
  if (!list || files.length === 0) return;
  const base = list.dataset.base;
  list.replaceChildren();
  for (const file of files) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = base + encodeURIComponent(file);
    a.textContent = file;
    li.appendChild(a);
    list.appendChild(li);
  }
}

function renderRun(s) {
  setText("status", s.status);
  setText("verdict", s.verdict);
  setText("stop-reason", s.stop_reason);
  setText("target", s.target);
  setText("cases", s.cases);
  setText("rate", s.rate);
  setText("elapsed", s.elapsed_s);
  setText("health", s.health);
  setText("probe", s.probe_ms);
  setText("findings-count", s.findings);
  setText("severities", [s.findings_by_severity.high, s.findings_by_severity.medium, s.findings_by_severity.low].join(" / "));
  setText("anomalies", s.anomalies);
  setText("findings-shown", s.findings_shown);
  if (s.identity) renderIdentity(s.identity);
  if (s.findings_list) renderFindings(s.findings_list);
  if (s.reports) renderReports(s.reports);
  const charts = document.getElementById("charts");
  if (charts && charts.dataset.version !== s.charts_version) {
    charts.dataset.version = s.charts_version;
    for (const img of charts.querySelectorAll("img[data-chart]")) {
      const url = new URL(img.src);
      url.searchParams.set("v", s.charts_version);
      img.src = url.pathname + url.search;
    }
  }
}

function connect() {
  const url = document.body.dataset.events;
  if (!url) return;
  const live = document.getElementById("live");
  const source = new EventSource(url);
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  source.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (document.body.dataset.page === "runs") renderRuns(data); else renderRun(data);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || "0") + 1);
  };
}

function stopButton() {
  const button = document.getElementById("stop");
  if (!button) return;
  button.addEventListener("click", async () => {
    const answer = await fetch(button.dataset.stop, { method: "POST", headers: { "X-Otfuzz-Control": "stop" } });
    setText("stop-result", (await answer.text()).trim());
  });
}

document.addEventListener("DOMContentLoaded", () => { connect(); stopButton(); });
