//! `dropd verify`: checks a receipt against a drop's ledger and the server's public keys, with
//! nothing but what anyone can fetch: the head's signature, every link of the chain up to the
//! signed head, and the receipt's own entry in it.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use crate::domain::ledger::{self, Receipt, GENESIS};
use crate::domain::replay::{DrawCheck, Replay};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A receipt: the `receipt` member of a hold answer or refusal, or the whole answer.
    #[arg(long, required_unless_present = "draw")]
    pub receipt: Option<PathBuf>,
    /// Instead of a receipt: recompute a raffle's winners from the ledger alone (its entries,
    /// its stock and the revealed seed, checked against the commitment) and check every win,
    /// with the whole drop's history re-decided as `dropd replay` does.
    #[arg(long, conflicts_with = "receipt")]
    pub draw: bool,
    /// The drop's ledger: its URL (`.../v1/drops/{drop}/ledger`) or a file of its lines.
    #[arg(long)]
    pub ledger: String,
    /// The server's keys (`/v1/keys`, a URL or a file); by default fetched beside the ledger.
    #[arg(long)]
    pub keys: Option<String>,
}

fn fetch(source: &str) -> anyhow::Result<String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let res = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?
                .get(source)
                .send()
                .await
                .with_context(|| format!("fetching {source}"))?;
            if !res.status().is_success() {
                bail!("fetching {source}: {}", res.status());
            }
            Ok(res.text().await?)
        })
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))
    }
}

/// Where `/v1/keys` is for a ledger URL.
fn keys_beside(ledger: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(ledger)
        .ok()
        .filter(|u| u.scheme().starts_with("http"))
        .context("give --keys: the ledger is not a URL to find the keys beside")?;
    Ok(url.join("/v1/keys")?.to_string())
}

/// What a verified receipt shows.
pub struct Verified {
    pub receipt: Receipt,
    pub checked_through: i64,
}

/// Checks `receipt` against `ledger_text` (NDJSON) and `keys` (`/v1/keys`).
pub fn check(receipt: &Value, ledger_text: &str, keys: &Value) -> anyhow::Result<Verified> {
    let receipt: Receipt = serde_json::from_value(
        receipt
            .get("receipt")
            .cloned()
            .unwrap_or_else(|| receipt.clone()),
    )
    .context("not a receipt")?;
    let head = &receipt.head;
    let key = keys["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["id"] == head.head.key_id.as_str()))
        .with_context(|| format!("no key {} among the server's keys", head.head.key_id))?;
    let public = key["public_key"]
        .as_str()
        .context("a key without public_key")?;
    ledger::verify_head(head, public).map_err(anyhow::Error::msg)?;
    if head.head.drop_id != receipt.drop_id {
        bail!(
            "the head is {}'s, the receipt {}'s",
            head.head.drop_id,
            receipt.drop_id
        );
    }
    let entries = ledger::check_lines(ledger_text.lines(), GENESIS)?;
    let at = |position: i64| {
        usize::try_from(position - 1)
            .ok()
            .and_then(|i| entries.get(i))
            .with_context(|| format!("the ledger ends before position {position}"))
    };
    let (head_entry, head_hash) = at(head.head.position)?;
    if hex::encode(head_hash) != head.head.hash || head_entry.position != head.head.position {
        bail!(
            "the ledger's hash at position {} is not the signed head's",
            head.head.position
        );
    }
    let (entry, hash) = at(receipt.position)?;
    if hex::encode(hash) != receipt.entry_hash {
        bail!(
            "the ledger's entry at position {} is not the receipt's",
            receipt.position
        );
    }
    let ledger::Event::Attempt {
        attempt_seq,
        buyer,
        outcome,
        ..
    } = &entry.event
    else {
        bail!("position {} is not an attempt", receipt.position);
    };
    if *attempt_seq != receipt.attempt_seq
        || *buyer != receipt.buyer
        || *outcome != receipt.outcome
        || entry.at != receipt.received_at
    {
        bail!(
            "the receipt says attempt {} ({}) by {} at {}; the ledger says attempt {attempt_seq} \
             ({outcome}) by {buyer} at {}",
            receipt.attempt_seq,
            receipt.outcome,
            receipt.buyer,
            receipt.received_at,
            entry.at
        );
    }
    let checked_through = entries.last().map_or(0, |(e, _)| e.position);
    Ok(Verified {
        receipt,
        checked_through,
    })
}

/// A raffle's winners recomputed from the ledger's lines; an error names what does not hold.
pub fn check_draw(ledger_text: &str) -> anyhow::Result<DrawCheck> {
    let entries = ledger::check_lines(ledger_text.lines(), GENESIS)?;
    let mut entries = entries.into_iter().map(|(entry, _)| entry);
    let first = entries.next().context("the ledger is empty")?;
    let mut replay = Replay::start(&first, None, None)?;
    for entry in entries {
        replay.apply(&entry)?;
    }
    let report = replay.finish();
    let Some(draw) = report.draw else {
        bail!("the ledger holds no raffle (a drop with mode: draw)");
    };
    if !report.mismatches.is_empty() {
        let lines: Vec<String> = report
            .mismatches
            .iter()
            .map(|m| format!("  position {}: {}", m.position, m.what))
            .collect();
        bail!(
            "the ledger does not hold up ({} mismatches):\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    Ok(draw)
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let ledger_text = fetch(&args.ledger)?;
    let Some(receipt_path) = &args.receipt else {
        let draw = check_draw(&ledger_text)?;
        println!(
            "draw verified: the revealed seed matches its commitment; {} entries drawn again \
             give the ledger's {} winners, each held for what the draw gives",
            draw.entries, draw.winners
        );
        return Ok(());
    };
    let receipt: Value = serde_json::from_str(
        &std::fs::read_to_string(receipt_path)
            .with_context(|| format!("reading {}", receipt_path.display()))?,
    )
    .context("the receipt is not JSON")?;
    let keys_source = match &args.keys {
        Some(keys) => keys.clone(),
        None => keys_beside(&args.ledger)?,
    };
    let keys: Value =
        serde_json::from_str(&fetch(&keys_source)?).context("the keys are not JSON")?;
    let verified = check(&receipt, &ledger_text, &keys)?;
    let r = &verified.receipt;
    println!(
        "receipt verified: drop {} attempt #{} ({}) at ledger position {}, signed by key {}; \
         chain checked through position {}",
        r.drop_id,
        r.attempt_seq,
        r.outcome,
        r.position,
        r.head.head.key_id,
        verified.checked_through
    );
    Ok(())
}
