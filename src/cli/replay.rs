//! `dropd replay`: a drop's history re-decided from its ledger. The database comes from a
//! replica (restored to a temporary directory) or a local copy; the ledger's chain is checked
//! link by link, then every entry from the drop's creation goes through the writer's own rule
//! (`domain::replay`), and any outcome it does not reproduce is reported. With `--buyer`, it
//! shows that buyer's attempts and the ones that won before each.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::domain::ledger::{self, Entry, GENESIS};
use crate::domain::replay::{Replay, Report};
use crate::store::{self, ledger as rows};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The replica to restore the latest state from (`file:///path` or `s3://bucket/path?...`).
    #[arg(long, conflicts_with = "db", required_unless_present = "db")]
    pub replica: Option<String>,
    /// A local copy of the database (read only) instead of a replica.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The drop to replay.
    #[arg(long)]
    pub drop: String,
    /// Explain this buyer's attempts (their id; the ledger names them by a salted hash).
    #[arg(long, conflicts_with = "buyer_ref")]
    pub buyer: Option<String>,
    /// Explain the attempts of the buyer the ledger names so (the `buyer` of their receipt).
    #[arg(long)]
    pub buyer_ref: Option<String>,
    /// How long holds lasted, for ledgers whose creation entry does not say.
    #[arg(long)]
    pub hold_seconds: Option<i64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    crate::telemetry::init("warn");
    let restored = tempfile::tempdir().context("making a temporary directory to restore into")?;
    let path = match (&args.replica, &args.db) {
        (Some(url), _) => {
            let path = restored.path().join("dropd.db");
            let txid = super::restore::restore_latest(url, &path)?;
            eprintln!("restored {url} to txid {txid:016x}");
            // A replica of an older dropd: the restored copy is ours to bring up to date.
            let mut conn = store::open::open_for_cli(&path)?;
            store::migrations::migrate(&mut conn)?;
            drop(conn);
            path
        }
        (None, Some(db)) => db.clone(),
        (None, None) => bail!("give --replica URL or --db PATH"),
    };
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let conn = store::open::open_reader(&path)?;
    let version = store::migrations::version_of(&conn)?;
    if version != store::migrations::latest_version() {
        bail!(
            "{} is at schema version {version}; this dropd reads version {}: replay a restored \
             copy (--replica) or a copy a server of this version has opened",
            path.display(),
            store::migrations::latest_version()
        );
    }
    let salt = rows::salt(&conn, &args.drop)?
        .with_context(|| format!("drop {} has no ledger in this database", args.drop))?;
    let watch = match (&args.buyer, &args.buyer_ref) {
        (Some(id), _) => Some(ledger::buyer_ref(&salt, id)),
        (None, Some(name)) => Some(name.clone()),
        (None, None) => None,
    };
    // Only for ledgers whose creation entry does not say: the first hold lasted as long as
    // holds did until an edit (which the ledger has) changed it.
    let hold_seconds = match args.hold_seconds {
        Some(seconds) => Some(seconds),
        None => rows::first_hold_seconds(&conn, &args.drop)?.or_else(|| {
            store::drops::get_view(&conn, &args.drop, chrono::Utc::now())
                .ok()
                .flatten()
                .map(|d| d.hold_seconds)
        }),
    };

    let mut previous = GENESIS;
    let mut broken: Option<String> = None;
    let mut replay: Option<Replay> = None;
    let mut failure: Option<anyhow::Error> = None;
    let mut hashes = std::collections::HashMap::new();
    rows::history(&conn, &args.drop, |position, text, hash| {
        if broken.is_some() || failure.is_some() {
            return;
        }
        let next = ledger::chain(&previous, text.as_bytes());
        if next[..] != *hash {
            broken = Some(format!(
                "entry {position}: its hash does not follow from the entries before it"
            ));
            return;
        }
        previous = next;
        let entry: Entry = match serde_json::from_str(text) {
            Ok(entry) => entry,
            Err(err) => {
                broken = Some(format!("entry {position}: not a ledger entry ({err})"));
                return;
            }
        };
        if ledger::canonical_entry(&entry) != text.as_bytes() {
            broken = Some(format!("entry {position}: not in canonical form"));
            return;
        }
        hashes.insert(position, next);
        let step = match &mut replay {
            Some(replay) => replay.apply(&entry),
            None => Replay::start(&entry, hold_seconds, watch.clone()).map(|r| {
                replay = Some(r);
            }),
        };
        if let Err(err) = step {
            failure = Some(err.into());
        }
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    if let Some(why) = broken {
        bail!("the ledger of {} is broken: {why}", args.drop);
    }
    let replay = replay.with_context(|| format!("drop {} has no ledger entries yet", args.drop))?;
    let head = rows::latest_head(&conn, &args.drop)?;
    if let Some(head) = &head {
        let at = hashes.get(&head.head.position).map(hex::encode);
        if at.as_deref() != Some(head.head.hash.as_str()) {
            bail!(
                "the ledger of {} does not reach its signed head (position {})",
                args.drop,
                head.head.position
            );
        }
    }
    let report = replay.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&args.drop, watch.as_deref(), &report);
    }
    if !report.mismatches.is_empty() {
        bail!(
            "{} of the drop's entries do not replay as recorded",
            report.mismatches.len()
        );
    }
    Ok(())
}

fn print_report(drop: &str, watch: Option<&str>, report: &Report) {
    println!(
        "drop {drop}: {} entries from its creation, chain intact",
        report.entries
    );
    println!(
        "attempts: {} ({} held, {} refused); {} outcomes reproduced by the writer's rule",
        report.attempts, report.held, report.refused, report.reproduced
    );
    if report.mismatches.is_empty() {
        println!("every outcome is what was answered");
    }
    for m in &report.mismatches {
        println!("MISMATCH at entry {}: {}", m.position, m.what);
    }
    if let Some(draw) = &report.queue {
        println!(
            "queue: the seeded draw ordered {} buyers; the seed {} its commitment{}",
            draw.drawn,
            if draw.commitment_kept {
                "matches"
            } else {
                "does NOT match"
            },
            draw.place
                .map_or(String::new(), |p| format!("; the named buyer's place: {p}"))
        );
    }
    if let Some(draw) = &report.draw {
        println!(
            "raffle: {} entries; the seed {} its commitment; {} wins, {} the draw gives missing",
            draw.entries,
            if draw.commitment_kept {
                "matches"
            } else {
                "does NOT match"
            },
            draw.winners,
            draw.missing
        );
    }
    if report.offers > 0 {
        println!(
            "waiting lists: {} offers, each checked like an attempt",
            report.offers
        );
    }
    let (Some(name), Some(attempts)) = (watch, &report.buyer) else {
        return;
    };
    println!();
    println!("buyer {name}: {} attempts", attempts.len());
    for a in attempts {
        println!(
            "  attempt #{} at {} on {} x{}: {} (available then: {}; your units: {} of {})",
            a.attempt_seq, a.at, a.sku, a.quantity, a.outcome, a.available, a.used, a.limit
        );
        println!(
            "    {} attempts on {} were held before it:",
            a.won_before.len(),
            a.sku
        );
        for w in &a.won_before {
            println!(
                "      #{} at {} by {} x{}",
                w.attempt_seq, w.at, w.buyer, w.quantity
            );
        }
    }
}
