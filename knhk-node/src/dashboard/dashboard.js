// The knhk-node dashboard: polls the admin API once a second and draws what it says.
// Plain script, no build step. Everything a peer can influence (keys, ids, addresses)
// goes into the page as text, never as markup.
"use strict";

const POLL_MS = 1000;
const HISTORY = 120;
const history = [];
let previous = null;
let token = sessionStorage.getItem("knhk-admin-token") || "";

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the admin endpoint wants its token");
  }
  if (!response.ok) {
    throw new Error(path + ": HTTP " + response.status);
  }
  return response.json();
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = value;
  if (className) td.className = className;
  return td;
}

function short(id) {
  return id ? id.slice(0, 12) + "…" : "";
}

function showStatus(status) {
  text("node-id", status.id);
  const m = status.members;
  text("summary", `cluster ${status.cluster} · version ${status.version} · up ${status.uptime_s} s · QUIC ${status.addr} · admission ${status.admission}`);
  text("member-counts", `(${m.alive} alive, ${m.suspect} suspect, ${m.dead} dead, ${m.left} left; ${m.reserve} in reserve)`);
  const converged = document.getElementById("converged");
  converged.textContent = status.gossip.converged ? "converged: every peer asked lately had this root" : "converging: a peer answered with another root";
  converged.className = status.gossip.converged ? "good" : "bad";
  text("root", status.gossip.root);
  text("keys", `${status.gossip.keys} keys from ${status.gossip.writers} writers`);
  const p = status.partition;
  const partition = document.getElementById("partition");
  partition.textContent = p.partitioned
    ? `partitioned: reaches ${p.reachable} of ${p.counted}, needs ${p.required}; writes refused`
    : `reaches ${p.reachable} of ${p.counted} (quorum ${p.required}); writes accepted`;
  partition.className = p.partitioned ? "bad" : "good";
  const warnings = document.getElementById("warnings");
  warnings.replaceChildren(...status.warnings.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  const t = status.transport;
  const now = { at: performance.now(), frames: t.frames_sent + t.frames_received, bytes: t.bytes_sent + t.bytes_received };
  if (previous) {
    const seconds = Math.max((now.at - previous.at) / 1000, 0.001);
    history.push({ frames: (now.frames - previous.frames) / seconds, kb: (now.bytes - previous.bytes) / 1000 / seconds });
    if (history.length > HISTORY) history.shift();
  }
  previous = now;
  drawChart();
}

function showMembers(answer) {
  const body = document.querySelector("#members tbody");
  const rows = answer.members
    .slice()
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((member) => {
      const row = document.createElement("tr");
      row.dataset.id = member.id;
      row.dataset.state = member.state;
      cell(row, member.id, "mono");
      cell(row, member.state, "state-" + member.state);
      cell(row, member.rtt_ms == null ? "–" : member.rtt_ms.toFixed(2) + " ms");
      cell(row, member.cluster ? short(member.cluster) : "–", "mono");
      cell(row, member.addr || "–", "mono");
      cell(row, String(member.incarnation));
      return row;
    });
  body.replaceChildren(...rows);
}

function showUpdates(answer) {
  const body = document.querySelector("#updates tbody");
  const rows = answer.updates
    .slice()
    .reverse()
    .slice(0, 50)
    .map((update) => {
      const row = document.createElement("tr");
      row.dataset.key = update.key;
      cell(row, new Date(update.at_ms).toLocaleTimeString());
      cell(row, update.key, "mono");
      cell(row, update.deleted ? "deleted" : "written");
      cell(row, update.preview, "mono");
      return row;
    });
  body.replaceChildren(...rows);
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#dde1e7";
  g.strokeRect(pad, 4, w - pad - 4, h - pad);
  const series = [["frames", "#2f6fdb"], ["kb", "#d9731a"]];
  const top = Math.max(1, ...history.flatMap((p) => [p.frames, p.kb]));
  g.fillStyle = "#667";
  g.font = "11px sans-serif";
  g.fillText(top.toFixed(0), 2, 12);
  g.fillText("0", 2, h - pad);
  g.fillText("now", w - 26, h - 10);
  g.fillText(`−${HISTORY} s`, pad, h - 10);
  for (const [name, colour] of series) {
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    history.forEach((point, i) => {
      const x = pad + ((w - pad - 4) * (HISTORY - history.length + i)) / (HISTORY - 1);
      const y = 4 + (h - pad - 4) * (1 - point[name] / top);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

async function poll() {
  try {
    const [status, members, updates] = await Promise.all([api("/v1/status"), api("/v1/members"), api("/v1/updates")]);
    showStatus(status);
    showMembers(members);
    showUpdates(updates);
    document.body.dataset.loaded = "true";
  } catch (error) {
    text("summary", "admin endpoint: " + error.message);
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("knhk-admin-token", token);
  document.getElementById("token-form").hidden = true;
  poll();
});

poll();
setInterval(poll, POLL_MS);
