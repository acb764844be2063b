//! Other processes touching the database while the real binary serves a stampede with a
//! replica: an operator's `sqlite3` (Debian's, whatever its version), a Python reader, and a
//! current SQLite (the bundled one, in this test process) running `wal_checkpoint(TRUNCATE)`
//! and `VACUUM INTO`, as backup scripts do. Every acknowledged hold and order must be in the
//! database after a restart, in `dropd restore` and in the real `litestream restore`, and dropd
//! must never be left holding a deleted database file. Then the tripwire: the WAL deleted or
//! replaced under the server.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::api::client;
use crate::support::buyers::{hold_until_gone, stampede_until, verify_survived, Acked};
use crate::support::db::{check_invariants, hold_and_order_ids, restored_db};
use crate::support::litestream::{dropd_restore, file_url, litestream_restore};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::s3::S3Server;
use crate::support::spec::live_spec;

#[derive(Clone, Copy, Debug)]
enum Look {
    /// `sqlite3` and Python open the database, read, and close.
    Read,
    /// The same, plus a truncating checkpoint and `VACUUM INTO` from a current SQLite.
    ReadCheckpointVacuum,
}

/// Debian's `sqlite3` CLI, which `make test` installs.
fn sqlite3_cli(db: &Path) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*) FROM holds;")
        .output()
        .expect("sqlite3 runs (make test installs it)");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_reader(db: &Path) {
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
                  c.execute('SELECT count(*) FROM holds').fetchone()\n\
                  c.close()\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A backup script with a current SQLite: a note of its own, a checkpoint of what it may, then
/// a copy of the database. Returns the note if it committed: in a stampede the writer holds
/// the write lock nearly all the time, and an outside write may give up, as it would for an
/// operator.
fn checkpoint_and_vacuum_into(db: &Path, copy: &Path, note: usize) -> Option<String> {
    let conn = Connection::open(db).expect("opens");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let note = format!("backup {note}");
    let written = conn
        .execute_batch("CREATE TABLE IF NOT EXISTS operator_notes (note TEXT NOT NULL)")
        .and_then(|()| conn.execute("INSERT INTO operator_notes (note) VALUES (?1)", [&note]));
    let note = match written {
        Ok(_) => Some(note),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => None,
        Err(e) => panic!("an outside write failed: {e}"),
    };
    conn.busy_timeout(Duration::from_millis(200))
        .expect("busy timeout");
    let _: (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("checkpoint runs");
    let _ = std::fs::remove_file(copy);
    conn.execute("VACUUM INTO ?1", [copy.display().to_string()])
        .expect("vacuum into");
    let copied = Connection::open(copy).expect("the copy opens");
    let check: String = copied
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok", "the VACUUM INTO copy is sound");
    note
}

/// The outside process's notes in a restored database.
fn notes_in(db: &[u8], dir: &Path, name: &str) -> HashSet<String> {
    let conn = restored_db(db, dir, name);
    let Ok(mut stmt) = conn.prepare("SELECT note FROM operator_notes") else {
        return HashSet::new();
    };
    let notes = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("notes")
        .collect::<Result<_, _>>()
        .expect("notes read");
    notes
}

/// Database files the process holds open although they were deleted.
fn deleted_database_files(pid: u32) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|t| t.contains("dropd.db") && t.ends_with("(deleted)"))
        .collect()
}

/// Hold and order ids in a restored database, after its integrity check and the invariants.
fn ids_in(db: &[u8], dir: &Path, name: &str) -> HashSet<String> {
    let conn = restored_db(db, dir, name);
    check_invariants(&conn).expect("invariants hold in the restored database");
    hold_and_order_ids(&conn)
}

fn assert_all_restored(acked: &Acked, ids: &HashSet<String>, tool: &str) {
    let missing = acked.missing_from(ids);
    assert!(
        missing.is_empty(),
        "{tool}: {} of {} acknowledged holds and orders are missing, e.g. {:?}",
        missing.len(),
        acked.holds.len() + acked.orders.len(),
        missing.first()
    );
}

async fn outside_processes_lose_nothing(s3: bool, look: Look) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let admin_key = create_admin_key(&data);
    let s3_server = s3.then(|| S3Server::start(&dir.path().join("s3")));
    let url = match &s3_server {
        Some(server) => server.url("outside"),
        None => file_url(&dir.path().join("replica")),
    };
    let args = ["--replica", url.as_str(), "--sync-interval", "200ms"];
    let envs = S3Server::credentials();
    let server = ServerProcess::start_with(&data, &args, &envs);
    let http = client();
    let api = server.api(&http);
    api.with_admin_key(&admin_key)
        .create_drop(&live_spec("outside"))
        .await;
    let db = data.join("dropd.db");
    let pid = server.child.id();

    let looks = Arc::new(AtomicUsize::new(0));
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked_after_first_look = Arc::new(AtomicUsize::new(0));
    let acked = {
        let (looks, deleted, after, notes) = (
            looks.clone(),
            deleted.clone(),
            acked_after_first_look.clone(),
            notes.clone(),
        );
        let db = db.clone();
        let copy = dir.path().join("backup.db");
        stampede_until(&api, "outside", 0, move |acked| async move {
            let deadline = Instant::now() + Duration::from_secs(8);
            let mut before_first = None;
            while Instant::now() < deadline {
                let (db, copy) = (db.clone(), copy.clone());
                let n = looks.load(Ordering::Relaxed);
                let note = tokio::task::spawn_blocking(move || {
                    sqlite3_cli(&db);
                    python_reader(&db);
                    match look {
                        Look::ReadCheckpointVacuum => checkpoint_and_vacuum_into(&db, &copy, n),
                        Look::Read => None,
                    }
                })
                .await
                .expect("outside process ran");
                notes.lock().expect("lock").extend(note);
                before_first.get_or_insert_with(|| acked.lock().expect("lock").holds.len());
                looks.fetch_add(1, Ordering::Relaxed);
                deleted
                    .lock()
                    .expect("lock")
                    .extend(deleted_database_files(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let now = acked.lock().expect("lock").holds.len();
            after.store(now - before_first.unwrap_or(now), Ordering::Relaxed);
        })
        .await
    };
    let looks = looks.load(Ordering::Relaxed);
    assert!(looks >= 3, "the outside processes looked {looks} times");
    assert!(
        acked_after_first_look.load(Ordering::Relaxed) > 100,
        "holds were acknowledged after the first look ({} of {})",
        acked_after_first_look.load(Ordering::Relaxed),
        acked.holds.len()
    );
    let deleted: HashSet<String> = deleted.lock().expect("lock").iter().cloned().collect();
    assert!(
        deleted.is_empty(),
        "dropd held deleted database files: {deleted:?}"
    );

    // A clean stop, a restart on the same replica: everything acknowledged is there.
    server.terminate();
    let server = ServerProcess::start_with(&data, &args, &envs);
    verify_survived(&server.api(&http), &data, &acked).await;
    server.terminate();

    let ours = dropd_restore(&url, &dir.path().join("ours.db"), &[]).expect("dropd restores");
    assert_all_restored(
        &acked,
        &ids_in(&ours, dir.path(), "ours-check.db"),
        "dropd restore",
    );
    let theirs = litestream_restore(&url, &dir.path().join("theirs.db"), &[]);
    assert_all_restored(
        &acked,
        &ids_in(&theirs, dir.path(), "theirs-check.db"),
        "litestream restore",
    );
    // What the outside process wrote (with a current SQLite) reached the replica too.
    let notes: HashSet<String> = notes.lock().expect("lock").iter().cloned().collect();
    for (restored, tool) in [(&ours, "dropd"), (&theirs, "litestream")] {
        let found = notes_in(restored, dir.path(), &format!("{tool}-notes.db"));
        assert!(
            notes.is_subset(&found),
            "{tool} restore lacks outside writes: {:?}",
            notes.difference(&found).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_readers_lose_nothing_with_a_file_replica() {
    outside_processes_lose_nothing(false, Look::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_readers_lose_nothing_with_an_s3_replica() {
    outside_processes_lose_nothing(true, Look::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_checkpoints_and_vacuum_into_lose_nothing_with_a_file_replica() {
    outside_processes_lose_nothing(false, Look::ReadCheckpointVacuum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_checkpoints_and_vacuum_into_lose_nothing_with_an_s3_replica() {
    outside_processes_lose_nothing(true, Look::ReadCheckpointVacuum).await;
}

#[derive(Clone, Copy, Debug)]
enum Tamper {
    Delete,
    /// Moved away, and a copy of its bytes put in its place.
    ReplaceWithCopy,
}

async fn a_replaced_wal_stops_the_server_and_loses_nothing(tamper: Tamper) {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let mut server = ServerProcess::start(dir.path());
    let http = client();
    server
        .api(&http)
        .with_admin_key(&admin_key)
        .create_drop(&live_spec("tamper"))
        .await;
    let wal = dir.path().join("dropd.db-wal");
    let buyers = tokio::spawn({
        let base = server.base.clone();
        async move { hold_until_gone(&base, "tamper").await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match tamper {
        Tamper::Delete => std::fs::remove_file(&wal).expect("wal deleted"),
        Tamper::ReplaceWithCopy => {
            let copy: PathBuf = dir.path().join("wal-copy");
            std::fs::copy(&wal, &copy).expect("wal copied");
            std::fs::rename(&wal, dir.path().join("wal-moved")).expect("wal moved");
            std::fs::rename(&copy, &wal).expect("copy in place");
        }
    }
    let status = server
        .exited_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the server kept serving after its WAL was {tamper:?}d"));
    assert_eq!(
        status.code(),
        Some(dropd::store::EXIT_STORAGE_REPLACED),
        "exits with the storage-replaced status: {status}"
    );
    let (holds, refused) = buyers.await.expect("buyers");
    assert!(holds.len() > 100, "holds were acknowledged first");
    assert!(
        refused.iter().any(|r| r == "503 storage-replaced"),
        "the batch committed into the replaced WAL was answered 503 storage-replaced: {:?}",
        refused.iter().collect::<HashSet<_>>()
    );

    let server = ServerProcess::start(dir.path());
    let acked = Acked {
        holds,
        orders: Vec::new(),
    };
    verify_survived(&server.api(&http), dir.path(), &acked).await;
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_wal_stops_the_server_and_loses_no_acknowledged_hold() {
    a_replaced_wal_stops_the_server_and_loses_nothing(Tamper::Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wal_replaced_by_a_copy_stops_the_server_and_loses_no_acknowledged_hold() {
    a_replaced_wal_stops_the_server_and_loses_nothing(Tamper::ReplaceWithCopy).await;
}
