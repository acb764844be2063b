// The operator page: live charts from GET /v1/admin/events (read with fetch, because
// EventSource cannot send the admin key), and drop controls through the admin API.
"use strict";

const $ = (sel) => document.querySelector(sel);
const COLORS = { "held": "#0a7d32", "sold-out": "#b00020", "sold-out-from-memory": "#e57373", "limit-exceeded": "#b58100", "drop-not-live": "#777", "replayed": "#1565c0", "overloaded": "#6a1b9a", "other": "#000" };
const WINDOW = 120;
let key = sessionStorage.getItem("dropd-admin-key");
let previous = null;
const series = { attempts: {}, queue: [], batch: [] };

function say(text, kind = "") { const el = $("#message"); el.textContent = text; el.className = kind; }

function push(list, value) { list.push(value); if (list.length > WINDOW) list.shift(); }

function draw(canvas, lines) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  ctx.fillStyle = "#888";
  ctx.fillText(String(Math.round(max)), 4, 12);
  for (const { values, color } of lines) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / (WINDOW - 1)) * canvas.width;
      const y = canvas.height - (v / max) * (canvas.height - 16) - 2;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function onStats(stats) {
  const seconds = previous ? (new Date(stats.at) - new Date(previous.at)) / 1000 || 1 : 1;
  for (const [outcome, total] of Object.entries(stats.attempts)) {
    const rate = previous ? Math.max(0, (total - previous.attempts[outcome]) / seconds) : 0;
    push(series.attempts[outcome] ??= [], rate);
  }
  const batches = previous ? stats.batches - previous.batches : 0;
  const commands = previous ? stats.batched_commands - previous.batched_commands : 0;
  push(series.queue, stats.queue_depth);
  push(series.batch, batches ? commands / batches : 0);
  previous = stats;
  draw($("#attempts"), Object.entries(series.attempts).map(([o, values]) => ({ values, color: COLORS[o] || "#000" })));
  const legend = $("#legend");
  legend.textContent = "";
  for (const outcome of Object.keys(series.attempts)) {
    const span = document.createElement("span");
    span.style.color = COLORS[outcome] || "#000";
    span.textContent = `\u25A0 ${outcome} `;
    legend.appendChild(span);
  }
  draw($("#writer"), [{ values: series.queue, color: "#6a1b9a" }, { values: series.batch, color: "#1565c0" }]);
  $("#queue").textContent = stats.queue_depth;
  $("#batch").textContent = series.batch[series.batch.length - 1].toFixed(1);
  $("#subs").textContent = stats.sse_subscribers;
  $("#tick").textContent = stats.sse_tick_ms;
  $("#lag").textContent = stats.replica_lag_ms === null ? "n/a (no replica)" : `${stats.replica_lag_ms} ms`;
  renderDrops(stats.drops);
}

let renderedDrops = "";

function renderDrops(drops) {
  // Rebuild only on change, so a button is not replaced under the operator's pointer.
  // A queue's serving number moves every second: shown in place, it does not rebuild the rows.
  const json = JSON.stringify(drops.map((d) => d.queue ? { ...d, queue: { ...d.queue, serving: 0 } } : d));
  for (const drop of drops) {
    const serving = document.querySelector(`.drop[data-drop="${CSS.escape(drop.id)}"] .serving`);
    if (serving && drop.queue) serving.textContent = drop.queue.serving;
  }
  if (json === renderedDrops) return;
  renderedDrops = json;
  const root = $("#drops");
  root.innerHTML = "";
  for (const drop of drops) {
    const div = document.createElement("div");
    div.className = "drop";
    div.dataset.drop = drop.id;
    div.innerHTML = `<h3><span class=name></span> <span class="state ${drop.state}">${drop.state}</span>
      <button data-state="paused">Pause</button> <button data-state="live">Resume</button> <button data-state="closed">Close</button></h3>
      <table><thead><tr><th>SKU</th><th>stock</th><th>available</th><th>held</th><th>sold</th><th>waiting</th></tr></thead><tbody></tbody></table>`;
    div.querySelector(".name").textContent = `${drop.name} (${drop.id}, v${drop.version})`;
    for (const sku of drop.skus) {
      const tr = document.createElement("tr");
      tr.dataset.sku = sku.sku;
      for (const field of ["sku", "stock", "available", "held", "sold", "waiting"]) {
        const td = document.createElement("td");
        td.className = field;
        td.textContent = sku[field];
        tr.appendChild(td);
      }
      div.querySelector("tbody").appendChild(tr);
    }
    for (const button of div.querySelectorAll("button[data-state]")) {
      button.addEventListener("click", () => setState(drop.id, button.dataset.state));
    }
    if (drop.draw) {
      const d = document.createElement("p");
      d.className = "draw";
      d.textContent = drop.draw.drawn_at
        ? `Raffle: ${drop.draw.entered} entries, drawn at ${new Date(drop.draw.drawn_at).toLocaleString()}: ${drop.draw.winners} winners (seed ${drop.draw.seed.slice(0, 16)}...)`
        : `Raffle: ${drop.draw.entered} entries so far; drawn at the start (commitment ${drop.draw.commitment.slice(0, 16)}...)`;
      div.insertBefore(d, div.querySelector("table"));
    }
    if (drop.queue) {
      const q = document.createElement("p");
      q.className = "queue";
      q.innerHTML = `Queue: <span class=joined></span> joined, serving <span class=serving></span>
        at <input class=rate type=number min=0 max=100000 size=6> buyers/s
        <button class=set-rate>Set rate</button> <button class=admission></button>
        <span class=admission-state></span>`;
      q.querySelector(".joined").textContent = drop.queue.joined;
      q.querySelector(".serving").textContent = drop.queue.serving;
      q.querySelector(".rate").value = drop.queue.admission_rate;
      q.querySelector(".admission-state").textContent = drop.queue.admission_paused ? "admission paused" : (drop.queue.seeded ? "admitting" : "waiting for the start");
      const toggle = q.querySelector("button.admission");
      toggle.textContent = drop.queue.admission_paused ? "Resume admission" : "Pause admission";
      toggle.addEventListener("click", () => setAdmission(drop.id, { admission_paused: !drop.queue.admission_paused }));
      q.querySelector("button.set-rate").addEventListener("click", () =>
        setAdmission(drop.id, { admission_rate: Number(q.querySelector(".rate").value) }));
      div.insertBefore(q, div.querySelector("table"));
    }
    root.appendChild(div);
  }
}

async function admin(method, path, body) {
  const res = await fetch(path, { method, headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
  const data = await res.json().catch(() => null);
  if (!res.ok) say(data ? `${data.code}: ${data.detail}` : `HTTP ${res.status}`, "error");
  return res.ok;
}

async function setAdmission(id, change) {
  if (await admin("PATCH", `/v1/admin/drops/${encodeURIComponent(id)}`, change)) say(`${id}: admission updated.`, "ok");
}

async function setState(id, state) {
  if (await admin("PATCH", `/v1/admin/drops/${encodeURIComponent(id)}`, { state })) say(`${id} is now ${state}.`, "ok");
}

$("#create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  let spec;
  try { spec = JSON.parse($("#create-json").value); } catch (err) { return say(`Not JSON: ${err.message}`, "error"); }
  if (await admin("POST", "/v1/admin/drops", spec)) say(`Created ${spec.id}.`, "ok");
});

async function connect() {
  const res = await fetch("/v1/admin/events", { headers: { Authorization: `Bearer ${key}` } });
  if (!res.ok) {
    const problem = await res.json().catch(() => ({}));
    sessionStorage.removeItem("dropd-admin-key");
    $("#key-panel").hidden = false;
    return say(problem.detail || `HTTP ${res.status}`, "error");
  }
  $("#key-panel").hidden = true;
  $("#dashboard").hidden = false;
  $("#conn").textContent = "live";
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").find((l) => l.startsWith("data: "));
      if (data) onStats(JSON.parse(data.slice(6)));
    }
  }
  $("#conn").textContent = "disconnected; retrying";
  setTimeout(connect, 3000);
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("#key-input").value.trim();
  sessionStorage.setItem("dropd-admin-key", key);
  connect();
});

const start = new Date(Date.now() + 3600e3), end = new Date(Date.now() + 3 * 3600e3);
$("#create-json").value = JSON.stringify({
  id: "new-drop", name: "New drop", description: "", starts_at: start.toISOString(), ends_at: end.toISOString(),
  per_buyer_limit: 2, hold_seconds: 600,
  skus: [{ sku: "SKU-1", name: "Size 1", price: { amount: 10000, currency: "EUR" }, stock: 100 }],
}, null, 2);
if (key) connect();
