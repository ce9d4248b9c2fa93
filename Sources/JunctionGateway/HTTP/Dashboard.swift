import Hummingbird
import NIOCore

/// The dashboard: one page, a style sheet and a script, served from the
/// binary (no build step, no npm). It reads everything through the admin API.
enum Dashboard {
    static func register(on router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in asset(html, type: "text/html; charset=utf-8") }
        router.get("/index.html") { _, _ in asset(html, type: "text/html; charset=utf-8") }
        router.get("/assets/app.css") { _, _ in asset(css, type: "text/css; charset=utf-8") }
        router.get("/assets/app.js") { _, _ in asset(script, type: "text/javascript; charset=utf-8") }
        router.get("/favicon.ico") { _, _ in Response(status: .noContent) }
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Junction</title>
<link rel="stylesheet" href="/assets/app.css">
</head>
<body>
<header>
  <h1>Junction</h1>
  <nav>
    <a id="nav-overview" href="#/overview">Overview</a>
    <a id="nav-topics" href="#/topics">Topics</a>
    <a id="nav-groups" href="#/groups">Groups</a>
    <a id="nav-messages" href="#/messages">Messages</a>
    <a id="nav-dlq" href="#/dlq">Dead letters</a>
    <a id="nav-plugins" href="#/plugins">Plugins &amp; flows</a>
    <a id="nav-connections" href="#/connections">Connections</a>
  </nav>
  <button id="logout" hidden>Log out</button>
</header>
<main id="main">
  <section id="login-view" hidden>
    <h2>Log in</h2>
    <p>This gateway asks for a token with <code>admin</code> (from <code>auth.tokens</code>).</p>
    <form id="login-form">
      <input id="token" type="password" placeholder="token" autocomplete="current-password">
      <button id="login" type="submit">Log in</button>
    </form>
    <p id="login-error" class="error"></p>
  </section>
  <section id="view"></section>
</main>
<script src="/assets/app.js"></script>
</body>
</html>
"""#

    static let css = #"""
:root { --fg: #1d2330; --muted: #6b7385; --line: #dde1e8; --accent: #2457c5; --bad: #b42318; --bg: #f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: center; gap: 24px; padding: 10px 20px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0; }
nav a { margin-right: 14px; color: var(--muted); text-decoration: none; }
nav a.active { color: var(--accent); font-weight: 600; }
#logout { margin-left: auto; }
main { padding: 18px 20px; max-width: 1280px; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 5px 9px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.clickable { cursor: pointer; } tr.clickable:hover { background: #f3f6fd; }
.cards { display: flex; gap: 12px; margin-bottom: 14px; }
.card { background: #fff; border: 1px solid var(--line); padding: 10px 16px; min-width: 150px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { color: var(--muted); }
form.inline { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 8px 0 12px; }
input, select, button { font: inherit; padding: 4px 8px; }
button { cursor: pointer; }
.error { color: var(--bad); }
.muted { color: var(--muted); }
pre { background: #fff; border: 1px solid var(--line); padding: 10px; overflow: auto; max-height: 420px; }
svg.chart { background: #fff; border: 1px solid var(--line); }
.legend span { margin-right: 14px; } .legend i { display: inline-block; width: 10px; height: 3px; margin-right: 4px; vertical-align: middle; }
.pager { margin: 8px 0; display: flex; gap: 8px; align-items: center; }
.flow { font-family: ui-monospace, monospace; font-size: 13px; }
"""#

    static let script = #"""
// Junction's dashboard: plain JavaScript over the admin API (/api/v1/).
"use strict";

const state = { token: sessionStorage.getItem("junction-token"), timer: null };
const view = () => document.getElementById("view");
const esc = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (n) => (typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 1 }) : esc(n));
const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "");

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
  if (response.status === 401) throw new Unauthorized("a token with admin is needed");
  if (response.status === 403) throw new Error("this token does not have admin");
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function showLogin(message) {
  document.getElementById("login-view").hidden = false;
  view().innerHTML = "";
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("logout").hidden = true;
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value;
  try {
    await api("/overview");
    sessionStorage.setItem("junction-token", state.token);
    document.getElementById("login-view").hidden = true;
    route();
  } catch (error) {
    showLogin(error.message);
  }
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("junction-token");
  state.token = null;
  showLogin();
});

// A line chart of series over time: [{name, color, points: [[t, v]]}].
function chart(series, width = 900, height = 180) {
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) return `<p class="muted">No samples yet: the gateway samples every few seconds.</p>`;
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const top = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => 40 + ((t - t0) / Math.max(1, t1 - t0)) * (width - 50);
  const y = (v) => height - 20 - (v / top) * (height - 30);
  const lines = series.map((s) => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}"/>`).join("");
  const legend = series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("");
  return `<div class="legend">${legend}</div><svg class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
    <text x="4" y="14" font-size="11" fill="#6b7385">${num(top)}</text><text x="4" y="${height - 22}" font-size="11" fill="#6b7385">0</text>
    <text x="40" y="${height - 4}" font-size="11" fill="#6b7385">${time(t0).slice(11, 19)}</text>
    <text x="${width - 70}" y="${height - 4}" font-size="11" fill="#6b7385">${time(t1).slice(11, 19)}</text>${lines}</svg>`;
}

function table(id, columns, rows, onClick) {
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.title)}</th>`).join("");
  const body = rows.map((row, index) => `<tr data-index="${index}" class="${onClick ? "clickable" : ""}">${columns.map((c) => `<td class="${c.num ? "num" : ""} ${c.cls || ""}">${c.html ? c.html(row) : c.num ? num(c.value(row)) : esc(c.value(row))}</td>`).join("")}</tr>`).join("");
  return `<table id="${id}"><thead><tr>${head}</tr></thead><tbody>${body || `<tr><td colspan="${columns.length}" class="muted">none</td></tr>`}</tbody></table>`;
}

function bindRows(id, rows, onClick) {
  document.querySelectorAll(`#${id} tr.clickable`).forEach((tr) => tr.addEventListener("click", () => onClick(rows[Number(tr.dataset.index)])));
}

function pager(page, total, pageSize, go) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  setTimeout(() => {
    document.getElementById("prev").onclick = () => page > 1 && go(page - 1);
    document.getElementById("next").onclick = () => page < pages && go(page + 1);
  });
  return `<div class="pager"><button id="prev" ${page <= 1 ? "disabled" : ""}>‹ Previous</button><span>page ${page} of ${pages} (${num(total)})</span><button id="next" ${page >= pages ? "disabled" : ""}>Next ›</button></div>`;
}

// MARK: Pages

const pages = {
  async overview() {
    const o = await api("/overview");
    view().innerHTML = `<h2>Overview</h2>
      <div class="cards">
        <div class="card"><div class="value" id="overview-topics">${num(o.topics)}</div><div class="label">topics</div></div>
        <div class="card"><div class="value" id="overview-groups">${num(o.groups)}</div><div class="label">groups</div></div>
        <div class="card"><div class="value" id="overview-lag">${num(o.lag)}</div><div class="label">messages not consumed</div></div>
      </div>
      <h3>Messages per second, last 15 minutes</h3>
      ${chart([{ name: "published", color: "#2457c5", points: o.samples.map((p) => [p.t, p.publishRate]) },
               { name: "consumed", color: "#1b9e5a", points: o.samples.map((p) => [p.t, p.deliveryRate]) }])}
      <h3>Total lag</h3>
      ${chart([{ name: "lag", color: "#c26a11", points: o.samples.map((p) => [p.t, p.lag]) }], 900, 140)}`;
  },

  async topics(page = 1) {
    const prefix = state.topicPrefix || "";
    const data = await api(`/topics?page=${page}&pageSize=50&prefix=${encodeURIComponent(prefix)}`);
    view().innerHTML = `<h2>Topics</h2>
      <form class="inline" id="topic-filter"><input id="topic-prefix" placeholder="name starts with" value="${esc(prefix)}"><button>Filter</button></form>
      ${table("topics-table", [
        { title: "topic", value: (t) => t.name }, { title: "queues", num: true, value: (t) => t.queues },
        { title: "messages", num: true, value: (t) => t.messages }, { title: "published/s", num: true, value: (t) => t.publishRate }],
        data.items, true)}
      ${pager(data.page, data.total, data.pageSize, (p) => pages.topics(p))}
      <h3>Create a topic</h3>
      <form class="inline" id="topic-create"><input id="new-topic" placeholder="name"><input id="new-queues" type="number" min="1" max="1024" value="4"><button>Create</button><span id="create-result"></span></form>`;
    bindRows("topics-table", data.items, (t) => { state.browse = { topic: t.name }; location.hash = "#/messages"; });
    document.getElementById("topic-filter").onsubmit = (e) => { e.preventDefault(); state.topicPrefix = document.getElementById("topic-prefix").value; pages.topics(1); };
    document.getElementById("topic-create").onsubmit = async (e) => {
      e.preventDefault();
      try {
        await api("/topics", { method: "POST", body: JSON.stringify({ name: document.getElementById("new-topic").value, queues: Number(document.getElementById("new-queues").value) }) });
        pages.topics(page);
      } catch (error) { document.getElementById("create-result").innerHTML = `<span class="error">${esc(error.message)}</span>`; }
    };
  },

  async groups(page = 1) {
    const data = await api(`/groups?page=${page}&pageSize=50`);
    view().innerHTML = `<h2>Consumer groups</h2>
      ${table("groups-table", [
        { title: "group", value: (g) => (g.consumerID ? `${g.group}@${g.consumerID}` : g.group), cls: "group-name" }, { title: "topic", value: (g) => g.topic },
        { title: "members", num: true, value: (g) => g.members }, { title: "lag", num: true, value: (g) => g.lag, cls: "lag" },
        { title: "lag (s)", num: true, value: (g) => g.lagSeconds }, { title: "in flight", num: true, value: (g) => g.inFlight },
        { title: "redeliveries", num: true, value: (g) => g.redeliveries }, { title: "dead letters", num: true, value: (g) => g.deadLetters },
        { title: "not resent", num: true, value: (g) => g.deadLettersPending }], data.items, true)}
      ${pager(data.page, data.total, data.pageSize, (p) => pages.groups(p))}`;
    bindRows("groups-table", data.items, (g) => (location.hash = "#/groups/" + encodeURIComponent(g.group)));
  },

  async group(name) {
    const g = await api("/groups/" + encodeURIComponent(name));
    view().innerHTML = `<h2>Group ${esc(g.group)}</h2>
      <div class="cards"><div class="card"><div class="value" id="group-lag">${num(g.lag)}</div><div class="label">lag (messages)</div></div>
      <div class="card"><div class="value" id="group-lag-seconds">${num(g.lagSeconds)}</div><div class="label">lag (seconds: oldest unconsumed)</div></div></div>
      <h3>Lag, last 15 minutes</h3>${chart([{ name: "lag", color: "#c26a11", points: g.history.map((p) => [p.t, p.lag]) }], 900, 140)}
      ${g.members.map((m) => `<h3>${esc(m.consumerID ? "member " + m.consumerID : "topic " + m.topic)} — ${num(m.members)} connected</h3>
        ${table("queues-" + esc(m.consumerID || "group"), [
          { title: "queue", num: true, value: (q) => q.queue }, { title: "committed", num: true, value: (q) => q.committed },
          { title: "end", num: true, value: (q) => q.end }, { title: "lag", num: true, value: (q) => q.lag },
          { title: "in flight", num: true, value: (q) => q.inFlight }, { title: "held", num: true, value: (q) => q.held },
          { title: "redeliveries", num: true, value: (q) => q.redeliveries }, { title: "dead letters", num: true, value: (q) => q.deadLetters }], m.queues)}`).join("")}
      <h3>Reset offsets</h3>
      <form class="inline" id="reset-form"><select id="reset-to"><option>earliest</option><option>latest</option></select>
        <input id="reset-time" placeholder="or time:MS / an offset"><button>Reset</button><span id="reset-result"></span></form>
      <p><a href="#/dlq" id="group-dlq">Dead letters of ${esc(g.group)}</a></p>`;
    document.getElementById("group-dlq").onclick = () => (state.dlqGroup = g.group);
    document.getElementById("reset-form").onsubmit = async (e) => {
      e.preventDefault();
      const to = document.getElementById("reset-time").value || document.getElementById("reset-to").value;
      try { await api(`/groups/${encodeURIComponent(name)}/reset`, { method: "POST", body: JSON.stringify({ to }) }); pages.group(name); }
      catch (error) { document.getElementById("reset-result").innerHTML = `<span class="error">${esc(error.message)}</span>`; }
    };
  },

  async messages() {
    const b = state.browse || {};
    view().innerHTML = `<h2>Messages</h2>
      <p class="muted">Browsing reads the log: it never consumes and changes no group.</p>
      <form class="inline" id="browse-form">
        <input id="browse-topic" placeholder="topic" value="${esc(b.topic || "")}">
        <input id="browse-queue" placeholder="queue (all)" size="8" value="${esc(b.queue ?? "")}">
        <input id="browse-from" placeholder="from offset" size="10" value="${esc(b.from ?? "")}">
        <input id="browse-since" placeholder="since (ms)" size="14" value="${esc(b.since ?? "")}">
        <input id="browse-tags" placeholder="tags (*)" size="10" value="${esc(b.tags || "")}">
        <input id="browse-where" placeholder="SQL92 where" value="${esc(b.where || "")}">
        <button id="browse-go">Browse</button></form>
      <form class="inline" id="find-form"><input id="find-id" placeholder="message id" size="26"><button id="find-go">Find by id</button>
        <input id="find-key" placeholder="key (in topic above)"><button id="find-key-go">Find by key (last hour)</button></form>
      <div id="browse-error" class="error"></div><div id="browse-result"></div><pre id="message-detail" hidden></pre>`;
    const show = (items) => {
      document.getElementById("browse-result").innerHTML = table("messages-table", [
        { title: "queue", num: true, value: (m) => m.queue }, { title: "offset", num: true, value: (m) => m.offset },
        { title: "stored", value: (m) => time(m.storeTimestamp) }, { title: "tag", value: (m) => m.tag }, { title: "keys", value: (m) => m.keys.join(" ") },
        { title: "body", value: (m) => (m.body ?? "(" + (m.bodyBase64 || "").length + " base64 chars)").slice(0, 80) }], items, true);
      bindRows("messages-table", items, (m) => { const d = document.getElementById("message-detail"); d.hidden = false; d.textContent = JSON.stringify(m, null, 2); });
    };
    const fail = (error) => (document.getElementById("browse-error").textContent = error.message);
    document.getElementById("browse-form").onsubmit = async (e) => {
      e.preventDefault();
      const get = (id) => document.getElementById(id).value.trim();
      state.browse = { topic: get("browse-topic"), queue: get("browse-queue"), from: get("browse-from"), since: get("browse-since"), tags: get("browse-tags"), where: get("browse-where") };
      const q = new URLSearchParams({ limit: "100" });
      for (const k of ["queue", "from", "since", "tags", "where"]) if (state.browse[k]) q.set(k, state.browse[k]);
      document.getElementById("browse-error").textContent = "";
      try { show((await api(`/topics/${encodeURIComponent(state.browse.topic)}/messages?${q}`)).items); } catch (error) { fail(error); }
    };
    document.getElementById("find-go").onclick = async (e) => {
      e.preventDefault();
      try { show([await api("/messages/" + encodeURIComponent(document.getElementById("find-id").value.trim()))]); } catch (error) { fail(error); }
    };
    document.getElementById("find-key-go").onclick = async (e) => {
      e.preventDefault();
      const q = new URLSearchParams({ topic: document.getElementById("browse-topic").value.trim(), key: document.getElementById("find-key").value.trim() });
      try { show((await api("/messages?" + q)).items); } catch (error) { fail(error); }
    };
    if (b.topic) document.getElementById("browse-go").click();
  },

  async dlq() {
    view().innerHTML = `<h2>Dead letters</h2>
      <form class="inline" id="dlq-form"><input id="dlq-group" placeholder="group" value="${esc(state.dlqGroup || "")}"><button id="dlq-load">Show</button></form>
      <div id="dlq-error" class="error"></div><div id="dlq-result"></div>`;
    const load = async () => {
      const group = document.getElementById("dlq-group").value.trim();
      state.dlqGroup = group;
      try {
        const d = await api("/dlq/" + encodeURIComponent(group));
        const jobs = await api(`/dlq/${encodeURIComponent(group)}/resend`);
        document.getElementById("dlq-result").innerHTML = `<p>Not resent yet: <b id="dlq-pending">${num(d.pending)}</b> of ${num(d.items.length)} shown</p>
          <form class="inline" id="resend-form">resend to the original topic at <input id="dlq-rate" type="number" min="0.1" step="any" value="100" size="6"> messages/s
            <button id="dlq-resend" ${d.pending ? "" : "disabled"}>Resend ${num(d.pending)}</button></form>
          <div id="dlq-job">${jobs.jobs.map((j) => `job ${esc(j.id)}: <span class="job-state">${esc(j.state)}</span>, ${num(j.resent)} of ${num(j.requested)} resent${j.error ? " — " + esc(j.error) : ""}`).join("<br>")}</div>
          ${table("dlq-table", [{ title: "stored", value: (m) => time(m.storeTimestamp) }, { title: "from topic", value: (m) => m.properties.DLQ_ORIGIN_TOPIC },
            { title: "reason", value: (m) => m.properties.DLQ_REASON }, { title: "body", value: (m) => (m.body ?? "").slice(0, 60) }], d.items)}`;
        document.getElementById("resend-form").onsubmit = async (e) => {
          e.preventDefault();
          try { await api(`/dlq/${encodeURIComponent(group)}/resend`, { method: "POST", body: JSON.stringify({ ratePerSecond: Number(document.getElementById("dlq-rate").value) }) }); }
          catch (error) { document.getElementById("dlq-error").textContent = error.message; }
          setTimeout(load, 500);
        };
        if (jobs.jobs.some((j) => j.state === "running")) setTimeout(load, 1000);
      } catch (error) { document.getElementById("dlq-error").textContent = error.message; }
    };
    document.getElementById("dlq-form").onsubmit = (e) => { e.preventDefault(); load(); };
    if (state.dlqGroup) load();
  },

  async plugins() {
    const d = await api("/plugins");
    view().innerHTML = `<h2>Plugins</h2>${table("plugins-table", [
        { title: "plugin", value: (p) => p.name }, { title: "type", value: (p) => p.type }, { title: "status", value: (p) => p.status },
        { title: "in", num: true, value: (p) => (p.counts ? p.counts.messagesIn : "") }, { title: "out", num: true, value: (p) => (p.counts ? p.counts.messagesOut : "") },
        { title: "errors", num: true, value: (p) => (p.counts ? p.counts.errors : "") }, { title: "what", value: (p) => p.summary }, { title: "guarantee", value: (p) => p.guarantee }], d.plugins)}
      <h3>Flows</h3>${d.flows.map((f) => `<div class="flow">${esc(f.path.join(" "))} — <b>${esc(f.guarantee)}</b> <span class="muted">(${esc(f.weakestLink)})</span></div>`).join("") || '<p class="muted">none</p>'}
      ${d.warnings.length ? `<h3>Warnings</h3>${d.warnings.map((w) => `<div class="error">${esc(w)}</div>`).join("")}` : ""}`;
  },

  async connections() {
    const d = await api("/connections");
    view().innerHTML = `<h2>Connections</h2>${table("connections-table", [
      { title: "plugin", value: (c) => c.plugin }, { title: "id", num: true, value: (c) => c.id }, { title: "address", value: (c) => c.address },
      { title: "client", value: (c) => c.client }, { title: "token", value: (c) => c.token }, { title: "since", value: (c) => time(c.connectedAt) },
      { title: "subscriptions", value: (c) => c.subscriptions.map((s) => `${s.group}←${s.topic} (credit ${s.credit}${s.push ? "" : ", pull"})`).join("; ") },
      { title: "", html: (c) => `<button class="disconnect" data-plugin="${esc(c.plugin)}" data-id="${c.id}">Disconnect</button>` }], d.items)}`;
    document.querySelectorAll("button.disconnect").forEach((b) => (b.onclick = async () => { await api(`/connections/${encodeURIComponent(b.dataset.plugin)}/${b.dataset.id}`, { method: "DELETE" }); pages.connections(); }));
  },
};

async function route() {
  clearInterval(state.timer);
  const [, page, arg] = (location.hash || "#/overview").split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.id === "nav-" + (page === "groups" && arg ? "groups" : page)));
  try {
    if (page === "groups" && arg) await pages.group(decodeURIComponent(arg));
    else await (pages[page] || pages.overview)();
    document.getElementById("login-view").hidden = true;
    document.getElementById("logout").hidden = !state.token;
    if (page === "overview" || !page) state.timer = setInterval(() => pages.overview().catch(() => {}), 5000);
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(state.token ? "that token was refused" : "");
    else view().innerHTML = `<p class="error">${esc(error.message)}</p>`;
  }
}

window.addEventListener("hashchange", route);
route();
"""#
}
