//! A database of 2 GB with a file replica: the whole-database image at start is streamed (peak
//! resident memory stays within 256 MB of what the server had before it), and a clean restart
//! resumes the replica without shipping the image again.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

use crate::support::api::{client, Api};
use crate::support::db::add_ballast;
use crate::support::litestream::{file_url, list_replica, run_dropd_restore};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

const BALLAST_BYTES: u64 = 2_000_000_000;
const MEMORY_BOUND: u64 = 256 << 20;

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}

/// Waits until the replica reached a TXID beyond `after`.
async fn wait_txid(api: &Api, after: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let replica = api.readyz_replica().await;
        let txid = replica["txid"]
            .as_str()
            .and_then(|t| u64::from_str_radix(t, 16).ok())
            .unwrap_or(0);
        if replica["state"] == "ok" && txid > after {
            return replica;
        }
        assert!(Instant::now() < deadline, "the replica stayed at {replica}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_gigabyte_database_ships_in_bounded_memory_and_a_clean_restart_ships_no_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let admin_key = create_admin_key(&data);
    let db = data.join("dropd.db");
    add_ballast(&db, BALLAST_BYTES / 4_000)
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let db_bytes = std::fs::metadata(&db).expect("db").len();
    assert!(db_bytes >= BALLAST_BYTES, "{db_bytes} bytes");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let args = ["--replica", url.as_str(), "--sync-interval", "200ms"];

    let server = ServerProcess::start_with(&data, &args, &[]);
    let http = client();
    // As an operator: readiness shows the replica's detail only with an admin key.
    let api = server.api(&http).with_admin_key(&admin_key);
    let shipped = wait_txid(&api, 0, Duration::from_secs(600)).await;
    let image = &shipped["last_image"];
    let rss_before = image["rss_before_bytes"].as_u64().expect("rss before");
    let peak = status_kb(server.child.id(), "VmHWM") * 1024;
    assert!(
        peak.saturating_sub(rss_before) <= MEMORY_BOUND,
        "shipping a {db_bytes}-byte database took the server from {rss_before} to {peak} bytes \
         resident: {image}"
    );
    eprintln!(
        "image of {db_bytes} bytes: {image}; peak resident {peak} bytes, {} MB over before",
        peak.saturating_sub(rss_before) >> 20
    );
    assert_eq!(image["reason"], "start", "{image}");
    assert!(image["pages"].as_u64().expect("pages") * 4096 >= BALLAST_BYTES);

    api.create_drop(&live_spec("large")).await;
    let buyer = api.buyer("large-buyer");
    let mut holds = buyer.hold_many("large", "first-", 20).await;
    let files_before = list_replica(&replica);
    let peak = status_kb(server.child.id(), "VmHWM") * 1024;
    assert!(
        peak.saturating_sub(rss_before) <= MEMORY_BOUND,
        "compaction and serving took the server to {peak} bytes resident"
    );
    server.terminate();
    assert!(
        dropd::replicate::position::path(&db).exists(),
        "a clean stop notes where it left the replica"
    );

    // The clean restart resumes: no image, the TXIDs go on, later writes arrive as deltas.
    let server = ServerProcess::start_with(&data, &args, &[]);
    let api = server.api(&http).with_admin_key(&admin_key);
    let txid_before = files_before.iter().map(|f| f.max_txid).max().unwrap_or(0);
    let buyer = api.buyer("large-buyer");
    holds.extend(buyer.hold_many("large", "second-", 20).await);
    let resumed = wait_txid(&api, txid_before, Duration::from_secs(60)).await;
    assert!(
        resumed["last_image"].is_null(),
        "a clean restart shipped the whole database again: {resumed}"
    );
    server.terminate();
    let new_files: Vec<_> = list_replica(&replica)
        .into_iter()
        .filter(|f| !files_before.contains(f))
        .collect();
    assert!(!new_files.is_empty(), "the restart shipped its writes");
    for file in &new_files {
        assert!(
            file.size < 1 << 20 || file.level > 0,
            "a clean restart uploaded {} ({} bytes)",
            file.key,
            file.size
        );
        // New writes start after the old ones; a compaction (level 1 and up) that ran after
        // the restart may span both, as it should.
        if file.level == 0 {
            assert!(file.min_txid > txid_before, "TXIDs continue: {}", file.key);
        } else {
            assert!(
                file.max_txid > txid_before,
                "a compaction of new writes: {}",
                file.key
            );
        }
    }

    let out = dir.path().join("restored.db");
    // Not `dropd_restore`: reading 2 GB back into memory is not needed to find the holds.
    run_dropd_restore(&url, &out, &[]).expect("dropd restore");
    let conn = Connection::open(dir.path().join("restored.db")).expect("opens");
    for id in &holds {
        let found: i64 = conn
            .query_row("SELECT COUNT(*) FROM holds WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("query");
        assert_eq!(found, 1, "hold {id} is in the restored database");
    }
}
