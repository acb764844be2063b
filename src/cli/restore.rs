//! `dropd restore`: a database rebuilt from a replica, with Litestream's flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::replicate::config::ReplicationConfig;
use crate::replicate::replica::ReplicaTarget;
use crate::telemetry;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where to write the database.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Restore up to this TXID (hex, as in the replica's file names).
    #[arg(long, value_parser = parse_txid)]
    pub txid: Option<u64>,
    /// Restore the state as of this moment (RFC 3339).
    #[arg(long, value_parser = parse_timestamp, conflicts_with = "txid")]
    pub timestamp: Option<std::time::SystemTime>,
    /// Do nothing (and succeed) if the output database already exists.
    #[arg(long)]
    pub if_db_not_exists: bool,
    /// Do nothing (and succeed) if the replica holds nothing yet.
    #[arg(long)]
    pub if_replica_exists: bool,
    /// Print the files that would be applied, and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
    /// Read the replica from this litestream.yml; the argument is then the database path.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The replica (`file:///path` or `s3://bucket/path?endpoint=...`), or with --config the
    /// database path named in the config.
    pub replica: Option<String>,
}

fn parse_txid(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a hexadecimal TXID such as 000000000000002a"))
}

fn parse_timestamp(text: &str) -> Result<std::time::SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(std::time::SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-11-22T01:48:16Z: {e}"))
}

pub(super) fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    use crate::replicate::restore::{self, Target};
    telemetry::init("warn");
    let (target, default_output) = match &args.config {
        Some(path) => {
            let db = args.replica.as_deref().map(Path::new);
            let (config, warnings) = ReplicationConfig::load(path, db)?;
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            (config.target, db.map(Path::to_owned).or(config.db_path))
        }
        None => {
            let url = args
                .replica
                .as_deref()
                .context("give the replica URL (file:///path or s3://bucket/path), or --config litestream.yml")?;
            (ReplicaTarget::parse_url(url)?, None)
        }
    };
    let label = target.to_string();
    let replica = target
        .open()
        .with_context(|| format!("opening the replica {label}"))?;
    let mut files = replica.list()?;
    if files.is_empty() && args.if_replica_exists {
        eprintln!("no replica at {label}: nothing to restore");
        return Ok(());
    }
    let target = match (args.txid, args.timestamp) {
        (Some(txid), _) => Target::Txid(txid),
        (None, Some(at)) => {
            replica.refine_times(&mut files)?;
            Target::Time(at)
        }
        (None, None) => Target::Latest,
    };
    let chain = restore::plan(&files, target, &label)?;
    if args.dry_run {
        for file in &chain {
            println!(
                "level {} txid {:016x}-{:016x} {} bytes {}",
                file.level, file.min_txid, file.max_txid, file.size, file.key
            );
        }
        return Ok(());
    }
    let output = args
        .output
        .or(default_output)
        .context("-o is required: where should the database be written?")?;
    if output.exists() {
        if args.if_db_not_exists {
            eprintln!("{} exists: nothing to restore", output.display());
            return Ok(());
        }
        return Err(restore::RestoreError::OutputExists(output.display().to_string()).into());
    }
    let total: u64 = chain.iter().map(|f| f.size).sum();
    // Draws only on a terminal; scripts see the summary line alone.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} restoring [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = std::time::Instant::now();
    let txid = restore::apply(
        &*replica,
        &chain,
        &output,
        args.parallelism as usize,
        &|n| bar.inc(n),
    )?;
    bar.finish_and_clear();
    eprintln!(
        "restored {} to txid {txid:016x} from {} files ({} bytes) in {:.1?}",
        output.display(),
        chain.len(),
        total,
        started.elapsed()
    );
    Ok(())
}

/// Restores the latest state of the replica at `url` into `output` (which must not exist), for
/// commands that read a replica's database; returns the TXID restored.
pub(super) fn restore_latest(url: &str, output: &Path) -> anyhow::Result<u64> {
    use crate::replicate::restore::{self, Target};
    let target = ReplicaTarget::parse_url(url)?;
    let label = target.to_string();
    let replica = target
        .open()
        .with_context(|| format!("opening the replica {label}"))?;
    let files = replica.list()?;
    let chain = restore::plan(&files, Target::Latest, &label)?;
    Ok(restore::apply(&*replica, &chain, output, 8, &|_| {})?)
}
