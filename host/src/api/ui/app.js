// absurd-host operator dashboard: plain JavaScript over the public HTTP API (/api/absurd).
// Views are addressed by the URL hash: #/, #/tasks?queue=&state=&name=&from=&to=&q=&cursor=,
// #/tasks/<id>, #/workers.
"use strict";

const API = "/api/absurd";
const STATES = ["pending", "running", "sleeping", "completed", "failed", "cancelled"];
const REFRESH_MS = 5000; // polling, while the live stream is down
const LIVE_FALLBACK_MS = 60000; // polling as a safety net while the live stream is up
const LIVE_MIN_MS = 1000; // at most one refresh per second from live updates
const LIVE_RETRY_MAX_MS = 60000;
const TOKEN_KEY = "absurd-api-token";
const SPARK_MINUTES = 60; // the overview's sparkline: per-minute counts over the last hour
const WORKER_MINUTES = 60; // the Workers view's window
let timer = null;
let generation = 0; // bumps on every navigation so that stale renders are dropped
let showingWorkflow = false; // a workflow's page: its children's updates refresh it too
const PARENT_HEADER = "absurd_host.parent_task_id"; // set on a workflow's children
const NODE_HEADER = "absurd_host.workflow_node";

// ---- helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

class HttpError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(API + path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    data = null;
  }
  if (resp.status === 401) {
    askToken(data && data.detail);
    throw new HttpError(401, (data && data.detail) || "token required");
  }
  if (!resp.ok) throw new HttpError(resp.status, (data && data.detail) || resp.statusText);
  return data;
}

function askToken(detail) {
  const sec = document.getElementById("token");
  if (!sec.hidden) return;
  sec.hidden = false;
  if (detail) sec.querySelector("p").textContent = `${detail}. The token is kept in this browser tab only (sessionStorage).`;
  document.getElementById("token-input").focus();
}

let flashedAt = 0;

function flash(text, kind = "info") {
  flashedAt = Date.now();
  const f = document.getElementById("flash");
  f.replaceChildren(h("p", { class: `flash flash-${kind}` }, text));
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function utc(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  return s >= 0 ? `${duration(s)} ago` : `in ${duration(-s)}`;
}

/// A time: UTC text plus relative age, machine-readable in <time>.
function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  return h("time", { datetime: iso, title: iso }, utc(iso), h("span", { class: "age" }, ` (${ago(iso)})`));
}

function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

function json(v) {
  return h("pre", { class: "json" }, JSON.stringify(v, null, 2));
}

function taskLink(id, text) {
  return h("a", { href: `#/tasks/${encodeURIComponent(id)}`, class: "mono" }, text || id);
}

function hashQuery() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  return { path, params: new URLSearchParams(qs || "") };
}

function setView(title, ...children) {
  document.title = `${title} · absurd-host`;
  const view = document.getElementById("view");
  view.replaceChildren(h("h2", { id: "view-title" }, title), ...children.filter((c) => c !== null && c !== undefined && c !== false));
  for (const a of document.querySelectorAll("nav a")) {
    const active = a.dataset.view === currentView();
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function currentView() {
  const { path } = hashQuery();
  if (path.startsWith("/tasks")) return "tasks";
  if (path.startsWith("/workers")) return "workers";
  if (path.startsWith("/schedules")) return "schedules";
  return "overview";
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "None.");
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

// ---- health (header) -------------------------------------------------------------------------

async function loadHealth() {
  try {
    const resp = await fetch(`${API}/health/detailed`, {
      headers: sessionStorage.getItem(TOKEN_KEY) ? { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` } : {},
    });
    if (resp.status === 401) {
      document.getElementById("health").textContent = "Health: token needed";
      askToken();
      return null;
    }
    const v = await resp.json();
    const el = document.getElementById("health");
    el.replaceChildren("Health: ", h("span", { class: `state health-${v.status}` }, v.status), ` — ${v.message}`);
    return v;
  } catch (e) {
    document.getElementById("health").textContent = `Health: unknown (${e.message})`;
    return null;
  }
}

// ---- overview --------------------------------------------------------------------------------

/// Completions (blue) and failures (red) per minute, from GET /queues/{q}/throughput.
function sparkline(queue, tp) {
  const w = 180;
  const ht = 26;
  const buckets = (tp && tp.buckets) || [];
  if (!buckets.length) return h("span", { class: "muted" }, "–");
  const done = buckets.map((b) => b.completed);
  const failed = buckets.map((b) => b.failed);
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  const max = Math.max(1, ...done, ...failed);
  const step = buckets.length > 1 ? w / (buckets.length - 1) : w;
  const y = (v) => (ht - 2 - (v / max) * (ht - 4)).toFixed(1);
  const points = (vals) => vals.map((v, i) => `${(i * step).toFixed(1)},${y(v)}`).join(" ");
  const label = `Last ${buckets.length} minutes in ${queue}: ${sum(done)} completed, ${sum(failed)} failed (peak ${max} per minute)`;
  const s = svg("svg", {
    width: w,
    height: ht,
    viewBox: `0 0 ${w} ${ht}`,
    role: "img",
    "aria-label": label,
    class: "spark",
    "data-queue": queue,
    "data-points": buckets.length,
    "data-completed": sum(done),
    "data-failed": sum(failed),
  });
  const title = svg("title", {});
  title.textContent = `${label}; per minute, oldest first: ${done.join(", ")}`;
  s.append(title, svg("line", { x1: 0, y1: ht - 2, x2: w, y2: ht - 2, stroke: "#d0d7de", "stroke-width": 1 }));
  s.append(svg("polyline", { class: "spark-completed", points: points(done), fill: "none", stroke: "currentColor", "stroke-width": 1.5 }));
  if (sum(failed)) s.append(svg("polyline", { class: "spark-failed", points: points(failed), fill: "none", stroke: "#cf222e", "stroke-width": 1.2, "stroke-dasharray": "3 2" }));
  return s;
}

function isDlq(name, health) {
  return name.endsWith("-dlq") || name === `${health.queue}-dlq`;
}

async function overview(gen) {
  const [names, health, maintenance] = await Promise.all([
    api("/queues"),
    loadHealth(),
    api("/maintenance").catch(() => null),
  ]);
  const [stats, throughput] = await Promise.all([
    Promise.all(names.map((q) => api(`/queues/${encodeURIComponent(q)}/stats`).catch(() => null))),
    Promise.all(names.map((q) => api(`/queues/${encodeURIComponent(q)}/throughput?minutes=${SPARK_MINUTES}`).catch(() => null))),
  ]);
  if (gen !== generation) return;
  const tpOf = new Map(throughput.filter(Boolean).map((t) => [t.queue_name, t]));
  const rows = stats.filter(Boolean).map((s) => {
    const link = (state, n) =>
      h("a", { href: `#/tasks?queue=${encodeURIComponent(s.queue_name)}${state ? `&state=${state}` : ""}`, "aria-label": `${n} ${state || "total"} tasks in ${s.queue_name}` }, String(n));
    return [
      h("span", {}, h("a", { href: `#/tasks?queue=${encodeURIComponent(s.queue_name)}`, class: "qname" }, s.queue_name), health && isDlq(s.queue_name, health) ? h("span", { class: "muted" }, " (dead letters)") : null),
      ...STATES.map((st) => h("span", { class: s[st] ? `count count-${st}` : "count zero", "data-queue": s.queue_name, "data-state": st }, link(st, s[st]))),
      h("span", { "data-queue": s.queue_name, "data-state": "total" }, link("", s.total)),
      s.oldest_pending_age_seconds === null ? h("span", { class: "muted" }, "none pending") : duration(s.oldest_pending_age_seconds),
      h("span", { class: "tp" }, `${s.throughput.completed_last_1m} / ${s.throughput.completed_last_5m} / ${s.throughput.completed_last_15m}`),
      sparkline(s.queue_name, tpOf.get(s.queue_name)),
    ];
  });
  const cards = [];
  if (health && health.workers) {
    cards.push(
      h("div", { class: "card" }, h("h3", {}, "Active workers"), h("p", { class: "big", id: "active-workers" }, String(health.workers.active)), h("p", { class: "muted" }, `${health.workers.recent} seen in the last 5 min`)),
      h("div", { class: "card" }, h("h3", {}, "Dead letters pending"), h("p", { class: "big", id: "dead-letters" }, String(health.dead_letters_pending ?? 0))),
      h("div", { class: "card" }, h("h3", {}, "Queue depth"), h("p", { class: "big" }, String(health.queue_depth ?? "–")), h("p", { class: "muted" }, "pending + running, without dead-letter queues")),
      h("div", { class: "card" }, h("h3", {}, "Oldest pending"), h("p", { class: "big" }, duration(health.oldest_pending_age_seconds))),
    );
  }
  cards.push(maintenanceCard(maintenance));
  const issues = health ? [...(health.alerts || []), ...(health.warnings || [])] : [];
  setView(
    "Overview",
    h("div", { class: "cards" }, cards),
    issues.length ? h("ul", { class: "issues" }, issues.map((i) => h("li", { class: `issue-${i.level}` }, h("strong", {}, `${i.level}: `), i.message))) : null,
    table(
      "Queues: tasks by state (links open the filtered list); throughput = completions in the last 1 / 5 / 15 minutes; last hour = completions (line) and failures (dashed red) per minute",
      ["Queue", ...STATES.map((s) => stateBadge(s)), "Total", "Oldest pending", "Done 1/5/15 min", "Last hour"],
      rows,
      "No queues yet: a worker creates its queues at start, or run `absurd-host queue create`.",
    ),
  );
}

// The last maintenance pass (`absurd-host maintain`, or the worker elected by [maintenance]).
function maintenanceCard(m) {
  const last = m && m.runs && m.runs[0];
  if (!last) {
    return h("div", { class: "card", id: "maintenance" }, h("h3", {}, "Last maintenance"), h("p", { class: "big" }, "never"), h("p", { class: "muted" }, "set [maintenance] in absurd-host.toml, or run absurd-host maintain"));
  }
  const t = (last.report && last.report.totals) || {};
  const tasks = (t.completed || 0) + (t.failed || 0) + (t.cancelled || 0);
  const what = last.error ? `failed: ${last.error}` : `${tasks} tasks and ${t.events || 0} events deleted, by ${last.worker_id}`;
  return h("div", { class: "card", id: "maintenance" }, h("h3", {}, "Last maintenance"), h("p", { class: "big" }, ago(last.finished_at)), h("p", { class: last.error ? "issue-alert" : "muted" }, what));
}

// ---- task list -------------------------------------------------------------------------------

async function taskList(gen, params) {
  const queue = params.get("queue") || "";
  const state = params.get("state") || "";
  const name = params.get("name") || "";
  const from = params.get("from") || "";
  const to = params.get("to") || "";
  const text = params.get("q") || "";
  const cursor = params.get("cursor") || "";
  const back = params.get("back") || "";
  const q = new URLSearchParams({ limit: params.get("limit") || "25" });
  if (queue) q.set("queue_name", queue);
  if (state) q.set("status", state);
  if (name) q.set("task_name", name);
  if (from) q.set("enqueued_after", utcInput(from));
  if (to) q.set("enqueued_before", utcInput(to));
  if (text) q.set("q", text);
  if (cursor) q.set("cursor", cursor);
  const [queues, page] = await Promise.all([api("/queues"), api(`/tasks?${q}`)]);
  if (gen !== generation) return;
  const select = (id, label, value, options) =>
    h("div", { class: "field" }, h("label", { for: id }, label), h("select", { id, name: id }, h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o, selected: o === value }, o))));
  const form = h(
    "form",
    {
      class: "filters",
      "aria-label": "Filter tasks",
      onsubmit: (e) => {
        e.preventDefault();
        const f = new URLSearchParams();
        for (const k of ["queue", "state", "name", "from", "to", "q"]) {
          const v = form.elements[k].value.trim();
          if (v) f.set(k, v);
        }
        location.hash = `#/tasks?${f}`;
      },
    },
    select("queue", "Queue", queue, queues),
    select("state", "State", state, STATES),
    h("div", { class: "field" }, h("label", { for: "name" }, "Task name"), h("input", { id: "name", name: "name", value: name, placeholder: "e.g. echo" })),
    h("div", { class: "field" }, h("label", { for: "from" }, "Enqueued from (UTC)"), h("input", { id: "from", name: "from", type: "datetime-local", step: 1, value: from })),
    h("div", { class: "field" }, h("label", { for: "to" }, "Enqueued before (UTC)"), h("input", { id: "to", name: "to", type: "datetime-local", step: 1, value: to })),
    h("div", { class: "field" }, h("label", { for: "q" }, "Params contain"), h("input", { id: "q", name: "q", type: "search", value: text, maxlength: 200, placeholder: "text in params, any case" })),
    h("button", { type: "submit" }, "Apply"),
    h("a", { href: "#/tasks", class: "button secondary" }, "Clear"),
  );
  const rows = page.tasks.map((t) => [taskLink(t.task_id, t.task_id.slice(0, 8) + "…"), t.task_name, t.queue_name, stateBadge(t.status), `${t.attempts} / ${t.max_attempts}`, when(t.created_at)]);
  const here = new URLSearchParams(params);
  const nav = h("nav", { class: "pager", "aria-label": "Pages" });
  if (cursor) {
    const prev = new URLSearchParams(here);
    const stack = back ? back.split(",") : ["-"];
    const p = stack.pop();
    if (p && p !== "-") prev.set("cursor", p);
    else prev.delete("cursor");
    if (stack.length) prev.set("back", stack.join(","));
    else prev.delete("back");
    nav.append(h("a", { href: `#/tasks?${prev}`, class: "button secondary" }, "← Previous page"));
  }
  if (page.next_cursor) {
    const next = new URLSearchParams(here);
    next.set("cursor", page.next_cursor);
    next.set("back", back ? `${back},${cursor || "-"}` : cursor || "-");
    nav.append(h("a", { href: `#/tasks?${next}`, class: "button secondary" }, "Next page →"));
  }
  setView(
    "Tasks",
    form,
    h("p", { id: "task-total" }, `${page.total} task${page.total === 1 ? "" : "s"} match; showing ${page.tasks.length} (newest first).`),
    table("Tasks", ["Task", "Name", "Queue", "State", "Attempts", "Created"], rows, "No tasks match."),
    nav,
  );
}

/// A datetime-local value (no zone), read as UTC: "2025-01-01T12:00" -> "2025-01-01T12:00:00Z".
/// Anything else is passed on as typed (the API answers 400 naming the field).
function utcInput(v) {
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(v)) return `${v}:00Z`;
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$/.test(v)) return `${v}Z`;
  return v;
}

// ---- one task --------------------------------------------------------------------------------

function failureView(reason) {
  if (!reason) return h("span", { class: "muted" }, "–");
  const d = reason.details || {};
  const text = reason.name && reason.message ? `${reason.name}: ${reason.message}` : reason.message || JSON.stringify(reason);
  const extra = [];
  if (d.cause) extra.push(h("p", {}, h("strong", {}, "Trap cause: "), String(d.cause)));
  for (const k of ["stderr_tail", "stdout_tail"]) {
    if (d[k]) extra.push(h("p", {}, h("strong", {}, `${k.replace("_", " ")}:`)), h("pre", { class: "log" }, String(d[k])));
  }
  return h("div", { class: "failure" }, h("p", { class: "failure-text" }, text), extra, h("details", {}, h("summary", {}, "Full failure reason (JSON)"), json(reason)));
}

async function act(label, fn) {
  try {
    const msg = await fn();
    flash(msg, "ok");
  } catch (e) {
    flash(`${label} failed: ${e.detail || e.message}`, "error");
  }
  render();
}

function actions(t) {
  const box = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
  const live = ["pending", "running", "sleeping"].includes(t.status);
  const q = `queue_name=${encodeURIComponent(t.queue_name)}`;
  if (live) {
    const confirmBox = h("span", { class: "confirm", hidden: true });
    const ask = h("button", { type: "button", id: "cancel-task", class: "danger", onclick: () => { confirmBox.hidden = false; confirmBox.querySelector("button").focus(); } }, "Cancel task…");
    confirmBox.append(
      "Cancel this task? ",
      h("button", { type: "button", id: "confirm-cancel", class: "danger", onclick: () => act("Cancel", async () => (await api(`/tasks/${t.task_id}?${q}`, { method: "DELETE" })).message) }, "Yes, cancel it"),
      " ",
      h("button", { type: "button", class: "secondary", onclick: () => { confirmBox.hidden = true; ask.focus(); } }, "No"),
    );
    box.append(ask, " ", confirmBox);
  }
  if (t.status === "failed") {
    box.append(
      h("button", { type: "button", id: "retry-task", onclick: () => act("Retry", async () => { const r = await api(`/tasks/${t.task_id}/retry?${q}`, { method: "POST", body: { spawn_new: false } }); return `Task retried in place: attempt ${r.attempt}.`; }) }, "Retry in place"),
      " ",
      h("button", {
        type: "button",
        id: "retry-new",
        onclick: () => act("Retry as new", async () => {
          const r = await api(`/tasks/${t.task_id}/retry?${q}`, { method: "POST", body: { spawn_new: true } });
          location.hash = `#/tasks/${r.task_id}`;
          return `Spawned a new task ${r.task_id}.`;
        }),
      }, "Retry as a new task"),
    );
  }
  const p = t.params || {};
  if (t.task_name === "dead-letter" && p.original_task_name && p.original_queue) {
    box.append(
      " ",
      h("button", {
        type: "button",
        id: "respawn",
        onclick: () => act("Re-spawn", async () => {
          const r = await api("/tasks", { method: "POST", body: { queue_name: p.original_queue, task_name: p.original_task_name, params: p.params || {} } });
          location.hash = `#/tasks/${r.task_id}`;
          return `Re-spawned ${p.original_task_name} in ${p.original_queue} as ${r.task_id}.`;
        }),
      }, `Re-spawn ${p.original_task_name} in ${p.original_queue}`),
    );
  }
  if (!box.childNodes.length) box.append(h("span", { class: "muted" }, `No actions for a ${t.status} task.`));
  return box;
}

// A workflow's DAG: one column per depth (a node's depth is one more than its deepest
// dependency), each node with its state and a link to its child task.
function workflowView(w) {
  const depth = new Map();
  const byId = new Map(w.nodes.map((n) => [n.id, n]));
  const depthOf = (n, seen = new Set()) => {
    if (depth.has(n.id)) return depth.get(n.id);
    if (seen.has(n.id)) return 0; // a cycle: the API refuses them, but never loop
    seen.add(n.id);
    const d = n.depends_on.reduce((m, id) => (byId.has(id) ? Math.max(m, depthOf(byId.get(id), seen) + 1) : m), 0);
    depth.set(n.id, d);
    return d;
  };
  const columns = [];
  for (const n of w.nodes) (columns[depthOf(n)] ||= []).push(n);
  const card = (n) =>
    h(
      "li",
      { class: `dag-node dag-${n.state}`, "data-node": n.id, "data-state": n.state },
      h("strong", { class: "mono" }, n.id),
      n.task !== n.id ? h("span", { class: "muted" }, ` (${n.task})`) : null,
      " ",
      h("span", { class: `state state-${n.state}` }, n.state),
      n.optional ? h("span", { class: "muted" }, " optional") : null,
      h("br"),
      n.task_id ? taskLink(n.task_id, `task …${n.task_id.slice(-12)}`) : h("span", { class: "muted" }, "not spawned"),
      n.queue_name !== w.queue_name ? h("span", { class: "muted" }, ` in ${n.queue_name}`) : null,
      n.depends_on.length ? h("div", { class: "muted" }, `after ${n.depends_on.join(", ")}`) : null,
      n.error ? h("div", { class: "issue-alert" }, n.error) : null,
    );
  const counts = {};
  for (const n of w.nodes) counts[n.state] = (counts[n.state] || 0) + 1;
  return h(
    "section",
    { id: "workflow", "aria-labelledby": "wf-h" },
    h("h3", { id: "wf-h" }, `Workflow ${w.name || "(inline)"}: ${w.nodes.length} node${w.nodes.length === 1 ? "" : "s"}`),
    h("p", { class: "muted" }, Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", "), ". Columns run left to right: a node starts when those it comes after have completed."),
    h("div", { class: "dag" }, columns.map((col, i) => h("ol", { class: "dag-col", "aria-label": `Step ${i + 1}` }, col.map(card)))),
  );
}

async function taskPage(gen, id) {
  const t = await api(`/tasks/${encodeURIComponent(id)}`);
  let wf = null;
  if (t.task_name === "workflow") {
    wf = await api(`/workflows/${encodeURIComponent(t.task_id)}?queue_name=${encodeURIComponent(t.queue_name)}`).catch((e) => ({ failed: e.detail || e.message }));
  }
  if (gen !== generation) return;
  showingWorkflow = Boolean(wf);
  const parent = t.headers && typeof t.headers[PARENT_HEADER] === "string" ? t.headers[PARENT_HEADER] : null;
  const dl = h("dl", { class: "facts" });
  const fact = (k, v) => dl.append(h("dt", {}, k), h("dd", {}, v));
  fact("State", stateBadge(t.status));
  fact("Task name", t.task_name);
  fact("Queue", h("a", { href: `#/tasks?queue=${encodeURIComponent(t.queue_name)}` }, t.queue_name));
  fact("Task id", h("span", { class: "mono" }, t.task_id));
  fact("Attempts", `${t.attempts} of ${t.max_attempts}`);
  fact("Timeout", t.timeout_sec ? h("span", { id: "task-timeout" }, `${t.timeout_sec} s (the task's own; its type's timeout if lower)`) : "its type's");
  fact("Created", when(t.created_at));
  fact("Last started", when(t.claimed_at));
  fact("Finished", when(t.completed_at));
  fact("Worker", t.worker_id || "–");
  if (t.cancelled_at) fact("Cancelled", when(t.cancelled_at));
  if (t.idempotency_key) fact("Idempotency key", h("span", { class: "mono" }, t.idempotency_key));
  if (t.params && t.params.original_task_id) fact("Original task", taskLink(t.params.original_task_id));
  if (parent) fact("Workflow", h("span", { id: "parent-workflow" }, taskLink(parent), t.headers[NODE_HEADER] ? ` (node ${t.headers[NODE_HEADER]})` : ""));
  const runs = (t.runs || []).map((r) => [String(r.attempt), stateBadge(r.state), r.worker_id || "–", when(r.started_at), when(r.completed_at || r.failed_at), r.wake_event || (r.available_at && r.state === "sleeping" ? `until ${utc(r.available_at)}` : "–"), failureView(r.failure_reason)]);
  const cps = (t.checkpoints || []).map((c) => [c.checkpoint_name, c.status || "–", when(c.updated_at), json(c.state)]);
  const waits = (t.waits || []).map((w) => [w.event_name, w.step_name || "–", when(w.timeout_at)]);
  setView(
    `Task ${t.task_name}`,
    h("p", {}, h("a", { href: "#/tasks" }, "← All tasks"), parent ? [" · ", h("a", { href: `#/tasks/${encodeURIComponent(parent)}` }, "↑ Its workflow")] : null),
    actions(t),
    dl,
    wf && wf.failed ? h("p", { class: "flash flash-error" }, `Workflow: ${wf.failed}`) : wf ? workflowView(wf) : null,
    t.error ? h("section", { class: "error-box", "aria-labelledby": "err-h" }, h("h3", { id: "err-h" }, "Error"), h("p", { id: "task-error" }, t.error)) : null,
    h("section", {}, h("h3", {}, "Runs"), table("Runs, oldest first", ["Attempt", "State", "Worker", "Started", "Ended", "Waiting for", "Failure"], runs, "No runs.")),
    h("section", {}, h("h3", {}, "Checkpoints"), table("Checkpoints", ["Name", "Status", "Updated", "State (JSON)"], cps, "No checkpoints.")),
    h("section", {}, h("h3", {}, "Event waits"), table("Events this task waits for", ["Event", "Step", "Times out"], waits, "Not waiting for any event.")),
    h("section", {}, h("h3", {}, "Params"), json(t.params)),
    t.result !== null && t.result !== undefined ? h("section", {}, h("h3", {}, "Result"), json(t.result)) : null,
    h("details", {}, h("summary", {}, "Headers, retry strategy, cancellation"), json({ headers: t.headers, retry_strategy: t.retry_strategy, cancellation: t.cancellation })),
  );
}

// ---- workers ---------------------------------------------------------------------------------

// A worker's state as the API derives it (active/idle/stale/crashed), and whether it runs tasks.
const WORKER_STATE_CLASS = { active: "state-running", idle: "state-idle", stale: "state-sleeping", crashed: "state-failed" };
function workerState(info, busy) {
  const state = info ? info.state : busy ? "active" : "idle";
  return h("span", { class: `state ${WORKER_STATE_CLASS[state] || "state-idle"}`, "data-worker-state": state }, busy ? `${state}, busy` : state);
}

async function workers(gen) {
  const [activity, queues] = await Promise.all([api(`/workers?minutes=${WORKER_MINUTES}`), api("/queues"), loadHealth()]);
  // In-flight tasks: running tasks of every queue, with their worker from the task details.
  const lists = await Promise.all(queues.map((q) => api(`/tasks?queue_name=${encodeURIComponent(q)}&status=running&limit=50`).catch(() => ({ tasks: [] }))));
  const running = lists.flatMap((l) => l.tasks);
  const details = await Promise.all(running.map((t) => api(`/tasks/${t.task_id}?queue_name=${encodeURIComponent(t.queue_name)}`).catch(() => null)));
  if (gen !== generation) return;
  const byWorker = new Map();
  for (const w of activity.workers) byWorker.set(w.worker_id, { info: w, tasks: [] });
  for (const t of details.filter(Boolean)) {
    const w = t.worker_id || "(unknown)";
    if (!byWorker.has(w)) byWorker.set(w, { info: null, tasks: [] });
    byWorker.get(w).tasks.push(t);
  }
  const count = (w, key, info, cls) => {
    const n = info ? info[key] : null;
    return h("span", { class: n ? `count ${cls || ""}` : "count zero", "data-worker": w, "data-count": key }, n === null ? "–" : String(n));
  };
  const rows = [...byWorker.entries()].map(([w, { info, tasks }]) => [
    h("span", { class: "mono" }, w),
    workerState(info, tasks.length > 0 || Boolean(info && info.running)),
    info ? when(info.last_seen) : h("span", { class: "muted" }, "–"),
    String(tasks.length),
    count(w, "completed", info),
    count(w, "failed", info, "bad"),
    count(w, "sandbox_failures", info, "bad"),
    count(w, "subprocess_failures", info, "bad"),
    count(w, "timeouts", info, "bad"),
    tasks.length ? h("ul", { class: "plain" }, tasks.map((t) => h("li", {}, taskLink(t.task_id, `${t.task_name} (${t.queue_name})`), " since ", when(t.claimed_at)))) : h("span", { class: "muted" }, "–"),
  ]);
  // The failure names behind each count come from the API (the host's one list of them), so
  // this page never falls behind when a name is added.
  const counted = activity.failure_names || {};
  const namesOf = (key) => (counted[key] || []).join(", ") || "–";
  const countHeader = (key, label) => h("abbr", { title: `Failed runs named ${namesOf(key)}`, "data-failure-names": key }, label);
  setView(
    "Workers",
    h("p", { class: "muted" }, `Workers are seen from task runs (those that started a run in the last ${WORKER_MINUTES} minutes or are running one now) and from the heartbeats they send (POST /api/absurd/workers/{id}/heartbeat, for workers such as the pipeline's Python ones). Status: active if heard from in the last 10 s or holding a live lease, idle within 60 s, stale within 180 s, else crashed; an absurd-host worker with nothing to do sends nothing, so it turns crashed three minutes after its last run. Counts are of its runs; sandbox failures are traps, fuel, memory, limit and result errors of WebAssembly tasks, subprocess failures are native programs that failed, were killed, reported no result or could not start. An idle fleet that sends no heartbeats shows no workers after the window.`),
    h(
      "details",
      { class: "muted" },
      h("summary", {}, "Which failure names each count counts"),
      h(
        "dl",
        { id: "failure-names" },
        [["sandbox_failures", "Sandbox failures"], ["subprocess_failures", "Subprocess failures"], ["timeouts", "Timeouts"]].map(([key, label]) => [
          h("dt", {}, label),
          h("dd", { class: "mono", "data-failure-names": key }, namesOf(key)),
        ]).flat(),
      ),
    ),
    table(
      `Workers seen in the last ${WORKER_MINUTES} minutes, most recent first`,
      ["Worker", "Status", "Last seen", "In flight", "Completed", "Failed", countHeader("sandbox_failures", "Sandbox failures"), countHeader("subprocess_failures", "Subprocess failures"), countHeader("timeouts", "Timeouts"), "Tasks"],
      rows,
      `No worker seen in the last ${WORKER_MINUTES} minutes.`,
    ),
  );
}

// ---- schedules -------------------------------------------------------------------------------

async function schedules(gen) {
  const [list] = await Promise.all([api("/schedules"), loadHealth()]);
  if (gen !== generation) return;
  const rows = list.schedules.map((s) => [
    h("span", { class: "mono", "data-schedule": s.name }, s.name),
    h("span", { class: "mono" }, s.cron),
    s.timezone,
    h("span", {}, s.task_name, h("span", { class: "muted" }, ` (${s.queue_name})`)),
    s.catch_up,
    s.enabled ? h("span", { class: "state state-running" }, "enabled") : h("span", { class: "state state-idle" }, "disabled"),
    h("span", { "data-next-run": s.name }, when(s.next_run_at)),
    h("span", { "data-last-run": s.name }, s.last_run_at ? when(s.last_run_at) : h("span", { class: "muted" }, "never")),
    s.last_task_id ? taskLink(s.last_task_id, s.last_task_id.slice(0, 8)) : h("span", { class: "muted" }, "–"),
    s.source === "config" ? "absurd-host.toml" : "API",
  ]);
  setView(
    "Schedules",
    h("p", { class: "muted" }, `Cron schedules fired by the workers' scheduler (each tick once, whatever the number of workers). Times by the database clock, ${utc(list.now)}. A next run in the past is due: no worker has fired it yet.`),
    table(
      "Schedules, by name",
      ["Name", "Cron", "Time zone", "Task (queue)", "Catch-up", "Status", "Next run", "Last run", "Last task", "Defined in"],
      rows,
      "No schedules. Define them with [[schedules]] in absurd-host.toml or POST /api/absurd/schedules.",
    ),
  );
}

// ---- live updates ----------------------------------------------------------------------------
// The server's Server-Sent Events stream (/api/absurd/stream) says when tasks change, whichever
// worker changed them; each update refreshes the view (at most once a second). It is read with
// fetch, not EventSource, so that it can send the token. While it is down the page polls every
// REFRESH_MS and reconnects with a growing delay; while it is up, it still polls, rarely.

const live = { up: false, retryMs: 2000, lastRefresh: 0, pending: null };

function liveStatus() {
  document.body.dataset.live = live.up ? "stream" : "polling";
  const el = document.getElementById("live");
  if (el) el.textContent = live.up ? "Live updates on." : `Live updates off: refreshing every ${REFRESH_MS / 1000} s.`;
}

function pollEvery() {
  return live.up ? LIVE_FALLBACK_MS : REFRESH_MS;
}

function relevant(msg) {
  if (msg.type !== "task_update" && msg.type !== "queue_stats_update") return false;
  const { path } = hashQuery();
  if (path.startsWith("/tasks/")) {
    if (showingWorkflow) return msg.type === "task_update";
    return msg.type === "task_update" && msg.task_id === decodeURIComponent(path.slice("/tasks/".length));
  }
  return true;
}

function liveRefresh() {
  if (live.pending) return;
  const wait = Math.max(0, live.lastRefresh + LIVE_MIN_MS - Date.now());
  live.pending = setTimeout(() => {
    live.pending = null;
    live.lastRefresh = Date.now();
    refreshLater();
  }, wait);
}

async function liveConnect() {
  const headers = { Accept: "text/event-stream" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const resp = await fetch(`${API}/stream`, { headers, cache: "no-store" });
    if (!resp.ok || !resp.body) throw new Error(`${resp.status}`);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (!line.startsWith("data:")) continue;
        let msg;
        try {
          msg = JSON.parse(line.slice(5));
        } catch (_) {
          continue;
        }
        if (msg.type === "connected") {
          live.up = true;
          live.retryMs = 2000;
          liveStatus();
        } else if (relevant(msg)) {
          liveRefresh();
        }
      }
      if (buf.length > 1 << 20) break; // a line this long is not ours
    }
  } catch (_) {
    // Refused (too many subscribers, no token yet) or dropped: poll, and try again later.
  }
  live.up = false;
  liveStatus();
  setTimeout(liveConnect, live.retryMs);
  live.retryMs = Math.min(live.retryMs * 2, LIVE_RETRY_MAX_MS);
}

// ---- routing ---------------------------------------------------------------------------------

function refreshLater() {
  const busy = document.activeElement && ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  const open = document.querySelector("#view details[open], .confirm:not([hidden])");
  if (busy || open || !document.getElementById("token").hidden) {
    clearTimeout(timer);
    timer = setTimeout(refreshLater, Math.min(pollEvery(), REFRESH_MS));
  } else render();
}

async function render() {
  const gen = ++generation;
  const { path, params } = hashQuery();
  try {
    if (path.startsWith("/tasks/")) await taskPage(gen, decodeURIComponent(path.slice("/tasks/".length)));
    else if (path.startsWith("/tasks")) await taskList(gen, params);
    else if (path.startsWith("/workers")) await workers(gen);
    else if (path.startsWith("/schedules")) await schedules(gen);
    else await overview(gen);
    if (path.startsWith("/tasks")) await loadHealth();
    if (gen === generation) {
      document.getElementById("refreshed").textContent = `Last refreshed ${utc(new Date().toISOString())}.`;
      document.body.dataset.ready = currentView();
    }
  } catch (e) {
    if (gen !== generation) return;
    if (e.status === 401) setView("Sign in", h("p", {}, "Enter the API token above to continue."));
    else setView("Error", h("p", { class: "flash flash-error" }, e.detail || e.message));
    document.body.dataset.ready = "error";
  }
  clearTimeout(timer);
  // Auto-refresh, but not while the user types, has details open or is confirming.
  timer = setTimeout(refreshLater, pollEvery());
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    document.getElementById("token").hidden = true;
    render();
  });
  window.addEventListener("hashchange", () => {
    // Keep a message that an action has just shown (retry as new moves to the new task).
    if (Date.now() - flashedAt > 1000) document.getElementById("flash").replaceChildren();
    render();
    document.getElementById("main").focus({ preventScroll: true });
  });
  liveStatus();
  render();
  liveConnect();
});
