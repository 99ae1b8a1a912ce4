// z4j dashboard: live task updates, action buttons and the canvas graph.
// Every action goes through the JSON API with the session's CSRF token; errors are shown in words.

const csrf = document.querySelector('meta[name="z4j-csrf"]')?.content ?? "";
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { /* an empty or non-JSON answer */ }
  if (!response.ok) {
    const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return data;
}

function taskUrl(project, id) {
  return `/projects/${encodeURIComponent(project)}/tasks/${encodeURIComponent(id)}`;
}

// -- the project switcher ---------------------------------------------------------------------

document.querySelector("[data-project-switch]")?.addEventListener("change", (event) => {
  window.location.href = `/projects/${encodeURIComponent(event.target.value)}/tasks`;
});

// -- live task list -----------------------------------------------------------------------------

function matches(filter, task) {
  if (filter.states.length && !filter.states.includes(task.state)) return false;
  if (filter.name && task.name !== filter.name) return false;
  if (filter.queue && task.queue !== filter.queue) return false;
  if (filter.worker && task.worker !== filter.worker) return false;
  const seen = Date.parse(task.first_seen_at);
  if (filter.since && seen < Date.parse(filter.since)) return false;
  if (filter.until && seen >= Date.parse(filter.until)) return false;
  if (filter.text) {
    const inName = (task.name ?? "").toLowerCase().includes(filter.text.toLowerCase());
    if (!inName && !task.id.startsWith(filter.text)) return false;
  }
  return true;
}

function taskRow(project, task, selectable) {
  const runtime = task.runtime === null || task.runtime === undefined ? "" : `${task.runtime.toFixed(3)} s`;
  const seen = (task.first_seen_at ?? "").slice(0, 19).replace("T", " ");
  const select = selectable
    ? [el("td", {}, el("input", { type: "checkbox", "data-select": "", value: task.id, "aria-label": `Select task ${task.id}` }))]
    : [];
  return el("tr", { "data-task-id": task.id },
    ...select,
    el("td", {}, el("span", { class: `state state-${task.state}` }, task.state)),
    el("td", {}, task.name ?? "(unknown)"),
    el("td", {}, el("a", { href: taskUrl(project, task.id) }, el("code", {}, task.id))),
    el("td", {}, task.queue ?? ""),
    el("td", {}, task.worker ?? ""),
    el("td", {}, el("time", { datetime: task.first_seen_at }, seen)),
    el("td", {}, runtime),
  );
}

function liveTasks(table) {
  const project = table.dataset.project;
  const filter = {
    states: (table.dataset.filterState || "").split(",").filter(Boolean),
    name: table.dataset.filterName, queue: table.dataset.filterQueue,
    worker: table.dataset.filterWorker, text: table.dataset.filterText,
    since: table.dataset.filterSince, until: table.dataset.filterUntil,
  };
  const body = table.tBodies[0];
  const status = document.querySelector("[data-live-status]");
  const limit = 200;

  function apply(tasks) {
    for (const task of tasks) {
      const existing = body.querySelector(`tr[data-task-id="${CSS.escape(task.id)}"]`);
      if (!matches(filter, task)) {
        existing?.remove();
        continue;
      }
      const row = taskRow(project, task, table.dataset.selectable === "yes");
      row.classList.add("fresh");
      if (existing) {
        // A live update keeps the row's selection.
        const was = existing.querySelector("[data-select]")?.checked;
        if (was) row.querySelector("[data-select]").checked = true;
        existing.replaceWith(row);
      }
      else {
        body.querySelector("tr.empty")?.remove();
        body.prepend(row);
      }
    }
    while (body.rows.length > limit) body.deleteRow(body.rows.length - 1);
  }

  liveSocket(project, table, status, "Live: new and changed tasks appear here.", (message) => {
    if (message.type === "tasks") apply(message.items);
  });
}

// The project's dashboard socket, reconnecting with backoff; ``marker.dataset.connected``
// and ``status`` say whether it is up.
function liveSocket(project, marker, status, liveText, onMessage) {
  let retry = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/dashboard?project=${encodeURIComponent(project)}`);
    socket.addEventListener("open", () => {
      retry = 1000;
      if (status) status.textContent = liveText;
      marker.dataset.connected = "yes";
    });
    socket.addEventListener("message", (event) => onMessage(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      marker.dataset.connected = "no";
      if (status) status.textContent = `Live updates interrupted; reconnecting in ${retry / 1000} s…`;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }
  connect();
}

// Fetch this page again and hand the fresh document to `update`, then count the redraw
// on `root` (tests wait on data-refreshed). Failures are silent: the socket's status
// line already says when the server is out of reach.
async function redrawn(root, update) {
  try {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    update(new DOMParser().parseFromString(await response.text(), "text/html"));
    root.dataset.refreshed = String(Number(root.dataset.refreshed || "0") + 1);
  } catch {
    // See above.
  }
}

// The overview redraws itself (the server renders it) a few seconds after tasks or
// workers change, at most once per OVERVIEW_PAUSE.
const OVERVIEW_PAUSE = 5000;
function liveOverview(root) {
  let pending = null;
  async function refresh() {
    pending = null;
    await redrawn(root, (fresh) => {
      const body = fresh.querySelector("[data-overview-body]");
      if (body) root.querySelector("[data-overview-body]").replaceWith(body);
    });
  }
  const status = root.querySelector("[data-live-status]");
  liveSocket(root.dataset.project, root, status, "Live: the page redraws as tasks and workers change.", (message) => {
    if ((message.type === "tasks" || message.type === "workers") && pending === null) {
      pending = setTimeout(refresh, OVERVIEW_PAUSE);
    }
  });
}

const overviewRoot = document.querySelector("[data-overview]");
if (overviewRoot) liveOverview(overviewRoot);

const tasksTable = document.querySelector("table[data-tasks]");
if (tasksTable && tasksTable.dataset.live === "on") liveTasks(tasksTable);

// -- actions on a task ------------------------------------------------------------------------

async function waitForCommand(project, id, show) {
  for (let i = 0; i < 600; i += 1) {
    const command = await api("GET", `/api/v1/projects/${encodeURIComponent(project)}/commands/${encodeURIComponent(id)}`);
    if (["succeeded", "failed", "timed_out"].includes(command.status)) return command;
    const waiting = command.status === "pending" ? " (waiting for a connected agent)" : "";
    const progress = command.result?.total ? ` (${command.result.done} of ${command.result.total} done)` : "";
    show(`Command ${command.status}${waiting}${progress}…`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error("no outcome after five minutes; see the command list");
}

function actions(section) {
  const project = section.dataset.project;
  const task = section.dataset.task;
  const status = section.querySelector("[data-action-status]");
  const show = (text, ...nodes) => { status.replaceChildren(text, ...nodes); };
  for (const button of section.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      const body = action === "cancel"
        ? { terminate: section.querySelector("[data-terminate]")?.checked ?? false }
        : {};
      button.disabled = true;
      try {
        show(`Sending ${action}…`);
        const path = `/api/v1/projects/${encodeURIComponent(project)}/tasks/${encodeURIComponent(task)}/${action}`;
        const issued = await api("POST", path, body);
        const done = await waitForCommand(project, issued.id, show);
        if (done.status !== "succeeded") {
          show(`${action} ${done.status}: ${done.error ?? "no reason given"}`);
        } else if (action === "retry") {
          const id = done.result.new_task_id;
          show("Retried as ", el("a", { href: taskUrl(project, id), "data-new-task": id }, el("code", {}, id)));
        } else {
          show(`Cancel sent (${done.result.outcome}); the task's state follows from its worker.`);
        }
      } catch (error) {
        show(`${action} failed: ${error.message}`);
      } finally {
        button.disabled = false;
      }
    });
  }
}

const actionSection = document.querySelector("[data-actions]");
if (actionSection) actions(actionSection);

// -- the canvas graph -------------------------------------------------------------------------

function drawCanvas(container, layout, project, current) {
  const width = layout.node_width;
  const height = layout.node_height;
  const margin = 20;
  const minX = Math.min(...layout.nodes.map((n) => n.x)) - width / 2 - margin;
  const minY = Math.min(...layout.nodes.map((n) => n.y)) - height / 2 - margin;
  const maxX = Math.max(...layout.nodes.map((n) => n.x)) + width / 2 + margin;
  const maxY = Math.max(...layout.nodes.map((n) => n.y)) + height / 2 + margin;
  const root = svg("svg", {
    viewBox: `${minX} ${minY} ${maxX - minX} ${maxY - minY}`,
    width: maxX - minX, height: maxY - minY, role: "img",
    "aria-label": `Canvas of ${layout.nodes.length} tasks`,
  });
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                 markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "currentColor" }));
  const defs = svg("defs");
  defs.append(marker);
  root.append(defs);
  for (const edge of layout.edges) {
    const points = edge.points.map((p) => p.join(",")).join(" ");
    root.append(svg("polyline", { points, class: `edge ${edge.kind}`, "marker-end": "url(#arrow)",
                                  "data-edge": `${edge.source}>${edge.target}`, "data-kind": edge.kind }));
  }
  for (const node of layout.nodes) {
    const group = svg("a", { href: taskUrl(project, node.id),
                             class: `node state-${node.state ?? "unknown"}${node.missing ? " missing" : ""}${node.id === current ? " current" : ""}`,
                             "data-node": node.id });
    group.append(svg("rect", { x: node.x - width / 2, y: node.y - height / 2, width, height, rx: 8 }));
    const title = svg("text", { x: node.x - width / 2 + 10, y: node.y - 4 });
    title.textContent = (node.name ?? node.id).split(".").pop().slice(0, 24);
    const badge = svg("text", { x: node.x - width / 2 + 10, y: node.y + 14, class: "badge" });
    const runtime = node.runtime === null || node.runtime === undefined ? "" : ` · ${node.runtime.toFixed(2)} s`;
    badge.textContent = `${node.missing ? "not seen" : node.state}${runtime}`;
    const tip = svg("title");
    tip.textContent = `${node.name ?? "(unknown)"} ${node.id} ${node.state ?? ""}`;
    group.append(tip, title, badge);
    root.append(group);
  }
  container.replaceChildren(root);
  if (layout.truncated) container.append(el("p", { class: "muted" }, "Only the first tasks are drawn."));
}

const canvas = document.querySelector("[data-canvas]");
if (canvas) {
  const { project, task } = canvas.dataset;
  api("GET", `/api/v1/projects/${encodeURIComponent(project)}/tasks/${encodeURIComponent(task)}/canvas`)
    .then((layout) => {
      if (layout.nodes.length <= 1) {
        canvas.replaceChildren(el("p", { class: "muted" }, "This task is not part of a chain, group or chord."));
      } else drawCanvas(canvas, layout, project, task);
    })
    .catch((error) => canvas.replaceChildren(el("p", { class: "error" }, `Could not load the canvas: ${error.message}`)));
}

// -- bulk retry / cancel of everything the current filter selects -------------------------------

function currentFilter(table) {
  const filter = {};
  const states = (table.dataset.filterState || "").split(",").filter(Boolean);
  if (states.length) filter.state = states;
  for (const key of ["name", "queue", "worker", "text", "since", "until"]) {
    const value = table.dataset[`filter${key[0].toUpperCase()}${key.slice(1)}`];
    if (value) filter[key] = value;
  }
  return filter;
}

function bulk(section, table) {
  const project = section.dataset.project;
  const confirm = section.querySelector("[data-bulk-confirm]");
  const count = section.querySelector("[data-bulk-count]");
  const status = section.querySelector("[data-bulk-status]");
  const go = section.querySelector("[data-bulk-go]");
  const selectedCount = section.querySelector("[data-selected-count]");
  const pageBox = table.querySelector("[data-select-page]");
  const base = `/api/v1/projects/${encodeURIComponent(project)}/tasks`;
  let action = null;
  let target = null;

  const boxes = () => [...table.querySelectorAll("tbody [data-select]")];
  const selected = () => boxes().filter((box) => box.checked).map((box) => box.value);
  function showSelection() {
    const n = selected().length;
    selectedCount.textContent = n ? `${n} task${n === 1 ? "" : "s"} selected.` : "No task selected.";
    for (const button of section.querySelectorAll('[data-bulk-scope="selected"]')) button.disabled = n === 0;
    if (pageBox) {
      const all = boxes();
      pageBox.checked = all.length > 0 && n === all.length;
      pageBox.indeterminate = n > 0 && n < all.length;
    }
  }
  table.addEventListener("change", (event) => {
    if (event.target === pageBox) for (const box of boxes()) box.checked = pageBox.checked;
    if (event.target.matches("[data-select], [data-select-page]")) showSelection();
  });
  // Live rows come and go: keep the count and the page box honest.
  new MutationObserver(showSelection).observe(table.tBodies[0], { childList: true });

  for (const button of section.querySelectorAll("[data-bulk-action]")) {
    button.addEventListener("click", async () => {
      action = button.dataset.bulkAction;
      const verb = action === "retry" ? "Retry" : "Cancel";
      const bySelection = button.dataset.bulkScope === "selected";
      target = bySelection ? { ids: selected() } : { filter: currentFilter(table) };
      status.textContent = "Counting…";
      try {
        const dry = await api("POST", `${base}/bulk-${action}`, { ...target, dry_run: true });
        status.textContent = "";
        if (dry.count === 0) {
          status.textContent = bySelection
            ? "None of the selected tasks is stored any more: nothing to do."
            : "No task matches this filter: nothing to do.";
          return;
        }
        const tasks = `${dry.count} task${dry.count === 1 ? "" : "s"}`;
        count.textContent = dry.capped
          ? `More than ${dry.cap} tasks match: narrow the filter (the cap per request is ${dry.cap}).`
          : bySelection
            ? `${tasks} selected. ${verb} ${dry.count === 1 ? "it" : "them"}?`
            : `${tasks} match this filter. ${verb} all of them?`;
        count.dataset.count = String(dry.count);
        go.hidden = dry.capped;
        confirm.hidden = false;
      } catch (error) {
        status.textContent = `Could not count: ${error.message}`;
      }
    });
  }
  section.querySelector("[data-bulk-abort]").addEventListener("click", () => { confirm.hidden = true; });
  go.addEventListener("click", async () => {
    confirm.hidden = true;
    try {
      const issued = await api("POST", `${base}/bulk-${action}`, target);
      const done = await waitForCommand(project, issued.id, (text) => { status.textContent = text; });
      const result = done.result ?? {};
      const outcomes = Object.entries(result.outcomes ?? {}).map(([k, v]) => `${v} ${k}`).join(", ");
      status.textContent = done.status === "succeeded"
        ? `Done: ${result.done} of ${result.total} (${outcomes || "nothing"}).`
        : `Bulk ${action} ${done.status}: ${done.error ?? "no reason given"}`;
      status.dataset.outcome = done.status;
    } catch (error) {
      status.textContent = `Bulk ${action} failed: ${error.message}`;
    }
  });
}

const bulkSection = document.querySelector("[data-bulk]");
if (bulkSection && tasksTable) bulk(bulkSection, tasksTable);

// -- queues page (pages_ops): purge a queue, confirming the depth its agent measured -----------
// The first request sends no confirm_depth: the agent answers the queue's depth in the failed
// command's result, which the user then confirms (or is asked again if it changed meanwhile).

function purge(section) {
  const project = section.dataset.project;
  const confirmBox = section.querySelector("[data-purge-confirm]");
  const question = section.querySelector("[data-purge-question]");
  const status = section.querySelector("[data-purge-status]");
  const go = section.querySelector("[data-purge-go]");
  const starters = document.querySelectorAll("[data-purge-queue]");
  let pending = null;

  const show = (text, outcome) => {
    status.textContent = text;
    if (outcome) status.dataset.outcome = outcome;
    else delete status.dataset.outcome;
  };
  const busy = (on) => {
    for (const button of starters) button.disabled = on;
    go.disabled = on;
  };
  const messages = (n) => `${n} message${n === 1 ? "" : "s"}`;

  async function send(queue, depth) {
    const path = `/api/v1/projects/${encodeURIComponent(project)}/queues/${encodeURIComponent(queue)}/purge`;
    const issued = await api("POST", path, depth === null ? {} : { confirm_depth: depth });
    return waitForCommand(project, issued.id, (text) => show(text));
  }

  function offer(queue, depth, changed) {
    if (depth === 0) {
      show(`Queue ${queue} is empty: nothing to purge.`, "empty");
      return;
    }
    pending = { queue, depth };
    const before = changed ? "The depth changed meanwhile: " : "";
    question.textContent = `${before}queue ${queue} holds ${messages(depth)}; purge them?`;
    question.dataset.depth = String(depth);
    show("");
    confirmBox.hidden = false;
    go.focus();
  }

  for (const button of starters) {
    button.addEventListener("click", async () => {
      const queue = button.dataset.purgeQueue;
      confirmBox.hidden = true;
      pending = null;
      busy(true);
      show(`Asking an agent how many messages queue ${queue} holds…`);
      try {
        const done = await send(queue, null);
        if (Number.isInteger(done.result?.depth) && done.status === "failed") offer(queue, done.result.depth, false);
        else show(`Could not measure queue ${queue}: ${done.status}: ${done.error ?? "no reason given"}`, done.status);
      } catch (error) {
        show(`Could not measure queue ${queue}: ${error.message}`, "error");
      } finally {
        busy(false);
      }
    });
  }
  section.querySelector("[data-purge-abort]").addEventListener("click", () => {
    confirmBox.hidden = true;
    pending = null;
    show("Nothing was purged.");
  });
  go.addEventListener("click", async () => {
    if (pending === null) return;
    const { queue, depth } = pending;
    confirmBox.hidden = true;
    pending = null;
    busy(true);
    show(`Purging queue ${queue}…`);
    try {
      const done = await send(queue, depth);
      const result = done.result ?? {};
      if (done.status === "succeeded") {
        show(`Purged queue ${queue}: ${messages(result.purged ?? depth)} deleted.`, "succeeded");
      } else if (done.status === "failed" && Number.isInteger(result.depth)) {
        offer(queue, result.depth, true);
      } else {
        show(`Purge of queue ${queue} ${done.status}: ${done.error ?? "no reason given"}`, done.status);
      }
    } catch (error) {
      show(`Purge of queue ${queue} failed: ${error.message}`, "error");
    } finally {
      busy(false);
    }
  });
}

const purgeSection = document.querySelector("[data-purge]");
if (purgeSection) purge(purgeSection);

// == pages_admin: agents, members and invitations ==================================================
// (the agents and members pages; every change through the JSON API, errors shown in words)

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// A button with data-copy="<selector>" copies that element's text (or selects it when the
// browser offers no clipboard, as on plain HTTP to another host).
for (const button of document.querySelectorAll("[data-copy]")) {
  const label = button.textContent;
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch {
      selectText(source);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = label; }, 2500);
  });
}

function shortTime(iso, length = 16) {
  return el("time", { datetime: iso }, (iso ?? "").slice(0, length).replace("T", " "));
}

function agentRow(agent, canManage) {
  const status = agent.active
    ? el("span", { class: "state state-succeeded" }, "active")
    : el("span", { class: "state state-revoked" }, "revoked");
  return el("tr", { "data-agent": agent.name, class: "fresh" },
    el("td", {}, el("strong", {}, agent.name)),
    el("td", { "data-agent-status": "" }, status),
    el("td", { "data-agent-connected": "0" }, el("span", { class: "muted" }, "not connected")),
    el("td", {}, "—"),
    el("td", {}, el("span", { class: "muted" }, "never")),
    el("td", {}, shortTime(agent.created_at)),
    ...(canManage ? [el("td", {}, el("button", {
      type: "button", class: "secondary small danger", "data-revoke-agent": agent.name,
    }, "Revoke"))] : []),
  );
}

function agentsPage(table) {
  const project = table.dataset.project;
  const base = `/api/v1/projects/${encodeURIComponent(project)}/agents`;
  const status = document.querySelector("[data-agents-status]");
  const mint = document.querySelector("[data-mint]");

  table.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-revoke-agent]");
    if (!button) return;
    const name = button.dataset.revokeAgent;
    const question = `Revoke the agent "${name}"? Its token stops working at once: `
      + "workers connected with it are disconnected and need a new agent's token.";
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      const agent = await api("DELETE", `${base}/${encodeURIComponent(name)}`);
      const row = button.closest("tr");
      row.querySelector("[data-agent-status]").replaceChildren(
        el("span", { class: "state state-revoked" }, "revoked"), " ", shortTime(agent.revoked_at));
      button.remove();
      status.textContent = `Agent ${name} revoked; connections using its token are closed shortly.`;
    } catch (error) {
      button.disabled = false;
      status.textContent = `Could not revoke ${name}: ${error.message}`;
    }
  });

  if (!mint) return;
  const form = mint.querySelector("[data-mint-form]");
  const mintStatus = mint.querySelector("[data-mint-status]");
  const result = mint.querySelector("[data-mint-result]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.hidden = true;
    mintStatus.textContent = `Minting ${name}…`;
    try {
      const created = await api("POST", base, { name });
      mint.querySelector("[data-mint-token]").textContent = created.token;
      mint.querySelector("[data-mint-secret]").textContent = created.hmac_secret;
      mint.querySelector("[data-mint-env]").textContent = [
        `export Z4J_BRAIN_URL=${window.location.origin}`,
        `export Z4J_TOKEN=${created.token}`,
        `export Z4J_HMAC_SECRET=${created.hmac_secret}`,
        `export Z4J_PROJECT_ID=${created.project}`,
      ].join("\n");
      result.hidden = false;
      mintStatus.textContent = `Agent ${created.agent.name} minted.`;
      const body = table.tBodies[0];
      body.querySelector("tr.empty")?.remove();
      const row = agentRow(created.agent, true);
      const after = [...body.rows].find((r) => r.dataset.agent > created.agent.name);
      body.insertBefore(row, after ?? null);
      form.reset();
    } catch (error) {
      mintStatus.textContent = `Could not mint ${name || "the agent"}: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

const agentsTable = document.querySelector("table[data-agents]");
if (agentsTable) agentsPage(agentsTable);

function membersPage(root) {
  const base = `/api/v1/projects/${encodeURIComponent(root.dataset.project)}`;
  const status = root.querySelector("[data-members-status]");
  const invitations = root.querySelector("table[data-invitation-table]");

  for (const select of root.querySelectorAll("select[data-member-role]")) {
    select.addEventListener("change", async () => {
      const email = select.closest("tr").dataset.member;
      const role = select.value;
      select.disabled = true;
      try {
        const member = await api("PUT", `${base}/members/${encodeURIComponent(email)}`, { role });
        select.dataset.current = member.role;
        status.textContent = `${email} is now ${member.role}.`;
      } catch (error) {
        select.value = select.dataset.current;
        status.textContent = `Could not make ${email} ${role}: ${error.message}`;
      } finally {
        select.disabled = false;
      }
    });
  }

  root.addEventListener("click", async (event) => {
    const remove = event.target.closest("[data-remove-member]");
    const revoke = event.target.closest("[data-revoke-invitation]");
    if (remove) {
      const email = remove.dataset.removeMember;
      if (!window.confirm(`Remove ${email} from this project? Their account stays; they lose access to this project.`)) return;
      remove.disabled = true;
      try {
        await api("DELETE", `${base}/members/${encodeURIComponent(email)}`);
        remove.closest("tr").remove();
        status.textContent = `${email} removed from the project.`;
      } catch (error) {
        remove.disabled = false;
        status.textContent = `Could not remove ${email}: ${error.message}`;
      }
    } else if (revoke) {
      const row = revoke.closest("tr");
      const email = row.cells[0].textContent;
      if (!window.confirm(`Revoke the invitation of ${email}? Its link stops working at once.`)) return;
      revoke.disabled = true;
      try {
        const invitation = await api("DELETE", `${base}/invitations/${encodeURIComponent(revoke.dataset.revokeInvitation)}`);
        row.querySelector("[data-invitation-status]").replaceChildren(
          el("span", { class: "state state-revoked" }, invitation.status));
        revoke.remove();
        status.textContent = `The invitation of ${email} is revoked.`;
      } catch (error) {
        revoke.disabled = false;
        status.textContent = `Could not revoke the invitation of ${email}: ${error.message}`;
      }
    }
  });

  const form = root.querySelector("[data-invite-form]");
  const inviteStatus = root.querySelector("[data-invite-status]");
  const result = root.querySelector("[data-invite-result]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = form.elements.email.value.trim();
    const body = { email, role: form.elements.role.value };
    const days = form.elements.expires_in_days.value;
    if (days) body.expires_in_days = Number(days);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.hidden = true;
    inviteStatus.textContent = `Inviting ${email}…`;
    try {
      const created = await api("POST", `${base}/invitations`, body);
      const invitation = created.invitation;
      root.querySelector("[data-invite-url]").textContent = created.url;
      root.querySelector("[data-invite-email]").textContent = invitation.email;
      root.querySelector("[data-invite-expires]").replaceChildren(shortTime(invitation.expires_at), " UTC");
      result.hidden = false;
      inviteStatus.textContent = `${invitation.email} is invited as ${invitation.role}.`;
      const rows = invitations.tBodies[0];
      rows.querySelector("tr.empty")?.remove();
      rows.prepend(el("tr", { "data-invitation": String(invitation.id), class: "fresh" },
        el("td", {}, invitation.email),
        el("td", {}, invitation.role),
        el("td", { "data-invitation-status": "" }, el("span", { class: "state state-pending" }, invitation.status)),
        el("td", {}, shortTime(invitation.expires_at)),
        el("td", {}, el("button", {
          type: "button", class: "secondary small danger", "data-revoke-invitation": String(invitation.id),
        }, "Revoke")),
      ));
      form.reset();
    } catch (error) {
      inviteStatus.textContent = `Could not invite ${email || "them"}: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

const membersRoot = document.querySelector("[data-members]");
if (membersRoot) membersPage(membersRoot);
// == end of pages_admin ==========================================================================

// == pages_account: the account page (password, API keys) and a project's settings ==============

// Shows an outcome in words; a failure is also marked (colour and data-outcome) for the eye and tests.
function say(node, text, ok) {
  node.textContent = text;
  node.dataset.outcome = ok ? "ok" : "error";
  node.classList.toggle("error", !ok);
}

function passwordPage(section) {
  const form = section.querySelector("[data-password-form]");
  const status = section.querySelector("[data-password-status]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = form.elements;
    if (fields.new_password.value !== fields.confirm.value) {
      say(status, "The new password and its confirmation differ: type the same new password twice.", false);
      fields.confirm.focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    say(status, "Changing the password…", true);
    try {
      await api("POST", "/api/v1/auth/password", {
        current_password: fields.current_password.value, new_password: fields.new_password.value,
      });
      form.reset();
      say(status, "Password changed. Your other sessions are logged out; this one stays logged in.", true);
    } catch (error) {
      say(status, `Could not change the password: ${error.message}`, false);
    } finally {
      button.disabled = false;
    }
  });
}

function apiKeyRow(key) {
  return el("tr", { "data-key": String(key.id), class: "fresh" },
    el("td", {}, el("strong", {}, key.name)),
    el("td", {}, el("code", {}, `${key.prefix}…`)),
    el("td", {}, key.project ?? "all"),
    el("td", {}, key.role ?? "none"),
    el("td", { "data-key-state": "" }, el("span", { class: "state state-succeeded" }, "active")),
    el("td", {}, el("span", { class: "muted" }, "never")),
    el("td", {}, shortTime(key.created_at)),
    el("td", {}, el("button", {
      type: "button", class: "secondary small danger", "data-revoke-key": String(key.id),
    }, "Revoke")),
  );
}

function apiKeysPage(root) {
  const base = "/api/v1/auth/api-keys";
  const table = root.querySelector("table[data-key-table]");
  const status = root.querySelector("[data-keys-status]");

  table.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-revoke-key]");
    if (!button) return;
    const row = button.closest("tr");
    const name = row.cells[0].textContent;
    if (!window.confirm(`Revoke the API key "${name}"? Anything using it is refused from now on.`)) return;
    button.disabled = true;
    try {
      const key = await api("DELETE", `${base}/${encodeURIComponent(button.dataset.revokeKey)}`);
      row.querySelector("[data-key-state]").replaceChildren(
        el("span", { class: "state state-revoked" }, "revoked"), " ", shortTime(key.revoked_at));
      button.remove();
      say(status, `API key ${name} revoked.`, true);
    } catch (error) {
      button.disabled = false;
      say(status, `Could not revoke ${name}: ${error.message}`, false);
    }
  });

  const form = root.querySelector("[data-key-form]");
  const keyStatus = root.querySelector("[data-key-status]");
  const result = root.querySelector("[data-key-result]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = form.elements;
    const body = { name: fields.name.value.trim() };
    if (fields.project.value) body.project = fields.project.value;
    if (fields.role.value) body.role = fields.role.value;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.hidden = true;
    say(keyStatus, `Creating ${body.name}…`, true);
    try {
      const created = await api("POST", base, body);
      root.querySelector("[data-key-value]").textContent = created.key;
      result.hidden = false;
      say(keyStatus, `API key ${created.api_key.name} created.`, true);
      const rows = table.tBodies[0];
      rows.querySelector("tr.empty")?.remove();
      rows.prepend(apiKeyRow(created.api_key));
      form.reset();
    } catch (error) {
      say(keyStatus, `Could not create ${body.name || "the key"}: ${error.message}`, false);
    } finally {
      button.disabled = false;
    }
  });
}

// The three lists, one item a line; what the API saved (sorted, without repeats) is shown back.
function redactionForm(form) {
  const names = ["extra_key_patterns", "extra_value_patterns", "fully_redacted_tasks"];
  const status = form.querySelector("[data-redaction-status]");
  const button = form.querySelector("button[type=submit]");
  if (!button) return; // read-only for this role
  const path = `/api/v1/projects/${encodeURIComponent(form.dataset.project)}/settings/redaction`;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const name of names) {
      body[name] = form.elements[name].value.split("\n").map((line) => line.trim()).filter(Boolean);
    }
    button.disabled = true;
    say(status, "Saving…", true);
    try {
      const saved = await api("PUT", path, body);
      for (const name of names) form.elements[name].value = saved[name].join("\n");
      say(status, "Saved. Connected agents use the new settings from now on.", true);
    } catch (error) {
      say(status, `Not saved: ${error.message}`, false);
    } finally {
      button.disabled = false;
    }
  });
}

const passwordSection = document.querySelector("[data-password]");
if (passwordSection) passwordPage(passwordSection);
const apiKeysRoot = document.querySelector("[data-api-keys]");
if (apiKeysRoot) apiKeysPage(apiKeysRoot);
const redactionSettings = document.querySelector("[data-redaction-form]");
if (redactionSettings) redactionForm(redactionSettings);
// == end of pages_account ========================================================================

// == pages_schedules: the schedules list, the entry form with its cron helper, an entry's page =====
// Every change is a schedule command sent with ?wait=10: the answer is the finished command, or
// the command still on its way to the beat agent, followed then through the dashboard socket
// (its "commands" messages) and by polling GET /commands/<id>.

const COMMAND_FINISHED = ["succeeded", "failed", "timed_out"];
// The list redraws this long after a "schedules" message (several come together).
const SCHEDULES_PAUSE = 800;
// The cron helper asks for a preview this long after the last keystroke.
const PREVIEW_PAUSE = 350;

function sayNodes(node, ok, ...children) {
  node.replaceChildren(...children);
  node.dataset.outcome = ok ? "ok" : "error";
  node.classList.toggle("error", !ok);
}

function utcText(iso) {
  return `${iso.slice(0, 19).replace("T", " ")} UTC`;
}

function localText(iso, seconds) {
  return new Date(iso).toLocaleString(undefined, {
    weekday: "short", year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined, timeZoneName: "short",
  });
}

// Server-rendered fire times (UTC) also in the reader's own time.
function localTimes(root) {
  for (const time of root.querySelectorAll("time[data-local-time]")) {
    if (time.nextElementSibling?.matches("[data-local]")) continue;
    time.after(el("span", { class: "muted", "data-local": "" }, ` · your time: ${localText(time.dateTime, true)}`));
  }
}

// The field an API or form message is about ("schedule.minute: …", "day_of_month '30' never…").
function fieldOf(message) {
  if (/already has an entry named/.test(message)) return "name";
  return /^(?:schedule\.|options\.)?([a-z_]+)\b/.exec(message)?.[1] ?? null;
}

function schedulesPage(root) {
  const project = root.dataset.project;
  const base = `/api/v1/projects/${encodeURIComponent(project)}/schedules`;
  const status = root.querySelector("[data-schedules-status]");
  const watchers = new Map();
  let pending = null;
  let form = null;

  const entryPath = (scheduler, name) => `${base}/${encodeURIComponent(scheduler)}/${encodeURIComponent(name)}`;

  async function refresh() {
    pending = null;
    await redrawn(root, (fresh) => {
      const body = fresh.querySelector("[data-schedules-body]");
      const focus = focused();
      if (body) root.querySelector("[data-schedules-body]").replaceWith(body);
      if (focus) root.querySelector(focus)?.focus();
      // A first writable scheduler brings the form; an open form is never replaced.
      const area = root.querySelector("[data-form-area]");
      const freshArea = fresh.querySelector("[data-form-area]");
      if (area && freshArea && !form && freshArea.querySelector("[data-schedule-form]")) {
        area.replaceWith(freshArea);
        startForm();
      } else if (form && freshArea) {
        form.schedulers(freshArea.querySelector("[data-form-scheduler]"));
      }
      localTimes(root);
      form?.tasks();
    });
  }
  const redraw = () => { if (pending === null) pending = setTimeout(refresh, SCHEDULES_PAUSE); };

  // A control of the list as a selector that finds it again after a redraw.
  function selectorOf(control) {
    const section = control?.closest("[data-scheduler]");
    const row = control?.closest("[data-entry]");
    const kind = ["data-toggle", "data-trigger", "data-edit", "data-delete", "data-history"]
      .find((name) => control.hasAttribute(name));
    if (!section || !row || !kind) return null;
    return `[data-scheduler="${CSS.escape(section.dataset.scheduler)}"] [data-entry="${CSS.escape(row.dataset.entry)}"] [${kind}]`;
  }

  // The control to give the keyboard focus back to after a redraw: the focused one, or
  // the one whose change is under way (disabled meanwhile, so it lost the focus).
  let busyFocus = null;
  function focused() {
    const active = document.activeElement;
    if (active && root.querySelector("[data-schedules-body]").contains(active)) return selectorOf(active);
    return busyFocus;
  }

  // Run ``work`` with ``control`` disabled; the focus comes back to it (or to its redrawn self).
  async function busy(control, work) {
    const selector = document.activeElement === control ? selectorOf(control) : null;
    if (selector) busyFocus = selector;
    control.disabled = true;
    try {
      return await work();
    } finally {
      control.disabled = false;
      if (selector) {
        busyFocus = null;
        (root.querySelector(selector) ?? control).focus();
      }
    }
  }

  liveSocket(project, root, root.querySelector("[data-live-status]"),
    "Live: the page redraws as schedules change, beat fires and fired tasks run.", (message) => {
      if (message.type === "schedules") redraw();
      // A fired task's state shows beside its fire: redraw when one of those tasks changes.
      else if (message.type === "tasks" && message.items.some((task) => root.querySelector(
        `[data-fire-task="${CSS.escape(task.id)}"]`))) redraw();
      else if (message.type === "commands") for (const command of message.items) watchers.get(command.id)?.(command);
    });

  // The finished command: from the socket, or from polling when a message was missed.
  function follow(command, show) {
    return new Promise((resolve) => {
      let done = false;
      const settle = (current) => {
        if (done) return;
        if (COMMAND_FINISHED.includes(current.status)) {
          done = true;
          watchers.delete(command.id);
          resolve(current);
        } else show(waiting(current));
      };
      watchers.set(command.id, settle);
      (async () => {
        while (!done) {
          await new Promise((wake) => setTimeout(wake, 2000));
          if (done) break;
          try {
            settle(await api("GET", `/api/v1/projects/${encodeURIComponent(project)}/commands/${encodeURIComponent(command.id)}`));
          } catch { /* try again on the next round */ }
        }
      })();
    });
  }

  function waiting(command) {
    return command.status === "pending"
      ? "Sent to beat, waiting: its agent is not connected; the change is made when it reconnects."
      : "Sent to beat, waiting for its answer…";
  }

  // Send one change; the finished command (or an Error for a refusal by the API).
  async function change(method, path, body, show) {
    const command = await api(method, `${path}?wait=10`, body);
    if (COMMAND_FINISHED.includes(command.status)) return command;
    show(waiting(command));
    return follow(command, show);
  }

  function failure(what, command) {
    return command.status === "timed_out"
      ? `${what}: beat did not answer in time (${command.error ?? "timed out"}).`
      : `${what} failed: ${command.error ?? "no reason given"}`;
  }

  root.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-trigger], [data-delete], [data-edit]");
    if (!button) return;
    const scheduler = button.closest("[data-scheduler]").dataset.scheduler;
    const name = button.closest("[data-entry]").dataset.entry;
    if (button.matches("[data-edit]")) {
      form?.edit(scheduler, name);
      return;
    }
    const deleting = button.matches("[data-delete]");
    if (deleting && !window.confirm(`Delete the entry "${name}" from scheduler ${scheduler}? `
      + "Beat stops sending its task; its past fires stay in the history.")) return;
    const show = (text) => say(status, text, true);
    show(deleting ? `Deleting ${name}…` : `Asking beat to send ${name}'s task now…`);
    await busy(button, async () => {
      try {
        const done = deleting
          ? await change("DELETE", entryPath(scheduler, name), undefined, show)
          : await change("POST", `${entryPath(scheduler, name)}/trigger`, undefined, show);
        if (done.status !== "succeeded") say(status, failure(deleting ? `Delete ${name}` : `Run ${name} now`, done), false);
        else if (deleting) say(status, `Entry ${name} deleted.`, true);
        else {
          const id = done.result?.task_id;
          sayNodes(status, true, `Run now: beat sent ${name}'s task `,
            id ? el("a", { href: taskUrl(project, id), "data-sent-task": id }, el("code", {}, id)) : "(no task id reported)", ".");
        }
        redraw();
      } catch (error) {
        say(status, `${deleting ? "Delete" : "Run now"} of ${name} refused: ${error.message}`, false);
      }
    });
  });

  root.addEventListener("change", async (event) => {
    const toggle = event.target.closest("[data-toggle]");
    if (!toggle) return;
    const scheduler = toggle.closest("[data-scheduler]").dataset.scheduler;
    const name = toggle.closest("[data-entry]").dataset.entry;
    const on = toggle.checked;
    const text = toggle.parentElement.querySelector("[data-toggle-text]");
    const show = (words) => say(status, words, true);
    show(`${on ? "Enabling" : "Disabling"} ${name}…`);
    await busy(toggle, async () => {
      try {
        const done = await change("POST", `${entryPath(scheduler, name)}/${on ? "enable" : "disable"}`, undefined, show);
        if (done.status === "succeeded") {
          say(status, `Entry ${name} ${on ? "enabled" : "disabled"}.`, true);
          if (text) text.textContent = on ? "enabled" : "disabled";
        } else {
          toggle.checked = !on;
          say(status, failure(`${on ? "Enable" : "Disable"} ${name}`, done), false);
        }
        redraw();
      } catch (error) {
        toggle.checked = !on;
        say(status, `${on ? "Enable" : "Disable"} ${name} refused: ${error.message}`, false);
      }
    });
  });

  function startForm() {
    const panel = root.querySelector("[data-schedule-form-panel]");
    if (panel) form = scheduleForm(panel, { base, entryPath, change, failure, redraw: refresh });
  }
  startForm();
  localTimes(root);
}

function scheduleForm(panel, { base, entryPath, change, failure, redraw }) {
  const form = panel.querySelector("[data-schedule-form]");
  const fields = form.elements;
  const title = panel.querySelector("[data-form-title]");
  const submit = form.querySelector("[data-form-submit]");
  const clear = form.querySelector("[data-form-reset]");
  const status = form.querySelector("[data-form-status]");
  const select = form.querySelector("[data-form-scheduler]");
  const previewText = form.querySelector("[data-preview-text]");
  const previewTimes = form.querySelector("[data-preview-times]");
  let editing = null;
  let asked = 0;
  let previewTimer = null;

  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  form.querySelector("[data-time-zones]")?.replaceChildren(
    ...["UTC", ...zones.filter((zone) => zone !== "UTC")].map((zone) => el("option", { value: zone })));
  const localZone = form.querySelector("[data-local-zone]");
  if (localZone) localZone.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone ?? "your browser's zone";

  const kind = () => form.querySelector('input[name="kind"]:checked').value;
  const schedulerZone = () => select.selectedOptions[0]?.dataset.timezone || "UTC";

  // The task field offers the known tasks of the chosen scheduler.
  function tasks() {
    const list = document.querySelector(`datalist[data-known-tasks="${CSS.escape(select.value)}"]`);
    if (list) fields.task.setAttribute("list", list.id);
    else fields.task.removeAttribute("list");
  }

  function showKind() {
    for (const set of form.querySelectorAll("[data-kind-fields]")) {
      const shown = set.dataset.kindFields === kind();
      set.hidden = !shown;
      set.disabled = !shown;
    }
    // A clocked entry fires once: django-celery-beat (and the API) want it one-off.
    const clocked = kind() === "clocked";
    if (clocked) fields.one_off.checked = true;
    fields.one_off.disabled = clocked;
  }

  function clearErrors() {
    for (const node of form.querySelectorAll("[data-field-error]")) node.textContent = "";
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  }

  // Put a message under its field when it names one; whether it did.
  function fieldError(message) {
    const field = fieldOf(message);
    const slot = field && form.querySelector(`[data-field-error="${field}"]`);
    if (!slot) return false;
    slot.textContent = message;
    const input = fields[field];
    if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
    if (slot.closest("details")) slot.closest("details").open = true;
    return true;
  }

  function number(name, { required = false } = {}) {
    const input = fields[name];
    if (input.validity.badInput) throw new Error(`${name}: not a number`);
    if (input.value === "") {
      if (required) throw new Error(`${name}: required`);
      return null;
    }
    return Number(input.value);
  }

  function text(name) {
    const value = fields[name].value.trim();
    return value === "" ? null : value;
  }

  function schedule() {
    const chosen = kind();
    if (chosen === "crontab") {
      const crontab = { kind: chosen };
      for (const name of ["minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone"]) {
        crontab[name] = fields[name].value.trim();
      }
      return crontab;
    }
    if (chosen === "interval") return { kind: chosen, every: number("every", { required: true }), period: fields.period.value };
    if (chosen === "solar") {
      return { kind: chosen, event: fields.event.value,
               latitude: number("latitude", { required: true }), longitude: number("longitude", { required: true }) };
    }
    if (!fields.clocked_time.value) throw new Error("clocked_time: required: pick a date and time");
    return { kind: chosen, clocked_time: new Date(fields.clocked_time.value).toISOString() };
  }

  function json(name, list) {
    const source = fields[name].value.trim();
    if (!source) return list ? [] : {};
    let value;
    try {
      value = JSON.parse(source);
    } catch (error) {
      throw new Error(`${name}: not valid JSON (${error.message})`);
    }
    if (list && !Array.isArray(value)) throw new Error(`${name}: must be a JSON list, like [1, "text"]`);
    if (!list && (value === null || typeof value !== "object" || Array.isArray(value))) {
      throw new Error(`${name}: must be a JSON object, like {"count": 1}`);
    }
    return value;
  }

  function entry() {
    return {
      name: fields.name.value.trim(),
      task: fields.task.value.trim(),
      schedule: schedule(),
      args: json("args", true),
      kwargs: json("kwargs", false),
      options: {
        queue: text("queue"), routing_key: text("routing_key"), exchange: text("exchange"),
        priority: number("priority"), expires: number("expires"),
      },
      enabled: fields.enabled.checked,
      one_off: fields.one_off.checked,
      description: fields.description.value,
    };
  }

  // -- the cron helper: the next five fire times as the fields change --

  function showTimes(times) {
    const seconds = times.some((iso) => iso.slice(17, 19) !== "00");
    previewTimes.replaceChildren(...times.map((iso) => el("li", {},
      el("time", { datetime: iso }, localText(iso, seconds)), " ",
      el("span", { class: "muted" }, `· ${utcText(iso)}`))));
  }

  async function preview() {
    previewTimer = null;
    const mine = ++asked;
    for (const name of ["minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone",
      "every", "period", "latitude", "longitude", "clocked_time"]) {
      const slot = form.querySelector(`[data-field-error="${name}"]`);
      if (slot) slot.textContent = "";
      fields[name]?.removeAttribute?.("aria-invalid");
    }
    let body;
    try {
      body = { schedule: schedule(), count: 5 };
    } catch (error) {
      previewTimes.replaceChildren();
      previewText.textContent = fieldError(error.message) ? "No preview until the field above is fixed." : error.message;
      return;
    }
    previewText.textContent = "Working out the next fire times…";
    try {
      const answer = await api("POST", `${base}/preview`, body);
      if (mine !== asked) return;
      if (answer.next_fire_times === null) {
        previewTimes.replaceChildren();
        previewText.textContent = `No preview: ${answer.preview_unavailable}.`;
      } else if (answer.next_fire_times.length === 0) {
        previewTimes.replaceChildren();
        previewText.textContent = "It never fires again: its time has passed.";
      } else {
        const n = answer.next_fire_times.length;
        previewText.textContent = n === 1 ? "It fires once, at:" : `The next ${n} fire times, in your time and in UTC:`;
        showTimes(answer.next_fire_times);
      }
      previewText.dataset.outcome = "ok";
    } catch (error) {
      if (mine !== asked) return;
      previewTimes.replaceChildren();
      previewText.textContent = fieldError(error.message)
        ? "No preview until the field above is fixed."
        : `No preview: ${error.message}`;
      previewText.dataset.outcome = "error";
    }
  }

  const previewSoon = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, PREVIEW_PAUSE);
  };

  form.addEventListener("input", (event) => {
    if (event.target.closest("[data-kind-fields]")) previewSoon();
  });
  form.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name === "kind") {
      showKind();
      previewSoon();
    } else if (target === select) {
      tasks();
    } else if (target.closest("[data-kind-fields]")) previewSoon();
  });

  // The JSON fields are checked as they are typed (not when they lose the focus: a message
  // that vanished then would move the page under the pointer on its way to a click).
  function checkJson(target) {
    const slot = form.querySelector(`[data-field-error="${target.name}"]`);
    slot.textContent = "";
    target.removeAttribute("aria-invalid");
    try {
      json(target.name, target.name === "args");
    } catch (error) {
      fieldError(error.message);
    }
  }
  const jsonTimers = {};
  for (const name of ["args", "kwargs"]) {
    fields[name].addEventListener("input", () => {
      clearTimeout(jsonTimers[name]);
      jsonTimers[name] = setTimeout(() => checkJson(fields[name]), PREVIEW_PAUSE);
    });
  }

  function reset() {
    form.reset();
    editing = null;
    select.disabled = false;
    title.textContent = "New entry";
    submit.textContent = "Create entry";
    clear.textContent = "Clear";
    fields.timezone.value = schedulerZone();
    clearErrors();
    showKind();
    tasks();
    preview();
  }
  clear.addEventListener("click", () => {
    reset();
    say(status, "", true);
  });

  function localInput(iso) {
    const moment = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())}`
      + `T${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}`;
  }

  async function edit(scheduler, name) {
    say(status, `Loading ${name}…`, true);
    panel.scrollIntoView({ block: "start" });
    let item;
    try {
      item = await api("GET", entryPath(scheduler, name));
    } catch (error) {
      say(status, `Could not load ${name}: ${error.message}`, false);
      return;
    }
    form.reset();
    clearErrors();
    editing = { scheduler, name };
    select.value = scheduler;
    select.disabled = true;
    title.textContent = `Edit ${name}`;
    submit.textContent = "Save changes";
    clear.textContent = "Cancel editing";
    fields.name.value = item.name;
    fields.task.value = item.task;
    const chosen = item.schedule;
    form.querySelector(`input[name="kind"][value="${chosen.kind}"]`).checked = true;
    for (const [key, value] of Object.entries(chosen)) {
      if (key === "kind" || !fields[key]) continue;
      fields[key].value = key === "clocked_time" ? localInput(value) : String(value);
    }
    fields.args.value = JSON.stringify(item.args);
    fields.kwargs.value = JSON.stringify(item.kwargs);
    for (const [key, value] of Object.entries(item.options)) fields[key].value = value ?? "";
    form.querySelector("details.options").open = Object.values(item.options).some((value) => value !== null);
    fields.enabled.checked = item.enabled;
    fields.one_off.checked = item.one_off;
    fields.description.value = item.description;
    showKind();
    tasks();
    preview();
    say(status, `Editing ${name} of scheduler ${scheduler}.`, true);
    fields.name.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    let body;
    try {
      body = entry();
    } catch (error) {
      fieldError(error.message);
      say(status, `Not sent: ${error.message}`, false);
      return;
    }
    const was = editing;
    const name = body.name;
    const show = (words) => say(status, words, true);
    submit.disabled = true;
    show(was ? `Saving ${was.name}…` : `Creating ${name}…`);
    try {
      const done = was
        ? await change("PUT", entryPath(was.scheduler, was.name), { entry: body }, show)
        : await change("POST", base, { scheduler: select.value, entry: body }, show);
      if (done.status !== "succeeded") {
        fieldError(done.error ?? "");
        say(status, failure(was ? `Saving ${was.name}` : `Creating ${name}`, done), false);
        return;
      }
      const warnings = [...new Set([...(done.params?.warnings ?? []), ...(done.result?.warnings ?? [])])];
      const saved = done.result?.entry?.name ?? name;
      const where = done.params?.scheduler ?? select.value;
      const words = was ? `Entry ${saved} saved in ${where}.` : `Entry ${saved} created in ${where}.`;
      reset();
      sayNodes(status, true, words,
        ...warnings.map((warning) => el("span", { class: "warn", "data-form-warning": "" }, `Warning: ${warning}`)));
      redraw();
    } catch (error) {
      fieldError(error.message);
      say(status, `Not saved: ${error.message}`, false);
    } finally {
      submit.disabled = false;
    }
  });

  reset();
  return {
    edit,
    tasks,
    // Keep the scheduler choice in step with the page (a scheduler may come or go).
    schedulers(fresh) {
      if (!fresh || editing) return;
      const values = (node) => [...node.options].map((option) => option.value).join("\n");
      if (values(fresh) === values(select)) return;
      const kept = select.value;
      select.replaceChildren(...[...fresh.options].map((option) => option.cloneNode(true)));
      if ([...select.options].some((option) => option.value === kept)) select.value = kept;
      tasks();
    },
  };
}

const schedulesRoot = document.querySelector("[data-schedules]");
if (schedulesRoot) schedulesPage(schedulesRoot);
// == end of pages_schedules ======================================================================
