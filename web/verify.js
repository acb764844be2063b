// Checks a hold receipt in the browser with WebCrypto: the head's Ed25519 signature with a key
// from /v1/keys, the SHA-256 chain of the drop's ledger from its first entry, and the receipt's
// own entry. The same checks as `dropd verify`; canonical JSON is keys in order, no spaces.
"use strict";

const $ = (sel) => document.querySelector(sel);

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text) => new Uint8Array((text.match(/../g) || []).map((h) => parseInt(h, 16)));
const utf8 = (text) => new TextEncoder().encode(text);

async function sha256(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}

async function check(text) {
  let parsed;
  try { parsed = JSON.parse(text); } catch { throw new Error("that is not JSON"); }
  const receipt = parsed.receipt || parsed;
  const head = receipt.head;
  if (!head || !receipt.drop_id) throw new Error("that is not a receipt");
  const keys = await (await fetch("/v1/keys")).json();
  const key = keys.keys.find((k) => k.id === head.key_id);
  if (!key) throw new Error(`the server lists no key ${head.key_id}`);
  const { signature, ...signed } = head;
  const publicKey = await crypto.subtle.importKey("raw", unhex(key.public_key), { name: "Ed25519" }, false, ["verify"]);
  const good = await crypto.subtle.verify({ name: "Ed25519" }, publicKey, unhex(signature), utf8(canonical(signed)));
  if (!good) throw new Error("the head's signature does not verify");
  if (head.drop_id !== receipt.drop_id) throw new Error("the head is another drop's");

  const res = await fetch(`/v1/drops/${encodeURIComponent(receipt.drop_id)}/ledger`);
  if (!res.ok) throw new Error(`the ledger could not be read (${res.status})`);
  const lines = (await res.text()).split("\n").filter(Boolean);
  let previous = new Uint8Array(32);
  const entries = [];
  for (const [i, line] of lines.entries()) {
    const { hash, ...entry } = JSON.parse(line);
    if (entry.position !== i + 1) throw new Error(`line ${i + 1} is out of place`);
    const computed = await sha256(previous, utf8(canonical(entry)));
    if (hex(computed) !== hash) throw new Error(`entry ${entry.position}: its hash does not follow from the entries before it`);
    previous = computed;
    entries.push({ entry, hash });
  }
  const atHead = entries[head.position - 1];
  if (!atHead || atHead.hash !== head.hash) throw new Error("the ledger does not reach the signed head");
  const mine = entries[receipt.position - 1];
  if (!mine || mine.hash !== receipt.entry_hash) throw new Error("the ledger's entry at the receipt's position is not the receipt's");
  const e = mine.entry;
  if (e.kind !== "attempt" || e.attempt_seq !== receipt.attempt_seq || e.outcome !== receipt.outcome
      || e.buyer !== receipt.buyer || e.at !== receipt.received_at) {
    throw new Error("the receipt does not say what the ledger says");
  }
  const before = entries.filter(({ entry }) => entry.kind === "attempt" && entry.outcome === "held"
    && entry.attempt_seq < receipt.attempt_seq).length;
  return `Verified: attempt #${receipt.attempt_seq} (${receipt.outcome}) is entry ${receipt.position} of ${entries.length}, `
    + `signed by key ${head.key_id}; ${before} attempts before it were held.`;
}

$("#verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("#result");
  out.className = "";
  out.textContent = "Checking...";
  try {
    out.textContent = await check($("#receipt").value);
    out.className = "ok";
  } catch (err) {
    out.textContent = `Refused: ${err.message}`;
    out.className = "error";
  }
});
