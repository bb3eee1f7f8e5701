// The execution page: draws the pipeline DAG (laid out by dagre) and the step table from the
// console's JSON endpoint, and polls it so statuses change on the page as the steps run.
"use strict";
(function () {
  const COLOURS = {Succeeded: "#2e7d32", Executing: "#1565c0", Starting: "#1565c0", Failed: "#c62828",
                   Stopped: "#8d6e63", Stopping: "#8d6e63", NotStarted: "#9e9e9e"};
  // The same classes as the server-rendered badges (local/console/pages.py STATUS_CLASSES).
  const CLASSES = {Succeeded: "ok", Executing: "running", Starting: "running", Failed: "bad", Stopped: "bad"};
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 1500;
  const dag = document.getElementById("dag");
  if (!dag) return;
  let drawn = null;  // step name -> {group, rect, label}

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function draw(graph) {
    const g = new dagre.graphlib.Graph();
    g.setGraph({rankdir: "LR", nodesep: 24, ranksep: 48, marginx: 12, marginy: 12});
    g.setDefaultEdgeLabel(() => ({}));
    for (const node of graph.nodes) g.setNode(node.name, {width: Math.max(120, node.name.length * 8 + 24), height: 46});
    for (const edge of graph.edges) g.setEdge(edge.source, edge.target, {kind: edge.kind});
    dagre.layout(g);
    const size = g.graph();
    const svg = el("svg", {width: size.width, height: size.height, viewBox: `0 0 ${size.width} ${size.height}`,
                           role: "img", "aria-label": "pipeline DAG"});
    const defs = el("defs", {}, svg);
    const marker = el("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8,
                                 markerHeight: 8, orient: "auto-start-reverse"}, defs);
    el("path", {d: "M 0 0 L 10 5 L 0 10 z", fill: "#555"}, marker);
    for (const e of g.edges()) {
      const edge = g.edge(e);
      const d = edge.points.map((p, i) => `${i ? "L" : "M"} ${p.x} ${p.y}`).join(" ");
      el("path", {d, class: `edge ${edge.kind}`, fill: "none", stroke: "#555", "stroke-width": 1.5,
                  "marker-end": "url(#arrow)"}, svg);
    }
    drawn = {};
    for (const name of g.nodes()) {
      const n = g.node(name);
      const group = el("g", {class: "step", "data-step": name, "data-status": "NotStarted",
                             transform: `translate(${n.x - n.width / 2}, ${n.y - n.height / 2})`}, svg);
      const rect = el("rect", {width: n.width, height: n.height, rx: 6, fill: COLOURS.NotStarted}, group);
      const title = el("text", {x: n.width / 2, y: 19, "text-anchor": "middle", fill: "#fff", class: "name"}, group);
      title.textContent = name;
      const label = el("text", {x: n.width / 2, y: 36, "text-anchor": "middle", fill: "#fff", class: "state"}, group);
      label.textContent = "NotStarted";
      drawn[name] = {group, rect, label};
    }
    dag.replaceChildren(svg);
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function update(live) {
    if (!drawn) draw(live.graph);
    const table = document.createElement("table");
    table.className = "steps";
    const head = table.createTHead().insertRow();
    for (const h of ["step", "status", "duration (s)", "cache hit", "failure reason", "log"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const step of live.steps) {
      const shown = drawn[step.name];
      if (shown) {
        shown.group.setAttribute("data-status", step.status);
        shown.rect.setAttribute("fill", COLOURS[step.status] || "#6d4c41");
        shown.label.textContent = step.status + (step.duration_seconds != null ? ` · ${step.duration_seconds} s` : "")
          + (step.cache_hit ? " · cached" : "");
      }
      const row = body.insertRow();
      row.setAttribute("data-step", step.name);
      row.setAttribute("data-status", step.status);
      cell(row, step.name);
      cell(row, step.status, "status " + (CLASSES[step.status] || "other"));
      cell(row, step.duration_seconds);
      cell(row, step.cache_hit ? "yes (" + step.cache_hit.split("/").pop() + ")" : "no");
      cell(row, step.failure_reason, "failure");
      const logCell = cell(row, "");
      if (step.job) {
        const a = document.createElement("a");
        a.href = `/executions/${encodeURIComponent(dag.dataset.execution)}/steps/${encodeURIComponent(step.name)}/log`;
        a.textContent = step.job.kind + " log";
        logCell.appendChild(a);
      } else if (step.model_package_arn) {
        const a = document.createElement("a");
        a.href = "/packages/" + encodeURIComponent(step.model_package_arn.split("/").pop());
        a.textContent = "model package";
        logCell.appendChild(a);
      }
    }
    document.getElementById("steps").replaceChildren(table);
    const updated = document.getElementById("updated");
    updated.textContent = `execution ${live.execution.status} · updated ${new Date().toISOString().slice(11, 19)} UTC`;
    updated.setAttribute("data-execution-status", live.execution.status);
    return live.execution.status;
  }

  async function poll() {
    let status = null;
    try {
      const response = await fetch(dag.dataset.live, {cache: "no-store"});
      if (response.ok) status = update(await response.json());
    } catch (error) {
      document.getElementById("updated").textContent = "cannot reach the console: " + error;
    }
    if (!["Succeeded", "Failed", "Stopped"].includes(status)) setTimeout(poll, POLL_MS);
  }
  poll();
})();
