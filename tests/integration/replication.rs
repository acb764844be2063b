//! Replication end to end with real parts: an S3-protocol server on 127.0.0.1
//! (`support/s3.rs`) and the real `litestream` 0.5.17 restoring what dropd ships, to the same
//! bytes as `dropd restore`; compaction, snapshots and retention; the WAL bound; the config file
//! both tools read. Outages, kills and a lost machine are in `replication_outage.rs`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dropd::handshake::Handshake;
use dropd::replicate::config::ReplicationConfig;
use dropd::replicate::replica::{FileReplica, ReplicaTarget};
use dropd::replicate::shipper::Shipper;
use dropd::replicate::status::ReplicaStatus;
use rusqlite::Connection;

use crate::support::app::spawn_app_with;
use crate::support::db::restored_holds;
use crate::support::litestream::{
    dropd_restore, file_url, list_replica, litestream_command, litestream_restore,
};
use crate::support::replica::{replication, wait_replicated};
use crate::support::s3::{S3Server, BUCKET};
use crate::support::spec::live_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_replica_restores_with_litestream_to_latest_txid_and_timestamp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let sync = Duration::from_millis(100);
    let config = replication(s3.target("prod/dropd"), sync);
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    app.create_drop(&live_drop("s3", 1_000, 1_000)).await;
    app.buyer("alice").hold_many("s3", "a", 10).await;
    let first = wait_replicated(&app.api(), sync).await;
    let first_txid = first["txid"].as_str().expect("txid").to_owned();
    // Litestream compares -timestamp with S3's LastModified, which has 1 s resolution.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.buyer("alice").hold_many("s3", "b", 15).await;
    wait_replicated(&app.api(), sync).await;
    app.stop().await;

    let url = s3.url("prod/dropd");
    let out = dir.path();
    let latest = litestream_restore(&url, &out.join("latest.db"), &[]);
    assert_eq!(restored_holds(&latest, out, "c-latest.db"), 25);
    let at_txid = litestream_restore(&url, &out.join("txid.db"), &["-txid", &first_txid]);
    assert_eq!(restored_holds(&at_txid, out, "c-txid.db"), 10);
    let at_time = litestream_restore(&url, &out.join("time.db"), &["-timestamp", &between]);
    assert_eq!(restored_holds(&at_time, out, "c-time.db"), 10);

    // dropd restore reads the same S3 replica to the same bytes.
    let ours = dropd_restore(&url, &out.join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == latest, "latest: same bytes as litestream");
    let ours = dropd_restore(&url, &out.join("ours-time.db"), &["-timestamp", &between])
        .expect("dropd restore -timestamp");
    assert!(ours == at_time, "-timestamp: same bytes as litestream");

    // A damaged object is refused by name, and nothing is written.
    let objects = dir.path().join("s3").join(BUCKET).join("prod/dropd/0000");
    let newest = std::fs::read_dir(&objects)
        .expect("level 0 objects")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
        .max()
        .expect("a level-0 object");
    let mut bytes = std::fs::read(&newest).expect("object");
    let cut = bytes.len() - 20;
    bytes.truncate(cut);
    std::fs::write(&newest, bytes).expect("truncated");
    let err = dropd_restore(&url, &out.join("never.db"), &[]).expect_err("refused");
    let name = newest.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(err.contains(name), "the error names the object: {err}");
    assert!(!out.join("never.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let config = ReplicationConfig {
        checkpoint_wal_size: 256 << 10,
        ..replication(
            ReplicaTarget::File(replica.clone()),
            Duration::from_millis(200),
        )
    };
    let data = dir.path().join("data");
    let app = spawn_app_with(|s| {
        s.data_dir = data.clone();
        s.replica = Some(config);
    })
    .await;
    app.create_drop(&live_drop("busy", 1_000_000, 1_000)).await;
    let app = Arc::new(app);
    let wal = data.join("dropd.db-wal");
    let deadline = Instant::now() + Duration::from_secs(5);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut acked = 0u64;
                for i in 0..5_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    // A fresh buyer every 1,000 holds, the per-buyer limit.
                    let token = app.token(&format!("buyer{w}-{}", i / 1_000));
                    let res = app.hold(&token, "busy", "S1", 1, &format!("{w}-{i}")).await;
                    assert_eq!(res.status(), 201);
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let mut largest = 0;
    while Instant::now() < deadline {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut acked = 0;
    for w in workers {
        acked += w.await.expect("worker");
    }
    let app = Arc::into_inner(app).expect("workers are done");
    app.stop().await;
    assert!(acked > 500, "the load ran: {acked} holds");
    // Checkpoint size plus one sync interval of growth (200 ms of this stampede is a few MB
    // since test builds optimize SQLite), far below the tens of MB an unbounded WAL reaches.
    assert!(
        largest < 8 << 20,
        "the WAL stayed near its 256 KiB checkpoint size (largest {largest} bytes)"
    );
    let theirs = litestream_restore(&file_url(&replica), &dir.path().join("restored.db"), &[]);
    assert_eq!(restored_holds(&theirs, dir.path(), "c.db"), acked as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_snapshots_and_retention_keep_the_replica_restorable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let sync = Duration::from_millis(100);
    let config = ReplicationConfig {
        levels: vec![Duration::from_secs(1), Duration::from_secs(2)],
        snapshot_interval: Duration::from_secs(2),
        snapshot_retention: Duration::from_secs(3),
        l0_retention: Duration::from_secs(1),
        ..replication(ReplicaTarget::File(replica.clone()), sync)
    };
    let app = spawn_app_with(|s| s.replica = Some(config)).await;
    app.create_drop(&live_drop("levels", 10_000, 1_000)).await;
    let token = app.token("carol");
    let started = Instant::now();
    let mut made = 0;
    // Every file the replica ever held, watched while it is written.
    let mut seen = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(7) {
        let res = app
            .hold(&token, "levels", "S1", 1, &format!("k{made}"))
            .await;
        assert_eq!(res.status(), 201);
        made += 1;
        seen.extend(
            list_replica(&replica)
                .iter()
                .map(|f| (f.level, f.min_txid, f.max_txid)),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_replicated(&app.api(), sync).await;
    app.stop().await;

    let files = list_replica(&replica);
    let ever = |level: u32| seen.iter().filter(|f| f.0 == level).count();
    assert!(
        ever(1) > 0 && ever(2) > 0,
        "levels 1 and 2 were compacted: {seen:?}"
    );
    assert!(
        ever(9) > 1,
        "snapshots were taken on the interval: {seen:?}"
    );
    assert!(
        seen.contains(&(9, 1, 1)),
        "the first start wrote a snapshot"
    );
    assert!(
        files
            .iter()
            .all(|f| (f.level, f.min_txid, f.max_txid) != (9, 1, 1)),
        "the first snapshot aged out once newer ones existed: {files:?}"
    );
    assert!(
        files.len() < seen.len(),
        "retention deleted files ({} left of {} written)",
        files.len(),
        seen.len()
    );
    let url = file_url(&replica);
    let theirs = litestream_restore(&url, &dir.path().join("latest.db"), &[]);
    assert_eq!(restored_holds(&theirs, dir.path(), "c.db"), made);
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(ours == theirs);
    // An older point that is still retained (a file boundary of the latest chain) restores the
    // same through both tools.
    // (A snapshot taken after the last write makes the latest chain one file: then the point
    // is the newest boundary of another retained file the plan can reach.)
    let latest = files.iter().map(|f| f.max_txid).max().expect("files");
    let older = files
        .iter()
        .map(|f| f.max_txid)
        .filter(|&t| t < latest)
        .filter(|&t| {
            dropd::replicate::restore::plan(
                &files,
                dropd::replicate::restore::Target::Txid(t),
                "replica",
            )
            .is_ok()
        })
        .max()
        .unwrap_or_else(|| panic!("no older point is retained: {files:?}"));
    let txid = format!("{older:016x}");
    let theirs = litestream_restore(&url, &dir.path().join("mid.db"), &["-txid", &txid]);
    let ours =
        dropd_restore(&url, &dir.path().join("ours-mid.db"), &["-txid", &txid]).expect("mid");
    assert!(ours == theirs, "-txid {txid}");
}

/// A database changed by a plain SQLite connection, shipped step by step: what litestream
/// restores is the checkpointed file, byte for byte, as it grows, shrinks and grows again.
#[test]
fn page_sizes_shrink_and_growth_restore_byte_for_byte() {
    for page_size in [1024u32, 65536] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("t.db");
        let replica = dir.path().join("replica");
        let conn = Connection::open(&db).expect("db");
        conn.execute_batch(&format!(
            "PRAGMA page_size = {page_size}; PRAGMA journal_mode = WAL; \
             PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        ))
        .expect("schema");
        let Handshake {
            writer: gate,
            shipper: shipper_gate,
            ..
        } = Handshake::with_default_sizes();
        let config = ReplicationConfig::for_target(ReplicaTarget::File(replica.clone()));
        let mut shipper = Shipper::new(
            dropd::store::DbFiles::keep(&db).expect("kept"),
            Arc::new(FileReplica::new(replica.clone())),
            config,
            shipper_gate,
            Arc::new(ReplicaStatus::new("test".into())),
        );
        let url = file_url(&replica);
        let mut check = |step: &str| {
            shipper.step().expect("shipped");
            gate.truncating();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
            gate.truncated(false);
            let expected = std::fs::read(&db).expect("db bytes");
            let out = dir.path().join(format!("{step}.db"));
            let restored = litestream_restore(&url, &out, &[]);
            assert!(
                restored == expected,
                "page size {page_size}, {step}: restored {} bytes, database {} bytes",
                restored.len(),
                expected.len()
            );
        };
        let insert = |n: usize| {
            for i in 0..n {
                conn.execute(
                    "INSERT INTO t (body) VALUES (?1)",
                    [format!("{i} {}", "z".repeat(700))],
                )
                .expect("insert");
            }
        };
        insert(400);
        check("grown");
        conn.execute_batch("DELETE FROM t WHERE id > 20; VACUUM;")
            .expect("shrink");
        check("shrunk");
        insert(600);
        check("regrown");
    }
}

/// A file larger than the multipart threshold goes up in parts and comes back whole, with its
/// timestamp metadata.
#[test]
fn a_large_file_is_uploaded_in_parts_with_its_timestamp() {
    use dropd::replicate::ltx::{self, Header};
    use dropd::replicate::replica::{Replica, S3Replica};
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let ReplicaTarget::S3(target) = s3.target("big") else {
        unreachable!("an s3 target")
    };
    let replica = S3Replica::connect(target)
        .expect("client")
        .with_multipart(6 << 20, 5 << 20);
    // 3,000 pages that do not compress: a 12 MB file, three parts of at most 5 MiB.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let pages: Vec<Vec<u8>> = (0..3_000)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        })
        .collect();
    let header = Header {
        page_size: 4096,
        commit: 3_000,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_795_000_000_123,
        ..Header::default()
    };
    let bytes = ltx::encode(
        &header,
        pages
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32 + 1, p.as_slice())),
    )
    .expect("encodes");
    assert!(bytes.len() > 11 << 20, "more than two 5 MiB parts");
    replica
        .write(9, &header, bytes.clone())
        .expect("uploaded in parts");
    let mut files = replica.list().expect("listed");
    assert_eq!(files.len(), 1);
    assert!(replica.read(&files[0]).expect("read") == bytes);
    replica.refine_times(&mut files).expect("metadata");
    assert_eq!(
        files[0].written,
        std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
    );
}

/// `serve --config` reads a Litestream-format file: unknown keys warn, invalid values stop the
/// start naming the key.
#[test]
fn serve_config_names_the_invalid_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        "dbs:\n  - path: ./data/dropd.db\n    replica:\n      url: file:///tmp/r\n      sync-interval: often\n",
    )
    .expect("config");
    let run = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("dropd runs");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("dbs[0].replica.sync-interval"), "{stderr}");
}

/// The top-level litestream.yml is an example both tools read: dropd without a warning, the real
/// litestream without an error.
#[test]
fn the_example_litestream_yml_is_read_by_dropd_and_by_litestream() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("litestream.yml");
    let (config, warnings) = ReplicationConfig::load(&example, None).expect("dropd reads it");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.levels.len(), 3);
    let run = litestream_command()
        .args(["databases", "-config"])
        .arg(&example)
        .output()
        .expect("litestream runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
