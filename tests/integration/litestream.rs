//! Our LTX files, restored by the real `litestream restore` (0.5.17, installed by `make test`
//! into target/litestream-venv): the codec is byte-compatible with what Litestream reads.

use std::path::Path;
use std::time::Duration;

use dropd::replicate::ltx::{self, Header};
use dropd::replicate::replica::ReplicaTarget;
use rusqlite::Connection;

use crate::support::app::spawn_app_with;
use crate::support::db::{restored_holds, restored_rows};
use crate::support::litestream::{
    dropd_restore, file_url, list_replica, litestream_command, litestream_restore,
};
use crate::support::replica::replication;
use crate::support::spec::live_drop;

/// The database file as pages, after a full checkpoint.
fn pages_of(path: &Path, page_size: usize) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("db readable");
    assert_eq!(bytes.len() % page_size, 0);
    bytes.chunks(page_size).map(<[u8]>::to_vec).collect()
}

fn write_ltx(replica: &Path, level: u32, header: &Header, pages: &[(u32, &[u8])]) {
    let bytes = ltx::encode(header, pages.iter().copied()).expect("encodes");
    let dir = replica.join("ltx").join(level.to_string());
    std::fs::create_dir_all(&dir).expect("level dir");
    let path = dir.join(format!(
        "{:016x}-{:016x}.ltx",
        header.min_txid, header.max_txid
    ));
    std::fs::write(&path, bytes).expect("ltx written");
    // Litestream reads a file replica's timestamps from the files' mtimes.
    let when = std::time::UNIX_EPOCH + Duration::from_millis(header.timestamp_ms as u64);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(when))
        .expect("mtime set");
}

/// Rows of the test table `t` in a restored database, after its integrity check.
fn rows(db: &[u8], dir: &Path, name: &str) -> i64 {
    restored_rows(db, dir, name, "t")
}

#[test]
fn litestream_restores_a_snapshot_and_a_change_we_encoded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("source.db");
    let page_size = 4096;
    let conn = Connection::open(&db_path).expect("db");
    conn.execute_batch(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("schema");
    let insert = |from: i64, to: i64| {
        for i in from..to {
            conn.execute(
                "INSERT INTO t (body) VALUES (?1)",
                [format!("row {i} {}", "x".repeat(200))],
            )
            .expect("insert");
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    };
    insert(0, 100);
    let first = pages_of(&db_path, page_size);
    insert(100, 250);
    let second = pages_of(&db_path, page_size);
    drop(conn);

    let replica = dir.path().join("replica");
    let snapshot = Header {
        page_size: page_size as u32,
        commit: first.len() as u32,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_795_000_000_000,
        ..Header::default()
    };
    let all: Vec<(u32, &[u8])> = first
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32 + 1, p.as_slice()))
        .collect();
    write_ltx(&replica, 9, &snapshot, &all);
    write_ltx(&replica, 0, &snapshot, &all);
    // TXID 2: only the pages that changed, plus the new ones.
    let changed: Vec<(u32, &[u8])> = second
        .iter()
        .enumerate()
        .filter(|(i, p)| first.get(*i) != Some(*p))
        .map(|(i, p)| (i as u32 + 1, p.as_slice()))
        .collect();
    assert!(changed.len() < second.len(), "a delta, not a copy");
    let delta = Header {
        commit: second.len() as u32,
        min_txid: 2,
        max_txid: 2,
        timestamp_ms: 1_795_000_001_000,
        ..snapshot
    };
    write_ltx(&replica, 0, &delta, &changed);

    let url = file_url(&replica);
    let latest = litestream_restore(&url, &dir.path().join("latest.db"), &[]);
    assert_eq!(
        latest,
        second.concat(),
        "the latest restore is our database, byte for byte"
    );
    assert_eq!(rows(&latest, dir.path(), "check-latest.db"), 250);
    let at_one = litestream_restore(
        &url,
        &dir.path().join("one.db"),
        &["-txid", "0000000000000001"],
    );
    assert_eq!(at_one, first.concat());
    assert_eq!(rows(&at_one, dir.path(), "check-one.db"), 100);

    // dropd restore agrees, refuses to overwrite, and names a corrupted object.
    assert_eq!(
        dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore"),
        second.concat()
    );
    let again = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect_err("no overwrite");
    assert!(again.contains("already exists"));
    let delta_file = replica.join("ltx/0/0000000000000002-0000000000000002.ltx");
    let mut bytes = std::fs::read(&delta_file).expect("delta");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&delta_file, bytes).expect("corrupted");
    let stderr = dropd_restore(&url, &dir.path().join("never.db"), &[])
        .expect_err("a corrupted object is refused");
    assert!(
        stderr.contains("0000000000000002-0000000000000002.ltx"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("never.db").exists(),
        "nothing is left at the output path"
    );
}

/// A replica written by the real `litestream replicate` (level 0, 1 and 9 files), restored by
/// `dropd restore`, is byte-identical to what `litestream restore` produces.
#[test]
fn dropd_restores_what_litestream_replicate_wrote_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let conn = Connection::open(&db_path).expect("db");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("schema");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: 200ms\n\
             levels:\n  - interval: 1s\nsnapshot:\n  interval: 2s\n",
            db_path.display(),
            replica.display()
        ),
    )
    .expect("config");
    let mut replicate = litestream_command()
        .args(["replicate", "-config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("litestream replicate starts");
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(7) {
        conn.execute(
            "INSERT INTO t (body) VALUES (?1)",
            [format!("row {i} {}", "y".repeat(300))],
        )
        .expect("insert");
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &replicate.id().to_string()])
        .status();
    let _ = replicate.wait();
    drop(conn);

    let files = list_replica(&replica);
    let levels: std::collections::BTreeSet<u32> = files.iter().map(|f| f.level).collect();
    for level in [0, 1, 9] {
        assert!(
            levels.contains(&level),
            "litestream wrote level {level} files: {levels:?}"
        );
    }
    let url = file_url(&replica);
    let theirs = litestream_restore(&url, &dir.path().join("theirs.db"), &[]);
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(
        ours == theirs,
        "latest: dropd and litestream restore the same bytes"
    );
    assert!(rows(&ours, dir.path(), "check.db") > 0);

    let max = files.iter().map(|f| f.max_txid).max().expect("files");
    let middle = (max / 2).max(2);
    let txid = format!("{middle:016x}");
    let theirs = litestream_restore(&url, &dir.path().join("theirs-mid.db"), &["-txid", &txid]);
    // Litestream's single-dash spelling, on purpose.
    let ours = dropd_restore(&url, &dir.path().join("ours-mid.db"), &["-txid", &txid])
        .expect("dropd restore -txid");
    assert!(
        ours == theirs,
        "-txid {middle:x}: dropd and litestream restore the same bytes"
    );
}

/// `serve --replica file:///dir` ships its WAL; the real litestream restores it, and after a
/// restart the TXIDs continue with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ships_a_replica_that_litestream_restores_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let replica = dir.path().join("replica");
    let settings = |s: &mut dropd::app::Settings| {
        s.data_dir = data.clone();
        s.replica = Some(replication(
            ReplicaTarget::File(replica.clone()),
            Duration::from_millis(50),
        ));
    };

    let url = file_url(&replica);
    let app = spawn_app_with(settings).await;
    app.create_drop(&live_drop("shipped", 1_000, 1_000)).await;
    app.buyer("alice").hold_many("shipped", "a", 20).await;
    app.stop().await;
    let restored = litestream_restore(&url, &dir.path().join("first.db"), &[]);
    assert_eq!(restored_holds(&restored, dir.path(), "check-first.db"), 20);
    std::thread::sleep(Duration::from_millis(300));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(300));

    let app = spawn_app_with(settings).await;
    app.buyer("alice").hold_many("shipped", "b", 15).await;
    app.stop().await;
    let theirs = litestream_restore(&url, &dir.path().join("second.db"), &[]);
    assert_eq!(restored_holds(&theirs, dir.path(), "check-second.db"), 35);
    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restore");
    assert!(
        ours == theirs,
        "dropd and litestream restore the same bytes"
    );

    // -timestamp between the two runs gives the first run's state, through both tools.
    let at = litestream_restore(&url, &dir.path().join("at.db"), &["-timestamp", &between]);
    assert_eq!(restored_holds(&at, dir.path(), "check-at.db"), 20);
    let ours = dropd_restore(
        &url,
        &dir.path().join("ours-at.db"),
        &["--timestamp", &between],
    )
    .expect("dropd restore --timestamp");
    assert!(ours == at);

    // TXIDs run 1, 2, 3, ... with no gap and no overlap at level 0 (retention may already have
    // deleted the first one, which the level-9 snapshot [1, 1] covers).
    let files = list_replica(&replica);
    assert!(files
        .iter()
        .any(|f| f.level == 9 && (f.min_txid, f.max_txid) == (1, 1)));
    let mut level0: Vec<(u64, u64)> = files
        .into_iter()
        .filter(|f| f.level == 0)
        .map(|f| (f.min_txid, f.max_txid))
        .collect();
    level0.sort();
    let first = level0.first().map_or(0, |f| f.0);
    assert!(first <= 2, "{level0:?}");
    for (i, (min, max)) in level0.iter().enumerate() {
        let txid = first + i as u64;
        assert_eq!((*min, *max), (txid, txid), "{level0:?}");
    }
}
