//! `make torture` (not part of `make test`): cycles of a stampede with a replica on the S3 test
//! server, each with a random mix of SIGKILL at a random moment (also while the whole-database
//! image is being shipped at start), outside readers, outside `wal_checkpoint(TRUNCATE)` and an
//! S3 outage of a few seconds. After each cycle: restart, check every acknowledged hold and
//! order in the database and in a restore by the real litestream, check the invariants. Prints
//! the figures; fails if anything acknowledged was lost or an invariant broke.
//!
//! `TORTURE_CYCLES=N` (default 24, about 10 minutes).

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rusqlite::Connection;

use crate::support::api::client;
use crate::support::buyers::{stampede_until, Acked};
use crate::support::db::{add_ballast, check_invariants, hold_and_order_ids, open_db};
use crate::support::litestream::run_litestream_restore;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::s3::S3Server;
use crate::support::spec::live_spec;

#[derive(Debug, Default)]
struct Figures {
    cycles: usize,
    holds: usize,
    orders: usize,
    lost_local: usize,
    lost_replica: usize,
    invariant_breaks: usize,
    kills: usize,
    early_kills: usize,
    outages: usize,
    outside_checkpoints: usize,
    outside_reads: usize,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    run_for: Duration,
    kill_at: Option<Duration>,
    readers: bool,
    checkpoints: bool,
    outage: Option<(Duration, Duration)>,
}

fn plan(rng: &mut impl Rng) -> Plan {
    let run_for = Duration::from_millis(rng.random_range(8_000..14_000));
    let kill_at = rng
        .random_bool(0.5)
        .then(|| Duration::from_millis(rng.random_range(0..run_for.as_millis() as u64)));
    let outage = rng.random_bool(0.4).then(|| {
        (
            Duration::from_millis(rng.random_range(500..5_000)),
            Duration::from_millis(rng.random_range(1_000..4_000)),
        )
    });
    Plan {
        run_for,
        kill_at,
        readers: rng.random_bool(0.6),
        checkpoints: rng.random_bool(0.5),
        outage,
    }
}

fn outside_read(db: &Path) {
    let _ = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*) FROM holds;")
        .output();
}

fn outside_checkpoint(db: &Path) {
    if let Ok(conn) = Connection::open(db) {
        let _ = conn.busy_timeout(Duration::from_millis(100));
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a long fault-injection run: make torture"]
async fn torture() {
    let cycles: usize = std::env::var("TORTURE_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let admin_key = create_admin_key(&data);
    let db = data.join("dropd.db");
    add_ballast(&db, 75_000);
    let s3 = Arc::new(Mutex::new(S3Server::start(&dir.path().join("s3"))));
    let url = s3.lock().expect("lock").url("torture");
    let args = ["--replica", url.as_str(), "--sync-interval", "200ms"];
    let envs = S3Server::credentials();
    let http = client();
    let mut rng = rand::rng();
    let mut figures = Figures::default();
    let mut all = Acked::default();
    let started = Instant::now();
    for cycle in 0..cycles {
        let plan = plan(&mut rng);
        let server = ServerProcess::start_with(&data, &args, &envs);
        let api = server.api(&http);
        let drop_id = format!("torture-{cycle}");
        let server = Arc::new(Mutex::new(Some(server)));
        let events = Arc::new(Mutex::new((0usize, 0usize, false)));
        {
            api.with_admin_key(&admin_key)
                .create_drop(&live_spec(&drop_id))
                .await;
            let acked = stampede_until(&api, &drop_id, cycle, {
                let (server, s3, events, db) =
                    (server.clone(), s3.clone(), events.clone(), db.clone());
                move |_| async move {
                    let begun = Instant::now();
                    let mut paused = false;
                    while begun.elapsed() < plan.run_for {
                        let at = begun.elapsed();
                        if let Some((from, length)) = plan.outage {
                            if !paused && at >= from && at < from + length {
                                s3.lock().expect("lock").pause();
                                paused = true;
                            } else if paused && at >= from + length {
                                s3.lock().expect("lock").resume();
                                paused = false;
                            }
                        }
                        if plan.kill_at.is_some_and(|k| at >= k) {
                            if let Some(s) = server.lock().expect("lock").take() {
                                s.kill();
                            }
                            events.lock().expect("lock").2 = true;
                            break;
                        }
                        let db = db.clone();
                        let (reads, checkpoints) = tokio::task::spawn_blocking(move || {
                            let mut done = (0, 0);
                            if plan.readers {
                                outside_read(&db);
                                done.0 += 1;
                            }
                            if plan.checkpoints {
                                outside_checkpoint(&db);
                                done.1 += 1;
                            }
                            done
                        })
                        .await
                        .expect("outside process");
                        {
                            let mut e = events.lock().expect("lock");
                            e.0 += reads;
                            e.1 += checkpoints;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    if paused {
                        s3.lock().expect("lock").resume();
                    }
                }
            })
            .await;
            let (reads, checkpoints, killed) = *events.lock().expect("lock");
            figures.outside_reads += reads;
            figures.outside_checkpoints += checkpoints;
            figures.kills += usize::from(killed);
            figures.outages += usize::from(plan.outage.is_some());
            figures.holds += acked.holds.len();
            figures.orders += acked.orders.len();
            all.holds.extend(acked.holds);
            all.orders.extend(acked.orders);
        }
        let running = server.lock().expect("lock").take();
        let killed = running.is_none();
        if let Some(s) = running {
            s.terminate();
        }
        if killed && rng.random_bool(0.5) {
            // The start after a crash ships the whole database: kill it while it does.
            let s = ServerProcess::start_with(&data, &args, &envs);
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
            s.kill();
            figures.kills += 1;
            figures.early_kills += 1;
        }

        // Restart (after a kill it ships the whole database), check, stop cleanly.
        let server = ServerProcess::start_with(&data, &args, &envs);
        let local = open_db(&db);
        figures.lost_local = figures
            .lost_local
            .max(all.missing_from(&hold_and_order_ids(&local)).len());
        if check_invariants(&local).is_err() {
            figures.invariant_breaks += 1;
        }
        drop(local);
        server.terminate();
        let out = dir.path().join(format!("restored-{cycle}.db"));
        match run_litestream_restore(&url, &out, &[]) {
            Ok(()) => {
                let restored = Connection::open(&out).expect("opens");
                figures.lost_replica = figures
                    .lost_replica
                    .max(all.missing_from(&hold_and_order_ids(&restored)).len());
                if check_invariants(&restored).is_err() {
                    figures.invariant_breaks += 1;
                }
                drop(restored);
                let _ = std::fs::remove_file(&out);
            }
            Err(output) => {
                eprintln!("cycle {cycle}: litestream restore failed: {output}");
                figures.lost_replica = figures.lost_replica.max(all.holds.len() + all.orders.len());
            }
        }
        figures.cycles += 1;
        eprintln!(
            "cycle {cycle}: {plan:?}; {} acknowledged so far, lost {} local / {} replica",
            all.holds.len() + all.orders.len(),
            figures.lost_local,
            figures.lost_replica
        );
    }
    println!(
        "torture: {} cycles in {:.0} s; acknowledged {} holds and {} orders; lost {} (database) \
         and {} (litestream restore); invariant breaks {}; SIGKILLs {} ({} right after start, \
         during the whole-database image); S3 outages {}; outside checkpoints {}; outside \
         reads {}",
        figures.cycles,
        started.elapsed().as_secs_f64(),
        figures.holds,
        figures.orders,
        figures.lost_local,
        figures.lost_replica,
        figures.invariant_breaks,
        figures.kills,
        figures.early_kills,
        figures.outages,
        figures.outside_checkpoints,
        figures.outside_reads
    );
    assert_eq!(
        figures.lost_local + figures.lost_replica,
        0,
        "acknowledged holds or orders went missing: {figures:?}"
    );
    assert_eq!(figures.invariant_breaks, 0, "{figures:?}");
}
