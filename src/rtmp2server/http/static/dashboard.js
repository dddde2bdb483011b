// The dashboard: the live streams from GET /api/v1/streams, polled once a second, one row
// each with its preview (preview.js) and an End button (DELETE /api/v1/streams/APP/NAME).
// The API token and play key live in sessionStorage (this tab only) and go out as
// "Authorization: Bearer TOKEN" and "?token=KEY".
"use strict";

const POLL_MS = 1000;
const HISTORY = 60; // sparkline points (one per poll)
const rows = new Map(); // "app/name" -> {tr, cells, history, preview}

const $ = (id) => document.getElementById(id);
const stored = (k) => sessionStorage.getItem("rtmp2." + k) || "";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(method, path) {
  const headers = {};
  const token = stored("token");
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { method, headers, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(r.status + ": " + (body.error || r.statusText));
  return body;
}

function bits(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " Mb/s";
  if (n >= 1e3) return (n / 1e3).toFixed(0) + " kb/s";
  return n + " b/s";
}

function duration(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + "h" : "") + (h || m ? m + "m" : "") + (s % 60) + "s";
}

function videoText(t, health) {
  const parts = [[t.codec, t.profile, t.level].filter((x) => x !== null && x !== undefined).join(" ")];
  if (t.width && t.height) parts.push(t.width + "×" + t.height);
  const fps = health.fps || t.fps;
  if (fps) parts.push(Number(fps).toFixed(fps % 1 ? 2 : 0) + " fps");
  return parts.join(" · ");
}

function audioText(t) {
  const parts = [[t.codec, t.profile].filter((x) => x !== null && x !== undefined).join(" ")];
  if (t.sample_rate) parts.push(t.sample_rate + " Hz");
  if (t.channels) parts.push(t.channels + " ch");
  return parts.join(" · ");
}

function spark(canvas, history) {
  const ratio = window.devicePixelRatio || 1;
  const w = (canvas.width = 140 * ratio), h = (canvas.height = 32 * ratio);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  if (history.length < 2) return;
  const top = Math.max(...history, 1) * 1.25; // headroom: a steady rate is not the top edge
  g.beginPath();
  history.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * w, y = h - 2 - (v / top) * (h - 4);
    if (i) g.lineTo(x, y);
    else g.moveTo(x, y);
  });
  g.strokeStyle = "#2a6fdb";
  g.lineWidth = 1.5 * ratio;
  g.stroke();
}

function newRow(s) {
  const key = s.app + "/" + s.name;
  const tr = el("tr");
  tr.dataset.stream = key;
  const cells = {};
  for (const c of ["name", "video", "audio", "bitrate", "players", "health", "preview", "actions"]) {
    cells[c] = tr.appendChild(el("td", c));
  }
  const canvas = el("canvas", "spark");
  const rate = el("div", "dim rate");
  cells.bitrate.append(canvas, rate);
  const video = el("video", "preview");
  video.playsInline = true;
  const note = el("div", "dim note");
  cells.preview.append(video, note);
  const kick = el("button", "kick", "End");
  kick.title = "end this publish (DELETE /api/v1/streams/" + key + ")";
  kick.addEventListener("click", () => end(row));
  cells.actions.append(kick);
  const row = { key, app: s.app, name: s.name, tr, cells, canvas, rate, video, note, kick, history: [], preview: null };
  $("streams").tBodies[0].append(tr);
  rows.set(key, row);
  return row;
}

function setPreview(row, on) {
  if (on && !row.preview) {
    row.note.textContent = "";
    row.preview = startPreview(row.video, row.app, row.name, stored("playkey"), (text) => {
      row.note.textContent = text;
    });
  } else if (!on && row.preview) {
    row.preview.stop();
    row.preview = null;
  }
}

function update(row, s) {
  const name = row.cells.name;
  name.replaceChildren(
    el("b", "", row.key),
    el("div", "dim", "from " + (s.publisher.peer || "?") + " · " + duration(s.duration))
  );
  const video = s.tracks.filter((t) => t.kind === "video");
  const audio = s.tracks.filter((t) => t.kind === "audio");
  row.cells.video.textContent = video.map((t) => videoText(t, s.health)).join("; ") || "–";
  row.cells.audio.textContent = audio.map(audioText).join("; ") || "–";
  row.history.push(s.bitrate_in);
  if (row.history.length > HISTORY) row.history.shift();
  spark(row.canvas, row.history);
  row.rate.textContent = bits(s.bitrate_in) + " · out " + bits(s.bitrate_out);
  const by = {};
  for (const p of s.players) by[p.protocol] = (by[p.protocol] || 0) + 1;
  const split = Object.entries(by).map(([k, n]) => n + " " + k).join(", ");
  row.cells.players.textContent = s.players.length + (split ? " (" + split + ")" : "");
  row.cells.players.title = s.players.map((p) => p.protocol + " " + p.peer).join("\n");
  if (s.warnings.length) {
    const ul = el("ul", "warnings");
    for (const w of s.warnings) ul.append(el("li", "", w));
    row.cells.health.replaceChildren(ul);
  } else {
    row.cells.health.replaceChildren(el("span", "ok", "ok"));
  }
  setPreview(row, $("previews").checked);
}

function drop(row) {
  setPreview(row, false);
  row.tr.remove();
  rows.delete(row.key);
}

async function end(row) {
  row.kick.disabled = true;
  try {
    const body = await api("DELETE", "/api/v1/streams/" + encodeURIComponent(row.app) + "/" + encodeURIComponent(row.name));
    status("ended " + body.closed, false, true);
    drop(row);
  } catch (err) {
    status("End " + row.key + ": " + err.message, true, true);
    row.kick.disabled = false;
  }
}

// What the operator did (End, and its failure) stays shown for a few seconds: the next poll's
// "N live stream(s)" line would otherwise replace it within a second.
const ACTION_SHOWN_MS = 5000;
let actionShownUntil = 0;

function status(text, error, action) {
  if (action) actionShownUntil = Date.now() + ACTION_SHOWN_MS;
  else if (Date.now() < actionShownUntil) return;
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function poll() {
  try {
    const { streams } = await api("GET", "/api/v1/streams");
    const live = new Set();
    for (const s of streams) {
      const key = s.app + "/" + s.name;
      live.add(key);
      update(rows.get(key) || newRow(s), s);
    }
    for (const row of [...rows.values()]) if (!live.has(row.key)) drop(row);
    $("empty").hidden = streams.length > 0;
    status(streams.length + " live stream(s) · " + new Date().toLocaleTimeString());
  } catch (err) {
    status("API: " + err.message + (err.message.startsWith("401") ? " (enter the API token)" : ""), true);
  }
  setTimeout(poll, POLL_MS);
}

$("token").value = stored("token");
$("playkey").value = stored("playkey");
$("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("rtmp2.token", $("token").value);
  sessionStorage.setItem("rtmp2.playkey", $("playkey").value);
  for (const row of rows.values()) setPreview(row, false); // a new play key: start again
  status("saved");
});
$("previews").addEventListener("change", () => {
  for (const row of rows.values()) setPreview(row, $("previews").checked);
});
poll();
