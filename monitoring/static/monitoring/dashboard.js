/* Hive live dashboard.
 *
 * Initial state comes from the REST API; after that everything is driven by the
 * /ws/events WebSocket (session-authenticated): cluster.status snapshots, agent.*,
 * task.* (including task.progress with the streamed text) and alerts.*.
 *
 * Protocol notes:
 *  - every topic has its own contiguous sequence number; we remember the last one
 *    seen per topic, resubscribe with `last_seq` after a reconnect (the server
 *    replays what we missed), skip duplicates, and reload from REST when a gap
 *    cannot be filled (the server's log was trimmed, or Redis was reset).
 *  - task.progress carries `delta` and `offset`, both in Unicode code points (the
 *    server is Python); JavaScript strings count UTF-16 units, so we count code
 *    points ourselves.
 *
 * No framework, and server data only ever goes into the page as text nodes.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("hive-config").textContent);
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrfToken = csrfMeta ? csrfMeta.getAttribute("content") : "";

  var TOPICS = ["cluster.status", "agent.*", "task.*", "alerts.*"];
  var TERMINAL = { completed: true, failed: true, cancelled: true };
  var RANK = { pending: 0, queued: 1, running: 2, completed: 3, failed: 3, cancelled: 3 };
  var AGENT_STATUSES = ["online", "busy", "degraded", "offline", "draining"];
  var MAX_RECENT = 20;
  var MAX_ALERTS = 30;
  var PING_EVERY_MS = 20000;
  var PONG_TIMEOUT_MS = 10000;

  // ---------------------------------------------------------------- helpers --

  function $(id) { return document.getElementById(id); }

  /* el("span", {className: "x", dataset: {a: 1}, title: "t"}, "text", childNode) */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === undefined || value === null) return;
        if (key === "dataset") {
          Object.keys(value).forEach(function (k) { node.dataset[k] = String(value[k]); });
        } else if (key === "className") {
          node.className = value;
        } else if (key === "text") {
          node.textContent = String(value);
        } else if (key === "onclick") {
          node.addEventListener("click", value);
        } else {
          node.setAttribute(key, String(value));
        }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(id, value) {
    var node = $(id);
    if (node) node.textContent = value === null || value === undefined ? "–" : String(value);
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function badge(status, extraClass) {
    var s = String(status || "unknown");
    return el("span", { className: "badge s-" + s.replace(/[^a-z0-9_-]/gi, "") + (extraClass ? " " + extraClass : ""), text: s });
  }

  /* Length in Unicode code points (what Python's len() counts). */
  function cpLength(s) {
    var n = 0;
    for (var i = 0; i < s.length; i++) {
      var c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        var d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) i++;
      }
      n++;
    }
    return n;
  }

  /* s without its first `count` code points. */
  function cpDrop(s, count) {
    if (count <= 0) return s;
    var i = 0;
    while (count > 0 && i < s.length) {
      var c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        var d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) i++;
      }
      i++;
      count--;
    }
    return s.slice(i);
  }

  function byTime(a, b) {
    return (parseTime(a) || 0) - (parseTime(b) || 0);
  }

  function parseTime(iso) {
    if (!iso) return null;
    var t = Date.parse(iso);
    return isNaN(t) ? null : t;
  }

  function clock(iso) {
    var t = parseTime(iso);
    if (t === null) return "";
    return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    seconds = Math.max(0, seconds);
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
    var m = Math.floor(seconds / 60);
    if (m < 60) return m + " min " + Math.floor(seconds % 60) + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function num(value, digits) {
    if (value === null || value === undefined || isNaN(value)) return "–";
    return Number(value).toFixed(digits === undefined ? 1 : digits);
  }

  function flattenErrors(value, prefix) {
    var out = [];
    if (Array.isArray(value)) {
      value.forEach(function (v) { out = out.concat(flattenErrors(v, prefix)); });
    } else if (value && typeof value === "object") {
      Object.keys(value).forEach(function (k) {
        out = out.concat(flattenErrors(value[k], prefix ? prefix + "." + k : k));
      });
    } else if (value !== null && value !== undefined) {
      out.push(prefix ? prefix + ": " + value : String(value));
    }
    return out;
  }

  // ------------------------------------------------------------------- API --

  function api(method, path, body) {
    var headers = { Accept: "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(config.apiRoot + path, init).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      var parse = type.indexOf("json") >= 0 ? response.json() : response.text().then(function (t) {
        return { error: response.status + " " + response.statusText + (t ? ": " + t.slice(0, 200) : "") };
      });
      return parse.catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) signedOut();
        return { ok: response.ok, status: response.status, data: data || {} };
      });
    }, function (err) {
      return { ok: false, status: 0, data: { error: "Network error: " + (err && err.message ? err.message : err) } };
    });
  }

  // --------------------------------------------------------------- notices --

  var noticeByKey = {};

  /* A small, dismissible message in the corner; the same key updates one notice. */
  function notify(message, kind, key, sticky) {
    kind = kind || "warn";
    key = key || message;
    var existing = noticeByKey[key];
    if (existing) {
      existing.text.textContent = message;
      existing.node.className = "notice " + kind;
      if (existing.timer) clearTimeout(existing.timer);
    } else {
      var text = el("span", { text: message });
      var close = el("button", { type: "button", title: "Dismiss", "aria-label": "Dismiss", text: "×" });
      var node = el("div", { className: "notice " + kind, role: kind === "error" ? "alert" : "status" }, text, close);
      existing = noticeByKey[key] = { node: node, text: text, timer: null };
      close.addEventListener("click", function () { dismiss(key); });
      $("notices").appendChild(node);
    }
    existing.timer = sticky ? null : setTimeout(function () { dismiss(key); }, kind === "error" ? 15000 : 8000);
  }

  function dismiss(key) {
    var n = noticeByKey[key];
    if (!n) return;
    if (n.timer) clearTimeout(n.timer);
    if (n.node.parentNode) n.node.parentNode.removeChild(n.node);
    delete noticeByKey[key];
  }

  // ----------------------------------------------------------------- state --

  var state = {
    cluster: null,
    clusterReceivedAt: 0,
    agents: new Map(),   // agent_id -> agent
    tasks: new Map(),    // task id -> task
    alerts: [],
    loaded: false,
  };

  // --------------------------------------------------------------- cluster --

  function applyCluster(snapshot) {
    if (!snapshot || typeof snapshot !== "object") return;
    var current = state.cluster && parseTime(state.cluster.timestamp);
    var incoming = parseTime(snapshot.timestamp);
    if (current !== null && incoming !== null && incoming < current) return;  // an older snapshot
    state.cluster = snapshot;
    state.clusterReceivedAt = Date.now();
    renderCluster();
  }

  function renderCluster() {
    var c = state.cluster;
    if (!c) return;
    var agents = c.agents || {};
    setText("agents-total", agents.total);
    var chips = $("agents-by-status");
    clear(chips);
    AGENT_STATUSES.forEach(function (s) {
      if (agents[s]) chips.appendChild(el("span", { className: "badge s-" + s, text: s + " " + agents[s] }));
    });
    var slots = c.slots || {};
    setText("slots-busy", slots.busy);
    setText("slots-total", slots.total);
    var pct = slots.total ? Math.min(100, Math.round(100 * (slots.busy || 0) / slots.total)) : 0;
    $("slots-bar").style.width = pct + "%";
    var q = c.queue || {};
    var by = q.pending_by_priority || {};
    for (var p = 5; p >= 1; p--) setText("q-" + p, by[String(p)] || 0);
    setText("q-total", q.pending);
    var live = liveQueueCounts(c);
    setText("queued-count", live.queued);
    setText("running-count", live.running);
    var hour = c.last_hour || {};
    setText("hour-completed", hour.completed);
    setText("hour-failed", hour.failed);
    renderOldestWait();
    setText("cluster-updated", "updated " + clock(c.timestamp));
  }

  /* cluster.status snapshots come after scheduling passes, not when a task starts
   * or ends in between. The snapshot lists the tasks it saw running, so a task
   * running here but not there started since, and one there but finished here
   * ended since; counting those keeps the numbers live without counting twice.
   * (The snapshot's counts and its list come from separate queries, so a task
   * that started between them is in the list but still counted as queued: the
   * list wins.) */
  var RUNNING_LIST_LIMIT = 100;  // coordinator.status lists at most this many

  function liveQueueCounts(c) {
    var q = c.queue || {};
    var running = q.running || 0, queued = q.queued || 0;
    var listed = c.running_tasks || [];
    if (listed.length >= RUNNING_LIST_LIMIT) return { running: running, queued: queued };  // truncated list
    if (listed.length > running) queued = Math.max(0, queued - (listed.length - running));
    running = listed.length;
    var seen = new Set(listed.map(function (r) { return r.id; }));
    var started = 0, finished = 0;
    state.tasks.forEach(function (t) {
      if (t.status === "running" && !seen.has(t.id)) started++;
      if (TERMINAL[t.status] && seen.has(t.id)) finished++;
    });
    return { running: Math.max(0, running + started - finished), queued: Math.max(0, queued - started) };
  }

  /* A task took or gave back a slot on its agent: show it now; the agent list
   * is re-read from REST right after anyway. */
  function adjustSlots(agentId, from, to) {
    var a = agentId && state.agents.get(agentId);
    var holds = function (s) { return s === "queued" || s === "running"; };
    if (!a || !a.slots || holds(from) === holds(to)) return;
    var busy = a.slots.busy + (holds(to) ? 1 : -1);
    a.slots = Object.assign({}, a.slots, { busy: Math.max(0, Math.min(a.slots.total, busy)) });
    scheduleRender("agents");
  }

  function renderOldestWait() {
    var c = state.cluster;
    if (!c || !c.queue) return;
    var oldest = c.queue.oldest_pending_seconds;
    if (oldest === null || oldest === undefined) {
      setText("oldest-wait", "nothing waiting");
    } else {
      setText("oldest-wait", duration(oldest + (Date.now() - state.clusterReceivedAt) / 1000));
    }
  }

  // ---------------------------------------------------------------- agents --

  function applyAgents(list) {
    var seen = new Set();
    (list || []).forEach(function (a) {
      seen.add(a.agent_id);
      state.agents.set(a.agent_id, Object.assign(state.agents.get(a.agent_id) || {}, a));
    });
    state.agents.forEach(function (_, key) { if (!seen.has(key)) state.agents.delete(key); });
    scheduleRender("agents");
  }

  function applyAgentEvent(event) {
    var d = event.data || {};
    if (!d.agent_id) return;
    var a = state.agents.get(d.agent_id);
    if (!a) {
      a = { agent_id: d.agent_id, id: d.id, name: d.name, slots: null, models_loaded: [], models_available: [] };
      state.agents.set(d.agent_id, a);
    }
    if (d.name) a.name = d.name;
    if (d.status) a.status = d.status;
    if (d.endpoint) a.endpoint = d.endpoint;
    if (Array.isArray(d.models_loaded)) a.models_loaded = d.models_loaded;
    if (Array.isArray(d.models_available)) a.models_available = d.models_available;
    if (typeof d.tokens_per_second === "number") a.tokens_per_second = d.tokens_per_second;
    if (event.type === "agent.status_changed") a.last_error = d.reason || "";
    if (event.type === "agent.performance_update" && d.model && a.models_loaded.indexOf(d.model) < 0) {
      a.models_loaded = a.models_loaded.concat([d.model]);
    }
    scheduleRender("agents");
    // Slots and the full model lists are not in agent events: fetch them soon.
    refreshAgentsSoon();
  }

  var agentRefresh = { timer: null, last: 0, inFlight: false };

  /* Re-read /api/status/agents at most once a second (slot counts per agent). */
  function refreshAgentsSoon() {
    if (!config.canSeeAgents || agentRefresh.timer) return;
    var wait = Math.max(150, 1000 - (Date.now() - agentRefresh.last));
    agentRefresh.timer = setTimeout(function () {
      agentRefresh.timer = null;
      if (agentRefresh.inFlight) { refreshAgentsSoon(); return; }
      agentRefresh.inFlight = true;
      agentRefresh.last = Date.now();
      api("GET", "/status/agents").then(function (res) {
        agentRefresh.inFlight = false;
        if (res.ok) applyAgents(res.data.agents);
      });
    }, wait);
  }

  function renderAgents() {
    var body = $("agents-body");
    clear(body);
    var agents = Array.from(state.agents.values()).sort(function (a, b) {
      return String(a.name || a.agent_id).localeCompare(String(b.name || b.agent_id));
    });
    setText("agents-count", agents.length ? agents.length + " registered" : "");
    if (!agents.length) {
      body.appendChild(el("tr", { className: "placeholder" },
        el("td", { colspan: 5, text: config.canSeeAgents ? "No agents registered" : "Your role may not see agents" })));
    }
    var models = new Set();
    agents.forEach(function (a) {
      (a.models_available || []).forEach(function (m) { models.add(m); });
      var slots = a.slots;
      var slotCell = el("td", { className: "slots" });
      if (slots && typeof slots.total === "number") {
        slotCell.appendChild(document.createTextNode(slots.busy + " / " + slots.total));
        var dots = el("span", { className: "slot-dots", "aria-hidden": "true" });
        for (var i = 0; i < Math.min(slots.total, 16); i++) dots.appendChild(el("span", { className: i < slots.busy ? "on" : "" }));
        slotCell.appendChild(dots);
      } else {
        slotCell.appendChild(document.createTextNode("–"));
      }
      var loaded = el("td");
      (a.models_loaded || []).forEach(function (m) { loaded.appendChild(el("span", { className: "model", text: m })); });
      if (!(a.models_loaded || []).length) loaded.appendChild(el("span", { className: "muted small", text: "none" }));
      var nameCell = el("td", null,
        el("span", { className: "agent-name", text: a.name || a.agent_id }),
        el("span", { className: "agent-id", text: a.agent_id }));
      if (a.last_error && (a.status === "offline" || a.status === "degraded")) {
        nameCell.appendChild(el("span", { className: "error-line", text: a.last_error }));
      }
      body.appendChild(el("tr", { dataset: { agentId: a.agent_id, status: a.status || "" } },
        nameCell,
        el("td", null, badge(a.status || "unknown")),
        slotCell,
        loaded,
        el("td", { className: "num", text: a.tokens_per_second ? num(a.tokens_per_second) : "–" })));
    });
    var list = $("model-names");
    if (list) {
      clear(list);
      Array.from(models).sort().forEach(function (m) { list.appendChild(el("option", { value: m })); });
    }
  }

  // ----------------------------------------------------------------- tasks --

  function newTask(id) {
    var t = {
      id: id, title: "", status: "pending", priority: null, task_type: "", agent_id: null, model: "",
      output: "", outLen: 0, tokens: 0, attempts: 0, error: "", tps: null, timings: null,
      created_at: null, started_at: null, completed_at: null, waiting_reason: null, created_by: null,
      pending: [], node: null, fetch: { timer: null, tries: 0 },
    };
    state.tasks.set(id, t);
    return t;
  }

  function setOutput(t, text) {
    text = text || "";
    t.output = text;
    t.outLen = cpLength(text);
    t.pending = t.pending.filter(function (p) { return p.offset + p.len > t.outLen; });
    if (t.node) t.node.output.textContent = text;
  }

  function appendOutput(t, text, cps) {
    t.output += text;
    t.outLen += cps;
    if (!t.node) return;
    var pre = t.node.output;
    var atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.appendChild(document.createTextNode(text));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  /* Place a streamed piece at its offset: append, skip what we have, or hold it
   * until the missing part before it arrives (from the database). */
  function applyDelta(t, offset, delta) {
    if (typeof offset !== "number" || typeof delta !== "string" || !delta) return;
    var len = cpLength(delta);
    if (offset > t.outLen) {
      t.pending.push({ offset: offset, delta: delta, len: len });
      if (t.pending.length > 1000) t.pending.shift();
      fetchTaskSoon(t, 300);
      return;
    }
    if (offset + len > t.outLen) appendOutput(t, cpDrop(delta, t.outLen - offset), offset + len - t.outLen);
    drainPending(t);
  }

  function drainPending(t) {
    if (!t.pending.length) return;
    t.pending.sort(function (a, b) { return a.offset - b.offset; });
    var rest = [];
    t.pending.forEach(function (p) {
      if (p.offset <= t.outLen) {
        if (p.offset + p.len > t.outLen) appendOutput(t, cpDrop(p.delta, t.outLen - p.offset), p.offset + p.len - t.outLen);
      } else {
        rest.push(p);
      }
    });
    t.pending = rest;
  }

  function fetchTaskSoon(t, delay) {
    if (t.fetch.timer) return;
    t.fetch.timer = setTimeout(function () {
      api("GET", "/tasks/" + encodeURIComponent(t.id)).then(function (res) {
        t.fetch.timer = null;
        if (!res.ok) return;
        mergeRestTask(res.data);
        drainPending(t);
        if (t.pending.length && !TERMINAL[t.status] && t.fetch.tries++ < 30) fetchTaskSoon(t, 700);
        else t.fetch.tries = 0;
      });
    }, delay);
  }

  /* A task as the REST API returns it, merged with what events already told us. */
  function mergeRestTask(r) {
    if (!r || !r.id) return null;
    var t = state.tasks.get(r.id) || newTask(r.id);
    var newerAttempt = (r.attempts || 0) > (t.attempts || 0);
    var olderAttempt = (r.attempts || 0) < (t.attempts || 0) && !TERMINAL[r.status];
    var takeStatus = !olderAttempt && (RANK[r.status] >= RANK[t.status] || newerAttempt);
    t.title = r.title;
    t.priority = r.priority;
    t.task_type = r.task_type;
    t.created_at = r.created_at;
    t.created_by = r.created_by;
    t.waiting_reason = r.waiting_reason;
    if (takeStatus) {
      t.status = r.status;
      t.attempts = r.attempts || t.attempts;
      t.agent_id = r.assigned_agent ? r.assigned_agent.agent_id : t.agent_id;
      t.model = r.model_used || r.model || t.model;
      t.started_at = r.started_at || t.started_at;
      t.completed_at = r.completed_at;
      t.error = r.error || "";
      if (r.timings && Object.keys(r.timings).length) t.timings = r.timings;
      if (r.tokens_per_second) t.tps = r.tokens_per_second;
      if (TERMINAL[r.status]) {
        setOutput(t, r.result);
      } else if (r.status !== "running") {
        // A waiting task has no output yet (the database may still hold the
        // partial text of an earlier, failed attempt).
        if (newerAttempt) setOutput(t, "");
      } else if (newerAttempt || cpLength(r.result || "") > t.outLen) {
        setOutput(t, r.result);
      }
    }
    scheduleRender("tasks");
    return t;
  }

  function applyTaskEvent(event) {
    var d = event.data || {};
    var id = d.task_id;
    if (!id) return;
    var t = state.tasks.get(id);
    var isNew = !t;
    if (!t) t = newTask(id);
    var type = event.type;
    var at = event.timestamp;
    var before = isNew ? null : t.status;
    var agentBefore = t.agent_id;
    if (TERMINAL[t.status]) {
      // Only a new run after the task finished (a retry) may move it back.
      var restart = type === "task.assigned" || type === "task.started" || type === "task.retrying";
      var finished = parseTime(t.completed_at);
      if (!restart || (finished !== null && parseTime(at) !== null && parseTime(at) <= finished)) {
        if (type === "task.completed" && typeof d.result === "string") setOutput(t, d.result);
        return;
      }
      t.completed_at = null;
      t.error = "";
      t.tps = null;
      t.timings = null;
      t.attempts = 0;  // a retried task counts its attempts afresh
      setOutput(t, "");
    }
    if (d.title) t.title = d.title;
    if (d.priority) t.priority = d.priority;
    if (d.task_type) t.task_type = d.task_type;
    if (d.agent_id !== undefined && d.agent_id !== null) t.agent_id = d.agent_id;
    if (d.model) t.model = d.model;
    switch (type) {
      case "task.created":
        if (isNew) t.status = "pending";
        t.created_at = t.created_at || at;
        if (d.created_by) t.created_by = d.created_by;
        break;
      case "task.assigned":
        if (RANK[t.status] <= RANK.queued) t.status = "queued";
        t.waiting_reason = null;
        break;
      case "task.started":
        if (typeof d.attempt === "number" && d.attempt > t.attempts) {
          t.attempts = d.attempt;
          setOutput(t, "");  // a new attempt streams from offset 0
          t.tokens = 0;
        }
        t.status = "running";
        t.started_at = at;
        t.waiting_reason = null;
        break;
      case "task.progress":
        if (RANK[t.status] < RANK.running) t.status = "running";
        if (!t.started_at) t.started_at = at;
        applyDelta(t, d.offset, d.delta);
        if (typeof d.tokens === "number") t.tokens = Math.max(t.tokens, d.tokens);
        break;
      case "task.retrying":
        t.status = "pending";
        t.agent_id = null;
        t.error = d.error ? "retrying after: " + d.error : "";
        t.tokens = 0;
        setOutput(t, "");
        break;
      case "task.completed":
        t.status = "completed";
        t.completed_at = at;
        t.error = "";
        if (typeof d.result === "string") setOutput(t, d.result);
        if (d.timings) {
          t.timings = d.timings;
          if (d.timings.tokens_per_second) t.tps = d.timings.tokens_per_second;
          if (d.timings.eval_count) t.tokens = d.timings.eval_count;
        }
        break;
      case "task.failed":
        t.status = "failed";
        t.completed_at = at;
        t.error = d.error || "failed";
        break;
      case "task.cancelled":
        t.status = "cancelled";
        t.completed_at = at;
        t.error = d.error || "cancelled";
        if (typeof d.result === "string" && cpLength(d.result) >= t.outLen) setOutput(t, d.result);
        break;
      default:
        break;  // an event type this page does not know yet
    }
    if (isNew && !t.title) fetchTaskSoon(t, 200);  // we joined late: get the rest from REST
    if (t.status !== before && (before !== null || type === "task.created")) {
      scheduleRender("cluster");
      if (before !== null) adjustSlots(t.agent_id || agentBefore, before, t.status);
      refreshAgentsSoon();
    }
    scheduleRender("tasks");
  }

  function buildTaskNode(t) {
    var status = el("span", { className: "badge task-status" });
    var title = el("span", { className: "task-title" });
    var actions = el("span", { className: "task-actions" });
    var meta = el("div", { className: "task-meta" });
    var output = el("pre", { className: "task-output" });
    var error = el("div", { className: "task-error", hidden: "hidden" });
    var node = el("article", { className: "task", dataset: { taskId: t.id } },
      el("div", { className: "task-head" }, status, title, actions), meta, error, output);
    if (config.canCancel) {
      var cancel = el("button", { type: "button", className: "secondary cancel", text: "Cancel" });
      cancel.addEventListener("click", function () { cancelTask(t, cancel); });
      actions.appendChild(cancel);
    }
    t.node = { root: node, status: status, title: title, meta: meta, output: output, error: error, actions: actions };
    output.textContent = t.output;
    return t.node;
  }

  function metaParts(t) {
    var parts = [];
    if (t.priority) parts.push("P" + t.priority);
    if (t.task_type) parts.push(t.task_type);
    parts.push(t.agent_id ? "on " + t.agent_id : "unassigned");
    if (t.model) parts.push(t.model);
    if (t.status === "running") {
      var started = parseTime(t.started_at);
      var secs = started !== null ? (Date.now() - started) / 1000 : null;
      parts.push(t.tokens + " tokens");
      if (secs && secs > 0.5 && t.tokens) parts.push(num(t.tokens / secs) + " tok/s");
      if (secs !== null) parts.push(duration(secs));
    } else if (TERMINAL[t.status]) {
      if (t.tps) parts.push(num(t.tps) + " tok/s");
      if (t.timings && t.timings.eval_count) parts.push(t.timings.eval_count + " tokens");
      var s = parseTime(t.started_at), e = parseTime(t.completed_at);
      if (s !== null && e !== null && e >= s) parts.push("took " + duration((e - s) / 1000));
      if (t.completed_at) parts.push(clock(t.completed_at));
    } else if (t.status === "pending" && t.waiting_reason) {
      parts.push(t.waiting_reason);
    }
    if (t.created_by) parts.push("by " + t.created_by);
    return parts;
  }

  function updateTaskNode(t) {
    var n = t.node || buildTaskNode(t);
    n.root.dataset.status = t.status;
    n.status.textContent = t.status;
    n.status.className = "badge task-status s-" + t.status;
    n.title.textContent = t.title || "(task " + t.id.slice(0, 8) + ")";
    n.title.title = t.title || t.id;
    clear(n.meta);
    metaParts(t).forEach(function (p) { n.meta.appendChild(el("span", { text: p })); });
    n.error.textContent = t.error || "";
    n.error.hidden = !(t.error && t.status !== "completed");
    n.actions.hidden = !!TERMINAL[t.status];
  }

  function renderTasks() {
    var active = [];
    var recent = [];
    state.tasks.forEach(function (t) { (TERMINAL[t.status] ? recent : active).push(t); });
    active.sort(function (a, b) {
      return (RANK[b.status] - RANK[a.status]) || ((b.priority || 0) - (a.priority || 0)) ||
        byTime(a.created_at, b.created_at);
    });
    recent.sort(function (a, b) { return byTime(b.completed_at, a.completed_at); });
    recent.slice(MAX_RECENT).forEach(function (t) {
      if (t.node && t.node.root.parentNode) t.node.root.parentNode.removeChild(t.node.root);
      if (t.fetch.timer) clearTimeout(t.fetch.timer);
      state.tasks.delete(t.id);
    });
    recent = recent.slice(0, MAX_RECENT);
    place($("active-tasks"), active, $("no-active"));
    place($("recent-tasks"), recent, $("no-recent"));
    setText("active-count", active.length ? active.length + " active" : "");
  }

  /* Put the tasks' nodes into container in order, moving only what is out of place
   * (moving a node would reset the scroll position of its output). */
  function place(container, tasks, placeholder) {
    placeholder.hidden = tasks.length > 0;
    var at = placeholder.nextSibling;
    tasks.forEach(function (t) {
      updateTaskNode(t);
      var node = t.node.root;
      if (node !== at) container.insertBefore(node, at);
      at = node.nextSibling;
    });
    while (at) {
      var next = at.nextSibling;
      container.removeChild(at);
      at = next;
    }
  }

  function cancelTask(t, button) {
    button.disabled = true;
    api("DELETE", "/tasks/" + encodeURIComponent(t.id)).then(function (res) {
      button.disabled = false;
      if (res.ok) {
        mergeRestTask(res.data);
        notify(res.status === 202 ? "Stopping “" + t.title + "”…" : "Cancelled “" + t.title + "”.", "info");
      } else {
        notify("Could not cancel: " + (res.data.error || "HTTP " + res.status), "error");
      }
    });
  }

  // ---------------------------------------------------------------- alerts --

  /* One entry per alert: a "resolved" event updates the alert it resolves. */
  function upsertAlert(a) {
    var i = a.id === null || a.id === undefined ? -1
      : state.alerts.findIndex(function (x) { return x.id === a.id; });
    if (i >= 0) {
      var old = state.alerts[i];
      state.alerts[i] = Object.assign({}, old, a, { firedAt: old.firedAt || a.firedAt });
    } else {
      state.alerts.unshift(a);
    }
    state.alerts.sort(function (x, y) {
      return (x.resolved - y.resolved) || byTime(y.firedAt || y.at, x.firedAt || x.at);
    });
    state.alerts = state.alerts.slice(0, MAX_ALERTS);
    scheduleRender("alerts");
  }

  function applyAlertEvent(topic, event) {
    var d = event.data || {};
    var severity = d.severity || (topic !== "alerts.*" ? topic.slice("alerts.".length) : "info");
    var state_ = d.state || d.status;
    upsertAlert({
      id: d.alert_id !== undefined ? d.alert_id : event.correlation_id || event.id,
      severity: String(severity),
      text: String(d.message || d.title || d.rule || event.type),
      subject: d.subject || "",
      resolved: state_ === "resolved" || d.resolved === true,
      firedAt: d.fired_at || event.timestamp,
      at: d.resolved_at || event.timestamp,
    });
  }

  function applyRestAlerts(list) {
    (list || []).slice().reverse().forEach(function (r) {
      upsertAlert({ id: r.id, severity: String(r.severity || "info"), text: String(r.message || r.rule || ""),
                    subject: r.subject || "", resolved: r.status === "resolved", firedAt: r.fired_at,
                    at: r.resolved_at || r.fired_at });
    });
  }

  function renderAlerts() {
    var list = $("alerts-list");
    var placeholder = $("no-alerts");
    while (placeholder.nextSibling) list.removeChild(placeholder.nextSibling);
    var firing = state.alerts.filter(function (a) { return !a.resolved; }).length;
    setText("alerts-count", firing ? firing + " firing" : "");
    placeholder.hidden = state.alerts.length > 0;
    state.alerts.forEach(function (a) {
      list.appendChild(el("li", { className: a.resolved ? "resolved" : "firing",
                                  dataset: { severity: a.severity, alertId: a.id } },
        badge(a.resolved ? "resolved" : a.severity),
        el("span", { className: "alert-text", text: a.text }),
        el("span", { className: "alert-time", title: a.resolved ? "resolved" : "fired",
                     text: clock(a.resolved ? a.at : a.firedAt) })));
    });
  }

  // -------------------------------------------------------------- rendering --

  var dirty = {};
  var renderQueued = false;

  function scheduleRender(part) {
    dirty[part] = true;
    if (renderQueued) return;
    renderQueued = true;
    var run = function () {
      renderQueued = false;
      var parts = dirty;
      dirty = {};
      if (parts.cluster) renderCluster();
      if (parts.agents) renderAgents();
      if (parts.tasks) renderTasks();
      if (parts.alerts) renderAlerts();
    };
    // requestAnimationFrame does not fire in background tabs; a timer does (slower).
    if (document.hidden) setTimeout(run, 250); else requestAnimationFrame(run);
  }

  setInterval(function () {
    renderOldestWait();
    state.tasks.forEach(function (t) {
      if (t.node && t.status === "running") {
        clear(t.node.meta);
        metaParts(t).forEach(function (p) { t.node.meta.appendChild(el("span", { text: p })); });
      }
    });
  }, 1000);

  // -------------------------------------------------------------- snapshot --

  var resync = { timer: null, running: false, again: false };

  /* Read everything from REST. Used at start and when the event stream had a
   * gap it could not fill. */
  function loadSnapshot() {
    var queries = [
      config.canSeeAgents && config.canSeeTasks ? api("GET", "/status/cluster") : Promise.resolve(null),
      config.canSeeAgents ? api("GET", "/status/agents") : Promise.resolve(null),
      config.canSeeTasks ? api("GET", "/tasks?status=running&status=queued&status=pending&page_size=50")
        : Promise.resolve(null),
      config.canSeeTasks && !state.loaded
        ? api("GET", "/tasks?status=completed&status=failed&status=cancelled&page_size=10") : Promise.resolve(null),
      config.canSeeAgents ? api("GET", "/alerts?page_size=" + MAX_ALERTS) : Promise.resolve(null),
    ];
    return Promise.all(queries).then(function (res) {
      var cluster = res[0], agents = res[1], active = res[2], recent = res[3], alerts = res[4];
      if (alerts && alerts.ok) applyRestAlerts(alerts.data.results || alerts.data);
      if (cluster && cluster.ok) applyCluster(cluster.data);
      if (agents && agents.ok) applyAgents(agents.data.agents);
      if (recent && recent.ok) (recent.data.results || []).slice().reverse().forEach(mergeRestTask);
      if (active && active.ok) {
        var listed = new Set();
        (active.data.results || []).forEach(function (r) { listed.add(r.id); mergeRestTask(r); });
        // Tasks we show as active that REST no longer lists finished while we
        // were not looking: ask for each one.
        if (active.data.count <= (active.data.results || []).length) {
          state.tasks.forEach(function (t) { if (!TERMINAL[t.status] && !listed.has(t.id)) fetchTaskSoon(t, 50); });
        }
      }
      [cluster, agents, active].forEach(function (r) {
        if (r && !r.ok && r.status !== 401) notify("Could not load: " + (r.data.error || "HTTP " + r.status), "warn");
      });
      scheduleRender("agents");
      scheduleRender("tasks");
    });
  }

  function resyncSoon(reason) {
    if (resync.running) { resync.again = true; return; }
    if (resync.timer) return;
    resync.timer = setTimeout(function () {
      resync.timer = null;
      resync.running = true;
      stream.stats.resyncs++;
      loadSnapshot().then(function () {
        resync.running = false;
        if (resync.again) { resync.again = false; resyncSoon(reason); }
      });
    }, 300);
  }

  // ------------------------------------------------------------- WebSocket --

  var stream = {
    ws: null,
    lastSeq: {},          // topic -> last seq applied
    denied: {},           // topic -> true when the server refused it
    acked: {},
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    pongDeadline: null,
    signedOut: false,
    buffer: [],           // events that arrived before the first snapshot was applied
    pingCounter: 0,
    stats: { connects: 0, events: 0, duplicates: 0, gaps: 0, resyncs: 0 },
  };

  function setConn(stateName, label) {
    var node = $("conn");
    node.dataset.state = stateName;
    node.textContent = label;
    document.body.dataset.ws = stateName;
  }

  function wsUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + config.wsPath;
  }

  function send(message) {
    if (stream.ws && stream.ws.readyState === WebSocket.OPEN) stream.ws.send(JSON.stringify(message));
  }

  function connect() {
    stream.reconnectTimer = null;
    if (stream.signedOut) return;
    setConn("connecting", stream.attempt ? "reconnecting…" : "connecting…");
    var ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    stream.ws = ws;
    stream.acked = {};
    ws.onopen = function () {
      stream.stats.connects++;
      TOPICS.forEach(function (topic) {
        if (stream.denied[topic]) return;
        var message = { id: "sub:" + topic, type: "subscribe", topic: topic };
        if (stream.lastSeq[topic] !== undefined) message.last_seq = stream.lastSeq[topic];
        send(message);
      });
      startPing();
    };
    ws.onmessage = function (e) {
      var message;
      try { message = JSON.parse(e.data); } catch (err) { return; }
      if (message && typeof message === "object") handleMessage(message);
    };
    ws.onclose = function (e) {
      stopPing();
      if (stream.ws !== ws) return;
      stream.ws = null;
      if (e.code === 4401 || stream.signedOut) { signedOut(); return; }
      scheduleReconnect();
    };
    ws.onerror = function () { /* a close event follows */ };
  }

  function scheduleReconnect() {
    if (stream.reconnectTimer || stream.signedOut) return;
    var base = Math.min(30000, 1000 * Math.pow(2, stream.attempt));
    var delay = Math.round(base * (0.5 + Math.random() * 0.5));
    stream.attempt++;
    setConn("offline", "offline · retrying in " + Math.ceil(delay / 1000) + " s");
    stream.reconnectTimer = setTimeout(connect, delay);
  }

  function startPing() {
    stopPing();
    stream.pingTimer = setInterval(function () {
      if (stream.pongDeadline) return;
      send({ id: "ping:" + (++stream.pingCounter), type: "ping" });
      stream.pongDeadline = setTimeout(function () {
        // No answer: the connection is dead even if the browser has not noticed.
        stream.pongDeadline = null;
        if (stream.ws) stream.ws.close();
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function stopPing() {
    if (stream.pingTimer) clearInterval(stream.pingTimer);
    if (stream.pongDeadline) clearTimeout(stream.pongDeadline);
    stream.pingTimer = null;
    stream.pongDeadline = null;
  }

  function signedOut() {
    if (stream.signedOut) return;
    stream.signedOut = true;
    stopPing();
    if (stream.ws) { try { stream.ws.close(); } catch (err) { /* closing anyway */ } }
    setConn("signed-out", "signed out");
    notify("Your session has ended. Reload the page to log in again.", "error", "signed-out", true);
  }

  function topicSettled(topic) {
    if (!state.loaded && TOPICS.every(function (t) { return stream.acked[t] || stream.denied[t]; })) {
      firstLoad();
    }
  }

  function handleMessage(message) {
    switch (message.type) {
      case "subscribe": {
        var topic = message.topic;
        var seq = message.data && typeof message.data.seq === "number" ? message.data.seq : 0;
        var last = stream.lastSeq[topic];
        if (last === undefined) {
          stream.lastSeq[topic] = seq;
        } else if (seq < last) {
          // The server's counter went backwards (its Redis was reset): our
          // position means nothing there any more. Start over from REST.
          stream.lastSeq[topic] = seq;
          resyncSoon("sequence reset on " + topic);
        }
        stream.acked[topic] = true;
        stream.attempt = 0;
        if (TOPICS.every(function (t) { return stream.acked[t] || stream.denied[t]; })) setConn("live", "live");
        topicSettled(topic);
        break;
      }
      case "data":
        onData(message);
        break;
      case "pong":
        if (stream.pongDeadline) clearTimeout(stream.pongDeadline);
        stream.pongDeadline = null;
        break;
      case "error":
        onError(message);
        break;
      default:
        break;
    }
  }

  function onData(message) {
    var topic = message.topic;
    var seq = message.seq;
    if (typeof topic !== "string" || typeof seq !== "number") return;
    var last = stream.lastSeq[topic];
    if (last !== undefined) {
      if (seq <= last) { stream.stats.duplicates++; return; }  // already applied
      if (seq > last + 1) {  // the server could not fill the gap
        stream.stats.gaps++;
        resyncSoon("gap on " + topic);
      }
    }
    stream.lastSeq[topic] = seq;
    stream.stats.events++;
    var event = message.data || {};
    if (!state.loaded) {
      stream.buffer.push([topic, event]);
      return;
    }
    dispatch(topic, event);
  }

  function dispatch(topic, event) {
    try {
      if (topic === "cluster.status") {
        applyCluster(event.data);
        refreshAgentsSoon();
      } else if (topic.indexOf("task.") === 0) {
        applyTaskEvent(event);
      } else if (topic.indexOf("agent.") === 0) {
        applyAgentEvent(event);
      } else if (topic.indexOf("alerts.") === 0) {
        applyAlertEvent(topic, event);
      }
    } catch (err) {
      // One odd event must not stop the page.
      if (window.console) console.error("hive: could not apply event", event, err);
    }
  }

  function onError(message) {
    var data = message.data || {};
    var text = data.message || "error from the event stream";
    if (data.code === 4401) {
      signedOut();
      return;
    }
    var topic = data.topic || (typeof message.id === "string" && message.id.indexOf("sub:") === 0
      ? message.id.slice(4) : null);
    if (topic && data.code === 403) {
      stream.denied[topic] = true;
      notify("Live updates for " + topic + " are not available to you: " + text, "warn", "denied:" + topic);
      if (TOPICS.every(function (t) { return stream.acked[t] || stream.denied[t]; })) setConn("live", "live");
      topicSettled(topic);
      return;
    }
    if (topic && typeof message.id === "string" && message.id.indexOf("sub:") === 0 && stream.lastSeq[topic] !== undefined) {
      // The server did not like our resume position: subscribe afresh and reload.
      delete stream.lastSeq[topic];
      send({ id: "sub:" + topic, type: "subscribe", topic: topic });
      resyncSoon("resubscribe " + topic);
    }
    notify("Event stream: " + text, "warn", "ws-error:" + text);
  }

  var firstLoadStarted = false;

  function firstLoad() {
    if (firstLoadStarted) return;
    firstLoadStarted = true;
    loadSnapshot().then(function () {
      state.loaded = true;
      var buffered = stream.buffer;
      stream.buffer = [];
      buffered.forEach(function (item) { dispatch(item[0], item[1]); });
      scheduleRender("alerts");
      document.body.dataset.loaded = "true";
    });
  }

  // ------------------------------------------------------------ task form --

  function initForm() {
    var form = $("task-form");
    if (!form) return;
    var submit = $("f-submit");
    var formError = $("form-error");
    var status = $("form-status");

    function clearErrors() {
      formError.hidden = true;
      formError.textContent = "";
      form.querySelectorAll(".field-error").forEach(function (n) { n.textContent = ""; });
      form.querySelectorAll(".invalid").forEach(function (n) { n.classList.remove("invalid"); });
    }

    function fieldError(name, messages) {
      var slot = form.querySelector('.field-error[data-for="' + name + '"]');
      var input = form.querySelector('[name="' + (name === "options" ? "num_predict" : name) + '"]');
      if (input) input.classList.add("invalid");
      if (!slot) return false;
      slot.textContent = flattenErrors(messages, "").join(" ");
      return true;
    }

    function disableForm(message) {
      Array.prototype.forEach.call(form.elements, function (e) { e.disabled = true; });
      formError.textContent = message;
      formError.hidden = false;
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearErrors();
      var body = {
        title: $("f-title").value.trim(),
        prompt: $("f-prompt").value,
        task_type: $("f-task-type").value.trim() || "general",
        priority: parseInt($("f-priority").value, 10),
      };
      var model = $("f-model").value.trim();
      if (model) body.model = model;
      var predict = $("f-num-predict").value.trim();
      if (predict) {
        var n = Number(predict);
        body.options = { num_predict: Number.isInteger(n) ? n : predict };
      }
      submit.disabled = true;
      status.textContent = "Submitting…";
      api("POST", "/tasks", body).then(function (res) {
        submit.disabled = false;
        status.textContent = "";
        if (res.status === 201) {
          mergeRestTask(res.data);
          $("f-title").value = "";
          $("f-prompt").value = "";
          status.textContent = "Submitted “" + res.data.title + "”.";
          setTimeout(function () { status.textContent = ""; }, 5000);
          return;
        }
        if (res.status === 403) {
          disableForm(res.data.error || "Your role may not submit tasks.");
          return;
        }
        var errors = res.data.errors;
        var shown = false;
        if (errors && typeof errors === "object" && !Array.isArray(errors)) {
          Object.keys(errors).forEach(function (k) { shown = fieldError(k, errors[k]) || shown; });
        }
        formError.textContent = res.data.error || ("Could not submit (HTTP " + res.status + ").");
        formError.hidden = false;
        if (!shown && res.status === 0) formError.textContent = res.data.error;
      });
    });
  }

  // ------------------------------------------------------------------ start --

  initForm();
  connect();
  // If the event stream is slow to come up, show the REST state anyway; the
  // subscription acknowledgements still give the positions to resume from.
  setTimeout(function () { if (!state.loaded) firstLoad(); }, 3000);

  window.hiveDashboard = { state: state, stream: stream };
})();
