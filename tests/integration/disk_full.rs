//! The data directory on a small tmpfs that fills up: writes fail with a clear 507, reads go
//! on, nothing is corrupted, and writes work again once space returns. Needs root (CI runs as
//! root) to mount the tmpfs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::api::expect_problem;
use crate::support::app::spawn_app_with;
use crate::support::db::check_invariants;
use crate::support::spec::live_drop;

struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().expect("temp dir");
        let path = parent.path().join("small");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: the disk-full test needs root (or CAP_SYS_ADMIN)"
        );
        Tmpfs {
            path,
            _parent: parent,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem until it refuses another byte.
fn fill(path: &Path) -> PathBuf {
    let ballast = path.join("ballast");
    let mut file = std::fs::File::create(&ballast).expect("ballast file");
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let bytes = vec![0u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
    ballast
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers() {
    let tmpfs = Tmpfs::mount("24m");
    let data_dir = tmpfs.path.join("data");
    let app = spawn_app_with(|s| s.data_dir = data_dir.clone()).await;
    app.create_drop(&live_drop("full", 1_000, 1_000)).await;
    let alice = app.token("alice");
    let mut acked = Vec::new();
    for i in 0..20 {
        let res = app
            .hold(&alice, "full", "S1", 1, &format!("before-{i}"))
            .await;
        assert_eq!(res.status(), 201);
        acked.push(
            res.json::<Value>().await.expect("json")["hold_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let ballast = fill(&tmpfs.path);

    let mut refused = 0;
    for i in 0..50 {
        let res = app
            .hold(&alice, "full", "S1", 1, &format!("full-{i}"))
            .await;
        match res.status().as_u16() {
            201 => acked.push(
                res.json::<Value>().await.expect("json")["hold_id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            ),
            507 => {
                assert!(res.headers().contains_key("retry-after"));
                expect_problem(res, 507, "insufficient-storage").await;
                refused += 1;
            }
            other => panic!(
                "a write on a full disk answered {other}: {}",
                res.text().await.unwrap_or_default()
            ),
        }
    }
    assert!(refused > 0, "no write was refused on a full disk");

    // Reads answer from what is committed.
    let view = app.get_json("/v1/drops/full").await;
    assert_eq!(view["skus"][0]["held"].as_u64(), Some(acked.len() as u64));

    std::fs::remove_file(&ballast).expect("ballast removed");
    let res = app.hold(&alice, "full", "S1", 1, "after").await;
    assert_eq!(res.status(), 201, "writes work again once space returns");
    acked.push(
        res.json::<Value>().await.expect("json")["hold_id"]
            .as_str()
            .expect("id")
            .to_owned(),
    );

    let db = app.db();
    for hold in &acked {
        let found: i64 = db
            .query_row("SELECT COUNT(*) FROM holds WHERE id = ?1", [hold], |r| {
                r.get(0)
            })
            .expect("lookup");
        assert_eq!(found, 1, "acknowledged hold {hold} is missing");
    }
    check_invariants(&db).expect("invariants hold");
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(integrity, "ok");
    drop(db);
    app.stop().await;
}
