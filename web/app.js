// The buyer's page: the list of drops, and a drop with live stock (EventSource), Hold and Pay.
// Paying asks the payment service (checkout); the order arrives on the buyer's own stream,
// read with fetch because EventSource cannot send the token in a header (and tokens stay out
// of URLs). No framework and nothing fetched from elsewhere: the binary serves all of it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const view = $("#view");
let token = null;
let stream = null;
let ticker = null;
// The buyer's own stream (GET /v1/me/events) and the hold being paid for.
let mine = null;
let paying = null;

const MESSAGES = {
  "sold-out": () => "Sold out.",
  "limit-exceeded": (p) => `You have reached the limit of ${p.limit} per buyer for this drop.`,
  "drop-not-live": (p) => `This drop is ${p.state}, not live.`,
  "hold-expired": () => "Your hold expired; the item is back on sale.",
  "hold-released": () => "This hold was released.",
  "hold-confirmed": () => "This hold is already confirmed.",
  "overloaded": () => "Too many buyers right now: try again in a moment.",
  "unauthorized": (p) => `Your token was not accepted: ${p.detail}`,
  "not-admitted": () => "This drop admits buyers from its queue: join it and wait for your turn.",
  "admission-expired": () => "Your turn in the queue has passed.",
  "queue-closed": () => "The queue is closed.",
  "not-sold-out": (p) => `${p.available} left: hold one instead of waiting.`,
  "entries-closed": () => "Entries are closed: the winners were drawn at the start.",
  "code-invalid": (p) => `That access code does not work here: ${p.reason}.`,
  "code-used-up": () => "That access code has been used up.",
};
// A queue drop: the buyer's place (from GET .../queue) and the admission token it earned.
let myPlace = null;
// The buyer's waiting-list entries in this drop (GET .../waitlist), and when they were read.
let myWaits = [];
let waitsReadAt = 0;
// The hold the page shows (`{hold_id, sku}`), until it is paid for or released.
let shownHold = null;
// A raffle: the buyer's entries (GET .../entries).
let myEntries = [];

function say(text, kind = "") {
  const el = $("#message");
  el.textContent = text;
  el.className = kind;
}

function sayProblem(problem) {
  const known = MESSAGES[problem.code];
  say(known ? known(problem) : problem.detail || "Something went wrong.", "error");
}

function money(price) {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: price.currency })
    .format(price.amount / 100);
}

function remaining(until) {
  const ms = Math.max(0, new Date(until) - Date.now());
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? `${h}h ` : "") + `${String(m).padStart(2, "0")}m ${String(sec).padStart(2, "0")}s`;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (method === "POST") headers["Idempotency-Key"] = crypto.randomUUID();
  if (myPlace && myPlace.admission) headers["Dropd-Admission"] = myPlace.admission.token;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  return { ok: res.ok, status: res.status, data };
}

async function findToken() {
  const query = new URLSearchParams(location.search);
  const fromQuery = query.get("token");
  if (fromQuery) {
    localStorage.setItem("dropd-token", fromQuery);
    // Out of the address bar, the history and any bookmark at once: keep the rest of the URL.
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  token = localStorage.getItem("dropd-token");
  if (!token) {
    // Only a server started with --demo hands out tokens.
    const res = await fetch("/v1/demo/token").catch(() => null);
    if (res && res.ok) {
      token = (await res.json()).token;
      localStorage.setItem("dropd-token", token);
    }
  }
  $("#token-panel").hidden = Boolean(token);
  if (token) {
    try {
      $("#who").textContent = `buyer: ${JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub}`;
    } catch { $("#who").textContent = ""; }
  }
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("#token-input").value.trim();
  if (value) { localStorage.setItem("dropd-token", value); findToken(); route(); }
});

function stop() {
  if (stream) { stream.close(); stream = null; }
  if (ticker) { clearInterval(ticker); ticker = null; }
}

async function showList() {
  const res = await api("GET", "/v1/drops");
  if (!res.ok) return sayProblem(res.data || {});
  view.innerHTML = "<h1>Drops</h1>";
  if (!res.data.drops.length) view.insertAdjacentHTML("beforeend", "<p class=muted>No drops yet.</p>");
  for (const drop of res.data.drops) {
    const a = document.createElement("a");
    a.className = "card drop-link";
    a.href = `#/drops/${drop.id}`;
    a.innerHTML = `<strong></strong> <span class="state ${drop.state}">${drop.state}</span><div class=muted></div>`;
    a.querySelector("strong").textContent = drop.name;
    a.querySelector(".muted").textContent = drop.state === "scheduled"
      ? `starts in ${remaining(drop.starts_at)}` : drop.description;
    view.appendChild(a);
  }
}

function renderDrop(drop) {
  view.innerHTML = `
    <div class="card">
      <h1 id="drop-name"></h1>
      <p id="drop-description" class="muted"></p>
      <p><span id="drop-state" class="state"></span> <span id="countdown" class="countdown"></span></p>
      <p class="muted">Limit <span id="limit"></span> per buyer; a hold lasts <span id="hold-seconds"></span> s.</p>
      <p><label>Access code (presale) <input id="code" autocomplete="off" maxlength="64" placeholder="XXXX-XXXX-XXXX-XXXX"></label></p>
      <div id="skus"></div>
    </div>
    <div id="queue" class="card" hidden>
      <p id="queue-status"></p>
      <button id="join">Join the queue</button>
    </div>
    <div id="draw" class="card" hidden><p id="draw-about"></p><div id="draw-status"></div></div>
    <div id="waitlist" class="card" hidden></div>
    <div id="hold" class="card" hidden></div>`;
  myPlace = null;
  myWaits = [];
  shownHold = null;
  myEntries = [];
  if (drop.draw) {
    $("#draw").hidden = false;
    $("#draw-about").textContent = `A raffle: enter before ${new Date(drop.starts_at).toLocaleString()}; the winners are drawn at random then (entering early buys nothing), and everyone else waits in drawn order for units a winner does not pay for.`;
    if (token) loadEntries(drop.id);
  }
  if (token) loadWaitlist(drop.id);
  if (drop.queue) {
    $("#queue").hidden = false;
    $("#queue-status").textContent = "Everyone who joins before the start gets a place drawn at random at the start: there is no need to come early.";
    $("#join").disabled = !token;
    $("#join").addEventListener("click", () => joinQueue(drop.id));
    if (token) loadPlace(drop.id);
  }
  const skus = $("#skus");
  for (const sku of drop.skus) {
    const row = document.createElement("div");
    row.className = "sku";
    row.dataset.sku = sku.sku;
    row.innerHTML = `<span class=name></span><span class=price></span><span class=available></span><button class=hold>Hold</button><button class=wait hidden>Join the waiting list</button><button class=enter hidden>Enter the draw</button>`;
    row.querySelector(".name").textContent = sku.name;
    row.querySelector(".price").textContent = money(sku.price);
    row.querySelector("button.hold").addEventListener("click", () => hold(drop.id, sku.sku));
    row.querySelector("button.wait").addEventListener("click", () => joinWaitlist(drop.id, sku.sku));
    row.querySelector("button.enter").addEventListener("click", () => enterDraw(drop.id, sku.sku));
    skus.appendChild(row);
  }
  $("#code").addEventListener("input", () => updateDrop({}));
  updateDrop(drop);
}

let current = null;

function accessCode() {
  const input = $("#code");
  return input ? input.value.trim() : "";
}

function updateDrop(fields) {
  current = { ...current, ...fields };
  $("#drop-name").textContent = current.name;
  $("#drop-description").textContent = current.description || "";
  $("#limit").textContent = current.per_buyer_limit;
  $("#hold-seconds").textContent = current.hold_seconds;
  const state = $("#drop-state");
  state.textContent = current.state;
  state.className = `state ${current.state}`;
  if (fields.skus) {
    for (const sku of fields.skus) {
      const row = view.querySelector(`.sku[data-sku="${CSS.escape(sku.sku)}"]`);
      if (row && sku.price) row.querySelector(".price").textContent = money(sku.price);
      if (row && sku.name) row.querySelector(".name").textContent = sku.name;
      updateStock(sku.sku, sku.available);
    }
  }
  for (const row of view.querySelectorAll(".sku")) {
    showButtons(row, Number(row.querySelector(".available").textContent));
  }
  tick();
}

function updateStock(sku, available) {
  const row = view.querySelector(`.sku[data-sku="${CSS.escape(sku)}"]`);
  if (!row) return;
  const el = row.querySelector(".available");
  el.textContent = available;
  el.classList.toggle("zero", available === 0);
  showButtons(row, available);
}

// Hold while there is stock; once it is gone, the waiting list in its place (unless the buyer
// is on it already, or holds the SKU's offer).
function showButtons(row, available) {
  const sku = row.dataset.sku;
  const waiting = myWaits.some((w) => w.sku === sku && w.state === "waiting");
  const offered = shownHold && shownHold.sku === sku;
  const wait = available === 0 && mayAct() && !waiting && !offered;
  // Before a raffle's draw, entering is the only way in.
  const entering = !!current.draw && !current.draw.drawn_at;
  const entered = myEntries.some((e) => e.sku === sku);
  row.querySelector("button.hold").disabled = !canHold(available);
  row.querySelector("button.hold").hidden = wait || entering;
  row.querySelector("button.wait").hidden = !wait || entering;
  row.querySelector("button.enter").hidden = !(entering && !!token && !entered);
}

async function enterDraw(dropId, sku) {
  const res = await api("POST", `/v1/drops/${encodeURIComponent(dropId)}/entries`, { sku, quantity: 1 });
  if (!res.ok) return sayProblem(res.data || {});
  say(`You are in the draw for ${sku}.`, "ok");
  listenToMine();
  await loadEntries(dropId);
}

// The buyer's entries and, once drawn, their results: a win shows as the buyer's hold.
async function loadEntries(dropId) {
  const res = await api("GET", `/v1/drops/${encodeURIComponent(dropId)}/entries`);
  if (!res.ok || !current || current.id !== dropId) return;
  myEntries = res.data.entries;
  if (myEntries.length) listenToMine();
  const status = $("#draw-status");
  status.textContent = "";
  for (const entry of myEntries) {
    const p = document.createElement("p");
    p.className = `entry ${entry.outcome}`;
    p.dataset.sku = entry.sku;
    p.textContent = entry.outcome === "pending" ? `Entered for ${entry.sku}: the winners are drawn at the start.`
      : entry.outcome === "won" ? `You won ${entry.won} x ${entry.sku}!`
      : `Not drawn for ${entry.sku} (drawn place ${entry.rank}): you wait for it on the waiting list.`;
    status.appendChild(p);
  }
  const won = myEntries.find((e) => e.outcome === "won" && e.hold_id);
  if (won && !shownHold) {
    const hold = await api("GET", `/v1/holds/${won.hold_id}`);
    if (hold.ok && hold.data.state === "active") {
      showHold(hold.data, `You won ${won.won} x ${won.sku} in the draw. Pay before the time runs out.`);
    }
  }
  if (myEntries.some((e) => e.outcome === "lost")) await loadWaitlist(dropId);
  updateDrop({});
}

function mayAct() {
  const admitted = !current.queue || (myPlace && myPlace.standing === "admitted");
  // An access code opens a drop before its start (a presale): the server judges the code.
  const open = current.state === "live" || (current.state === "scheduled" && !!accessCode());
  return open && !!token && admitted;
}

function canHold(available) {
  return available > 0 && mayAct();
}

async function joinWaitlist(dropId, sku) {
  const res = await api("POST", `/v1/drops/${encodeURIComponent(dropId)}/waitlist`, { sku, quantity: 1 });
  if (!res.ok) return sayProblem(res.data || {});
  say(`You are on the waiting list for ${sku}: freed units are offered in turn.`, "ok");
  listenToMine();
  await loadWaitlist(dropId);
}

async function leaveWaitlist(dropId, sku) {
  const res = await api("DELETE", `/v1/drops/${encodeURIComponent(dropId)}/waitlist/${encodeURIComponent(sku)}`);
  if (!res.ok) return sayProblem(res.data || {});
  say(`You left the waiting list for ${sku}.`);
  await loadWaitlist(dropId);
}

// Reads the buyer's entries; an offer that arrived shows as the buyer's hold.
async function loadWaitlist(dropId, offered = null) {
  waitsReadAt = Date.now();
  const res = await api("GET", `/v1/drops/${encodeURIComponent(dropId)}/waitlist`);
  if (!res.ok || !current || current.id !== dropId) return;
  myWaits = res.data.entries;
  const panel = $("#waitlist");
  panel.textContent = "";
  for (const entry of myWaits.filter((w) => w.state === "waiting")) {
    const p = document.createElement("p");
    p.className = "wait-entry";
    p.dataset.sku = entry.sku;
    p.innerHTML = `<span class=wait-status></span> <button class=leave>Leave</button>`;
    p.querySelector(".wait-status").textContent = `Waiting list for ${entry.sku}: you are number ${entry.position} in line.`;
    p.querySelector("button").addEventListener("click", () => leaveWaitlist(dropId, entry.sku));
    panel.appendChild(p);
  }
  panel.hidden = !panel.childElementCount;
  if (myWaits.some((w) => w.state === "waiting")) listenToMine();
  if (offered && myWaits.some((w) => w.state === "offered" && w.hold_id === offered.hold_id)) {
    showHold(offered, `Offered from the waiting list: ${offered.quantity} x ${offered.sku}. Pay before the time runs out.`);
  }
  updateDrop({});
}

async function joinQueue(dropId) {
  const res = await api("POST", `/v1/drops/${encodeURIComponent(dropId)}/queue`);
  if (!res.ok) return sayProblem(res.data || {});
  showPlace(res.data);
}

async function loadPlace(dropId) {
  const res = await api("GET", `/v1/drops/${encodeURIComponent(dropId)}/queue`);
  if (res.ok) showPlace(res.data);
}

// Where the buyer stands; between reads of their place, the stream's serving number moves it.
function showPlace(place, serving = place.serving, rate = place.admission_rate, paused = place.admission_paused) {
  myPlace = place;
  $("#join").hidden = true;
  const status = $("#queue-status");
  if (place.place === null) {
    status.textContent = "You are in the queue. Places are drawn at the start.";
  } else if (place.standing === "admitted") {
    status.textContent = `It's your turn (place ${place.place}): hold before ${new Date(place.admission.expires_at).toLocaleTimeString()}.`;
  } else if (place.standing === "expired") {
    status.textContent = `Your turn (place ${place.place}) has passed.`;
  } else {
    const ahead = Math.max(0, place.place - 1 - serving);
    const wait = paused || rate === 0 ? "admission is paused" : `about ${Math.ceil(ahead / rate)} s`;
    status.textContent = `Place ${place.place}: ${ahead} ahead of you, ${wait}.`;
  }
  status.dataset.standing = place.standing;
  updateDrop({});
}

function onQueue(message) {
  if (!myPlace) return;
  const drawn = myPlace.place === null && message.seeded;
  const served = myPlace.standing === "waiting" && message.serving >= myPlace.place;
  // Only a change of standing needs the server (it signs the admission); the rest is arithmetic.
  if (drawn || served) return loadPlace(current.id);
  if (myPlace.standing === "waiting") {
    showPlace(myPlace, message.serving, message.admission_rate, message.admission_paused);
  }
}

function tick() {
  const el = $("#countdown");
  if (!el || !current) return;
  el.textContent = current.state === "scheduled" ? `starts in ${remaining(current.starts_at)}`
    : current.state === "live" ? `ends in ${remaining(current.ends_at)}` : "";
  const hold = $("#hold-remaining");
  if (hold) hold.textContent = remaining(hold.dataset.until);
  // Others ahead are offered or leave: the place is read again every few seconds while waiting.
  if (myWaits.some((w) => w.state === "waiting") && Date.now() - waitsReadAt > 5000) {
    loadWaitlist(current.id);
  }
  if (current.state === "scheduled" && new Date(current.starts_at) <= Date.now()) {
    updateDrop({ state: "live" });
  }
}

async function showDrop(id) {
  const res = await api("GET", `/v1/drops/${encodeURIComponent(id)}`);
  if (!res.ok) return sayProblem(res.data || {});
  current = null;
  renderDrop(res.data);
  ticker = setInterval(tick, 1000);
  stream = new EventSource(`/v1/drops/${encodeURIComponent(id)}/events`);
  stream.addEventListener("snapshot", (e) => updateDrop(JSON.parse(e.data)));
  stream.addEventListener("stock", (e) => {
    for (const sku of JSON.parse(e.data).skus) updateStock(sku.sku, sku.available);
  });
  stream.addEventListener("drop", (e) => {
    const fields = JSON.parse(e.data);
    // A new mode (queue, raffle) changes what the page offers: draw it again.
    if (fields.mode && fields.mode !== current.mode) return route();
    updateDrop(fields);
  });
  stream.addEventListener("queue", (e) => onQueue(JSON.parse(e.data)));
}

async function hold(dropId, sku) {
  say("Holding...");
  const body = { sku, quantity: 1 };
  if (accessCode()) body.code = accessCode();
  const res = await api("POST", `/v1/drops/${encodeURIComponent(dropId)}/holds`, body);
  if (!res.ok) return sayProblem(res.data || {});
  showHold(res.data, `Held 1 x ${sku}. Pay before the time runs out.`);
}

function showHold(h, message) {
  shownHold = { hold_id: h.hold_id, sku: h.sku };
  say(message, "ok");
  const panel = $("#hold");
  panel.hidden = false;
  panel.innerHTML = `<p>Your hold on <strong></strong> (arrival #${h.attempt_seq}) expires in
    <span id="hold-remaining" data-until="${h.expires_at}"></span>.</p>
    <button id="pay">Pay</button> <button id="release">Release</button>`;
  panel.querySelector("strong").textContent = h.sku;
  $("#pay").addEventListener("click", () => pay(h.hold_id));
  $("#release").addEventListener("click", () => releaseHold(h.hold_id));
  tick();
}

function bought(order) {
  if (!paying || order.hold_id !== paying) return;
  paying = null;
  shownHold = null;
  $("#hold").hidden = false;
  $("#hold").innerHTML = `<p>Order <code></code> confirmed: ${money(order.total)}.</p>`;
  $("#hold code").textContent = order.order_id;
  say("Bought!", "ok");
}

// Server-sent events from a fetch body: blocks separated by a blank line, `event:` and `data:`.
async function readEvents(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// Opens the buyer's own stream once; reconnects after a pause, and then asks the hold being paid
// for how it stands, in case its order arrived while the stream was down.
function listenToMine() {
  if (mine || !token) return mine;
  const controller = new AbortController();
  mine = (async () => {
    for (;;) {
      try {
        const res = await fetch("/v1/me/events", {
          headers: { Authorization: `Bearer ${token}` }, signal: controller.signal,
        });
        if (res.ok) {
          if (paying) checkHold(paying);
          await readEvents(res, (name, data) => {
            if (name === "order.created") bought(data);
            if (name === "waitlist.offered" && current) loadWaitlist(current.id, data);
            if ((name === "draw.won" || name === "draw.lost") && current) loadEntries(current.id);
            if (name === "hold.expired" && shownHold && data.hold_id === shownHold.hold_id) {
              shownHold = null;
              if (current) updateDrop({});
            }
            if (name === "hold.expired" && data.hold_id === paying) {
              paying = null;
              sayProblem({ code: "hold-expired" });
            }
          });
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return mine;
}

async function checkHold(holdId) {
  const res = await api("GET", `/v1/holds/${holdId}`);
  if (res.ok && res.data.state === "confirmed") {
    const order = await api("GET", `/v1/orders/${res.data.order_id}`);
    if (order.ok) bought(order.data);
  }
}

async function pay(holdId) {
  paying = holdId;
  listenToMine();
  const res = await api("POST", `/v1/holds/${holdId}/checkout`);
  if (!res.ok) { paying = null; return sayProblem(res.data || {}); }
  say("Waiting for the payment service to confirm your payment...");
  $("#pay").disabled = true;
  // Where buyers may confirm their own holds (a demo), the page plays the payment service.
  const confirmed = await api("POST", `/v1/holds/${holdId}/confirm`, { payment_ref: `web-${Date.now()}` });
  if (confirmed.ok) bought(confirmed.data);
  else if (confirmed.data && confirmed.data.code !== "confirmation-not-allowed") {
    paying = null;
    sayProblem(confirmed.data);
  }
}

async function releaseHold(holdId) {
  const res = await api("DELETE", `/v1/holds/${holdId}`);
  if (!res.ok) return sayProblem(res.data || {});
  $("#hold").hidden = true;
  shownHold = null;
  updateDrop({});
  say("Released: the item is back on sale.");
}

async function route() {
  stop();
  say("");
  const match = location.hash.match(/^#\/drops\/(.+)$/);
  if (match) await showDrop(decodeURIComponent(match[1]));
  else await showList();
}

window.addEventListener("hashchange", route);
findToken().then(route);
