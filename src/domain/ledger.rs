//! The fairness ledger: per drop, every change of the drop (attempts, releases, expiries,
//! confirmations, restocks, admin edits) as a typed entry in one hash chain,
//! `h_n = SHA-256(h_{n-1} || canonical(entry_n))` from 32 zero bytes. Heads are signed (by the
//! writer, once per batch and drop), so a receipt proves where its attempt stands in the order
//! the writer took attempts, and anyone holding the ledger can check every step of it.
//!
//! `canonical` is JSON with object keys in byte order, no insignificant whitespace and serde's
//! escaping: what `serde_json::Value` writes, and what a page recomputes with sorted keys and
//! `JSON.stringify`. No I/O here: the store appends, the CLI and the page verify.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Marks the bytes a head signature covers, so a signature over a head can never be mistaken
/// for one over anything else.
pub const HEAD_TYPE: &str = "dropd.ledger-head.v1";

/// What happened, typed: later kinds append to the same chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The drop was created with this stock and these rules.
    Created {
        skus: Vec<SkuStock>,
        per_buyer_limit: i64,
        starts_at: String,
        ends_at: String,
        /// How long a hold lasts (absent in entries written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_seconds: Option<i64>,
    },
    /// The drop reached its `ends_at`: the writer committed its close.
    Closed {
        ends_at: String,
    },
    /// A hold attempt the writer decided, in arrival order.
    Attempt {
        attempt_seq: i64,
        /// The buyer as a salted hash (see [`buyer_ref`]), never their id.
        buyer: String,
        sku: String,
        quantity: i64,
        /// `held`, or the refusal's code.
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_id: Option<String>,
    },
    Release {
        hold_id: String,
        sku: String,
        quantity: i64,
    },
    Expiry {
        hold_id: String,
        sku: String,
        quantity: i64,
    },
    Confirmation {
        hold_id: String,
        order_id: String,
        sku: String,
        quantity: i64,
    },
    Restock {
        sku: String,
        delta: i64,
        stock: i64,
    },
    /// An admin edit of the drop's settings: the new values of what changed.
    Edit {
        changes: Value,
    },
    /// A queue opened for joining: the SHA-256 of the seed that will order it.
    Queue {
        commitment: String,
        admission_rate: i64,
        admission_seconds: i64,
    },
    /// A buyer joined the queue (their salted name, as in attempts).
    Join {
        buyer: String,
        /// Their place, for a buyer who joined after the draw.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        place: Option<i64>,
    },
    /// The start drew the places of everyone who joined before it with this seed.
    Seeded {
        seed: String,
        joined: i64,
    },
    /// A buyer joined a sold-out SKU's waiting list (their salted name).
    Wait {
        buyer: String,
        sku: String,
        quantity: i64,
    },
    /// An admin set `units` of a SKU aside for the access codes of `tier`.
    Reserve {
        sku: String,
        tier: String,
        units: i64,
    },
    /// The next attempt came with a valid access code of `tier` (a presale opens the drop
    /// before its start to such attempts).
    Code {
        attempt_seq: i64,
        tier: String,
    },
    /// A raffle opened for entries: the SHA-256 of the seed that will draw its winners.
    Draw {
        commitment: String,
    },
    /// A buyer entered the raffle for a SKU (their salted name).
    Enter {
        buyer: String,
        sku: String,
        quantity: i64,
    },
    /// The start drew the winners of every entry with this seed.
    Drawn {
        seed: String,
        entries: i64,
    },
    /// A drawn entry won units: a hold for the winner, numbered like an attempt.
    Win {
        attempt_seq: i64,
        buyer: String,
        sku: String,
        quantity: i64,
        hold_id: String,
    },
    /// A buyer left a SKU's waiting list before an offer reached them.
    Unwait {
        buyer: String,
        sku: String,
    },
    /// Freed units became an offer hold for a waiter: numbered in the arrival order like an
    /// attempt, ending their wait.
    Offer {
        attempt_seq: i64,
        buyer: String,
        sku: String,
        quantity: i64,
        hold_id: String,
    },
}

impl Event {
    /// Its `kind`, as the serialized entry names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Created { .. } => "created",
            Event::Closed { .. } => "closed",
            Event::Attempt { .. } => "attempt",
            Event::Release { .. } => "release",
            Event::Expiry { .. } => "expiry",
            Event::Confirmation { .. } => "confirmation",
            Event::Restock { .. } => "restock",
            Event::Edit { .. } => "edit",
            Event::Queue { .. } => "queue",
            Event::Join { .. } => "join",
            Event::Seeded { .. } => "seeded",
            Event::Wait { .. } => "wait",
            Event::Unwait { .. } => "unwait",
            Event::Offer { .. } => "offer",
            Event::Draw { .. } => "draw",
            Event::Code { .. } => "code",
            Event::Reserve { .. } => "reserve",
            Event::Enter { .. } => "enter",
            Event::Drawn { .. } => "drawn",
            Event::Win { .. } => "win",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuStock {
    pub sku: String,
    pub stock: i64,
}

/// One entry: its place in the drop's chain, when the writer committed it, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub position: i64,
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

/// The bytes an entry is hashed as.
pub fn canonical(value: &impl Serialize) -> Vec<u8> {
    // `Value`'s maps are ordered by key: serializing through it sorts every object.
    serde_json::to_value(value)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}

/// `canonical(entry)`, written straight from the types (keys already in byte order) rather than
/// through a `Value` tree: the writer does this once per attempt.
pub fn canonical_entry(entry: &Entry) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, key: &str, value: &str) {
        out.extend_from_slice(b"\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut *out, value);
        out.push(b',');
    }
    fn int(out: &mut Vec<u8>, key: &str, value: i64) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "\"{key}\":{value},");
    }
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    text(&mut out, "at", &entry.at);
    let position = entry.position;
    match &entry.event {
        Event::Attempt {
            attempt_seq,
            buyer,
            sku,
            quantity,
            outcome,
            hold_id,
        } => {
            int(&mut out, "attempt_seq", *attempt_seq);
            text(&mut out, "buyer", buyer);
            if let Some(hold_id) = hold_id {
                text(&mut out, "hold_id", hold_id);
            }
            text(&mut out, "kind", entry.event.kind());
            text(&mut out, "outcome", outcome);
            int(&mut out, "position", position);
            int(&mut out, "quantity", *quantity);
            text(&mut out, "sku", sku);
        }
        Event::Release {
            hold_id,
            sku,
            quantity,
        }
        | Event::Expiry {
            hold_id,
            sku,
            quantity,
        } => {
            text(&mut out, "hold_id", hold_id);
            text(&mut out, "kind", entry.event.kind());
            int(&mut out, "position", position);
            int(&mut out, "quantity", *quantity);
            text(&mut out, "sku", sku);
        }
        Event::Confirmation {
            hold_id,
            order_id,
            sku,
            quantity,
        } => {
            text(&mut out, "hold_id", hold_id);
            text(&mut out, "kind", entry.event.kind());
            text(&mut out, "order_id", order_id);
            int(&mut out, "position", position);
            int(&mut out, "quantity", *quantity);
            text(&mut out, "sku", sku);
        }
        // Rare kinds: the general path.
        Event::Created { .. }
        | Event::Closed { .. }
        | Event::Restock { .. }
        | Event::Edit { .. }
        | Event::Queue { .. }
        | Event::Join { .. }
        | Event::Seeded { .. }
        | Event::Wait { .. }
        | Event::Unwait { .. }
        | Event::Offer { .. }
        | Event::Draw { .. }
        | Event::Code { .. }
        | Event::Reserve { .. }
        | Event::Enter { .. }
        | Event::Drawn { .. }
        | Event::Win { .. } => {
            return canonical(entry);
        }
    }
    if let Some(last) = out.last_mut() {
        *last = b'}';
    }
    out
}

/// The chain's next hash.
pub fn chain(previous: &[u8; 32], canonical_entry: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(previous);
    digest.update(canonical_entry);
    digest.finalize().into()
}

/// The name a buyer has in a drop's ledger: the first 16 bytes of SHA-256 over the drop's
/// secret salt and the buyer's id, in hex. Their receipt tells them theirs; nobody else can
/// link it to them.
pub fn buyer_ref(salt: &[u8], buyer: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(salt);
    digest.update(buyer.as_bytes());
    hex::encode(&digest.finalize()[..16])
}

/// A ledger line: the entry and its hash (hex), as the export writes it.
pub fn line(entry: &Entry, hash: &[u8; 32]) -> Value {
    let mut value = serde_json::to_value(entry).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("hash".into(), Value::String(hex::encode(hash)));
    }
    value
}

/// A drop's chain head as signed: after `position` entries the chain's hash is `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Head {
    #[serde(rename = "type")]
    pub kind: String,
    pub drop_id: String,
    pub position: i64,
    /// Hex.
    pub hash: String,
    pub at: String,
    /// Which server key signed (see `GET /v1/keys`).
    pub key_id: String,
}

/// A head with its signature (Ed25519 over `canonical(head)`, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedHead {
    #[serde(flatten)]
    pub head: Head,
    pub signature: String,
}

/// What a hold attempt that reached the writer was answered with, and the proof of its place:
/// its ledger entry (`position`, `entry_hash`) and the head signed after its batch. With the
/// ledger's lines from `position` to the head's, anyone can check both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    pub drop_id: String,
    pub attempt_seq: i64,
    /// When the writer decided it: its entry's `at`.
    pub received_at: String,
    /// `held`, or the refusal's code.
    pub outcome: String,
    pub position: i64,
    /// Hex.
    pub entry_hash: String,
    /// The buyer as the ledger names them.
    pub buyer: String,
    pub head: SignedHead,
}

/// What went wrong checking a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("line {line}: not a ledger entry ({why})")]
    Unreadable { line: usize, why: String },
    #[error("line {line}: position {found}, where {expected} comes next")]
    Gap {
        line: usize,
        expected: i64,
        found: i64,
    },
    #[error("entry {position}: its hash does not follow from the entries before it")]
    HashMismatch { position: i64 },
}

/// Checks ledger lines in order from `start` (the hash before the first of them): every line
/// parses as an entry, positions follow one another, and each hash is the chain's. Returns the
/// entries, and the hash after each.
pub fn check_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    start: [u8; 32],
) -> Result<Vec<(Entry, [u8; 32])>, Broken> {
    let mut previous = start;
    let mut expected: Option<i64> = None;
    let mut out = Vec::new();
    for (i, text) in lines.into_iter().enumerate() {
        let line = i + 1;
        let unreadable = |why: String| Broken::Unreadable { line, why };
        let mut map: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))?;
        let claimed = map
            .remove("hash")
            .and_then(|h| h.as_str().and_then(|h| hex::decode(h).ok()))
            .ok_or_else(|| unreadable("no hex hash".into()))?;
        let entry: Entry = serde_json::from_value(Value::Object(map.clone()))
            .map_err(|e| unreadable(e.to_string()))?;
        if let Some(expected) = expected.filter(|&e| e != entry.position) {
            return Err(Broken::Gap {
                line,
                expected,
                found: entry.position,
            });
        }
        // Hash what the line says, not what it parses to: a member the types would drop
        // still counts.
        let hash = chain(&previous, &canonical(&Value::Object(map)));
        if claimed[..] != hash[..] {
            return Err(Broken::HashMismatch {
                position: entry.position,
            });
        }
        expected = Some(entry.position + 1);
        previous = hash;
        out.push((entry, hash));
    }
    Ok(out)
}

/// The server's key for ledger heads (Ed25519). Its id is the first 16 hex digits of SHA-256
/// over its public key.
pub struct LedgerKey {
    signing: ed25519_dalek::SigningKey,
    id: String,
}

/// Shows the key's id, never its secret.
impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKey").field("id", &self.id).finish()
    }
}

impl LedgerKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let id = key_id(signing.verifying_key().as_bytes());
        Self { signing, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// Signs that `drop_id`'s chain is at `hash` after `position` entries, at `at`.
    pub fn sign(&self, drop_id: &str, position: i64, hash: &[u8; 32], at: String) -> SignedHead {
        use ed25519_dalek::Signer;
        let head = Head {
            kind: HEAD_TYPE.into(),
            drop_id: drop_id.into(),
            position,
            hash: hex::encode(hash),
            at,
            key_id: self.id.clone(),
        };
        let signature = self.signing.sign(&canonical(&head));
        SignedHead {
            head,
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// A public key's id.
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// Checks a head's signature against a public key (hex).
pub fn verify_head(signed: &SignedHead, public_hex: &str) -> Result<(), String> {
    use ed25519_dalek::Verifier;
    let public: [u8; 32] = hex::decode(public_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the public key is not 32 bytes of hex")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
        .map_err(|e| format!("not an Ed25519 public key: {e}"))?;
    if key_id(&public) != signed.head.key_id {
        return Err(format!(
            "the head names key {}, not this one ({})",
            signed.head.key_id,
            key_id(&public)
        ));
    }
    let signature: [u8; 64] = hex::decode(&signed.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 bytes of hex")?;
    key.verify(
        &canonical(&signed.head),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| "the signature does not verify".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(position: i64, outcome: &str) -> Entry {
        Entry {
            position,
            at: "2026-12-02T12:00:00.000Z".into(),
            event: Event::Attempt {
                attempt_seq: position,
                buyer: buyer_ref(b"salt", &format!("b{position}")),
                sku: "S1".into(),
                quantity: 1,
                outcome: outcome.into(),
                hold_id: None,
            },
        }
    }

    fn ledger(n: i64) -> Vec<String> {
        let mut hash = GENESIS;
        (1..=n)
            .map(|p| {
                let entry = attempt(p, if p < 3 { "held" } else { "sold-out" });
                hash = chain(&hash, &canonical(&entry));
                line(&entry, &hash).to_string()
            })
            .collect()
    }

    #[test]
    fn the_fast_canonical_form_is_the_canonical_form() {
        let entries = [
            attempt(1, "held"),
            Entry {
                event: Event::Attempt {
                    attempt_seq: 2,
                    buyer: "b\"q".into(),
                    sku: "S\u{e9}".into(),
                    quantity: 2,
                    outcome: "held".into(),
                    hold_id: Some("hld_1-2".into()),
                },
                ..attempt(2, "held")
            },
            Entry {
                event: Event::Release {
                    hold_id: "h".into(),
                    sku: "S1".into(),
                    quantity: 1,
                },
                ..attempt(3, "held")
            },
            Entry {
                event: Event::Expiry {
                    hold_id: "h".into(),
                    sku: "S1".into(),
                    quantity: 1,
                },
                ..attempt(4, "held")
            },
            Entry {
                event: Event::Confirmation {
                    hold_id: "h".into(),
                    order_id: "o".into(),
                    sku: "S1".into(),
                    quantity: 3,
                },
                ..attempt(5, "held")
            },
            Entry {
                event: Event::Restock {
                    sku: "S1".into(),
                    delta: -2,
                    stock: 8,
                },
                ..attempt(6, "held")
            },
        ];
        for entry in &entries {
            assert_eq!(
                String::from_utf8(canonical_entry(entry)).expect("utf-8"),
                String::from_utf8(canonical(entry)).expect("utf-8")
            );
        }
    }

    #[test]
    fn canonical_form_sorts_keys_and_has_no_spaces() {
        let text = String::from_utf8(canonical(&attempt(1, "held"))).expect("utf-8");
        assert!(
            text.starts_with(r#"{"at":"2026-12-02T12:00:00.000Z","attempt_seq":1,"#),
            "{text}"
        );
        assert!(!text.contains(' '));
    }

    #[test]
    fn a_whole_ledger_checks_and_any_changed_byte_is_found() {
        let lines = ledger(5);
        let checked = check_lines(lines.iter().map(String::as_str), GENESIS).expect("checks");
        assert_eq!(checked.len(), 5);
        for (i, line) in lines.iter().enumerate() {
            for (at, byte) in line.bytes().enumerate() {
                if byte == b'"' || byte == b'\\' {
                    continue;
                }
                let mut bytes = line.clone().into_bytes();
                bytes[at] = if byte == b'1' { b'2' } else { b'1' };
                let Ok(changed) = String::from_utf8(bytes) else {
                    continue;
                };
                let mut tampered = lines.clone();
                tampered[i] = changed;
                assert!(
                    check_lines(tampered.iter().map(String::as_str), GENESIS).is_err(),
                    "line {i} byte {at} changed unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_missing_or_reordered_line_is_found() {
        let mut lines = ledger(4);
        lines.remove(1);
        assert!(matches!(
            check_lines(lines.iter().map(String::as_str), GENESIS),
            Err(Broken::Gap { .. })
        ));
    }

    #[test]
    fn a_signed_head_verifies_and_a_changed_one_does_not() {
        let key = LedgerKey::from_seed([7; 32]);
        let signed = key.sign("d1", 5, &[1; 32], "2026-12-02T12:00:00.000Z".into());
        assert_eq!(verify_head(&signed, &key.public_hex()), Ok(()));
        let mut moved = signed.clone();
        moved.head.position = 6;
        assert!(verify_head(&moved, &key.public_hex()).is_err());
        let other = LedgerKey::from_seed([8; 32]);
        assert!(verify_head(&signed, &other.public_hex()).is_err());
    }

    #[test]
    fn the_buyer_ref_depends_on_the_salt() {
        assert_ne!(buyer_ref(b"a", "alice"), buyer_ref(b"b", "alice"));
        assert_eq!(buyer_ref(b"a", "alice").len(), 32);
    }
}
