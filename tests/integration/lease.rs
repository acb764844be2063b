//! The leader's lease (`serve --lease`), real binaries on a real S3-protocol server (which
//! honours `If-None-Match: *` and `If-Match`) and on a directory replica: one leader per
//! replica, the same box takes its lease back at once, another only after expiry and from the
//! replica's state, and a leader that cannot renew stops acknowledging writes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::api::{client, expect_problem};
use crate::support::db::restored_holds;
use crate::support::litestream::{dropd_restore, file_url};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::replica::wait_replicated;
use crate::support::s3::S3Server;
use crate::support::spec::live_spec;

const SYNC: Duration = Duration::from_millis(200);

fn leased_args<'a>(url: &'a str, ttl: &'a str) -> Vec<&'a str> {
    vec![
        "--replica",
        url,
        "--sync-interval",
        "200ms",
        "--lease",
        "--lease-ttl",
        ttl,
    ]
}

/// `dropd serve` that must fail to start; returns what it printed on stderr.
fn refused(data: &Path, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .envs(S3Server::credentials())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dropd starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "a second leader must not start");
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
                .expect("stderr readable");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second leader on a leased replica kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn holder_of(data: &Path) -> String {
    std::fs::read_to_string(data.join(dropd::app::HOLDER_FILE))
        .expect("the holder id is kept in the data directory")
        .trim()
        .to_owned()
}

/// Level-0 TXID ranges in an s3s-fs bucket directory, sorted.
fn level0(root: &Path) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = std::fs::read_dir(root.join("0000"))
        .expect("level 0")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            dropd::replicate::replica::parse_name(&name)
        })
        .collect();
    ranges.sort();
    ranges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_per_replica_and_a_takeover_only_after_expiry_from_the_replica() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let url = s3.url("leased");
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let http = client();
    let args = leased_args(&url, "3s");
    let creds = S3Server::credentials();
    let a = ServerProcess::start_with(&a_data, &args, &creds);
    let key = create_admin_key(&a_data);
    let admin = a.api(&http).with_admin_key(&key);
    admin.create_drop(&live_spec("solo")).await;
    for i in 0..5 {
        let res = a
            .api(&http)
            .buyer("ann")
            .hold("solo", "S1", 1, &format!("a{i}"))
            .await;
        assert_eq!(res.status(), 201);
    }
    let ready = a.api(&http).with_admin_key(&key).readyz().await;
    assert_eq!(ready["lease"]["state"], "held", "{ready}");
    assert_eq!(ready["lease"]["holder"], holder_of(&a_data).as_str());

    // A second leader refuses to start, naming the holder.
    let err = refused(&b_data, &args);
    assert!(err.contains(&holder_of(&a_data)), "{err}");

    // The same box, killed and started again, takes its own lease back at once.
    wait_replicated(&admin, SYNC).await;
    a.kill();
    let started = Instant::now();
    let a = ServerProcess::start_with(&a_data, &args, &creds);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for i in 5..8 {
        let res = a
            .api(&http)
            .buyer("ann")
            .hold("solo", "S1", 1, &format!("a{i}"))
            .await;
        assert_eq!(res.status(), 201);
    }
    let admin = a.api(&http).with_admin_key(&key);
    wait_replicated(&admin, SYNC).await;
    let stock = admin.available("solo", "S1").await;
    a.kill();

    // Killed, its lease still runs: refused until it expires, then the takeover restores the
    // replica's state into a data directory that had none.
    let err = refused(&b_data, &args);
    assert!(err.contains("held by"), "{err}");
    std::thread::sleep(Duration::from_millis(3_500));
    let b = ServerProcess::start_with(&b_data, &args, &creds);
    assert_eq!(
        b.api(&http).available("solo", "S1").await,
        stock,
        "B serves A's sales"
    );
    for i in 0..2 {
        let res = b
            .api(&http)
            .buyer("bea")
            .hold("solo", "S1", 1, &format!("b{i}"))
            .await;
        assert_eq!(res.status(), 201);
    }
    b.terminate();

    // The TXIDs run on across both leaders with no gap or overlap, and the replica holds all
    // ten holds.
    let l0 = level0(&dir.path().join("s3").join("drops").join("leased"));
    for pair in l0.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "{l0:?}");
    }
    let restored = dropd_restore(&url, &dir.path().join("all.db"), &[]).expect("restore");
    assert_eq!(restored_holds(&restored, dir.path(), "check.db"), 10);

    // B stopped cleanly and released the lease: A takes over at once, sets its own stale
    // database aside and serves the replica's.
    let a = ServerProcess::start_with(&a_data, &args, &creds);
    assert_eq!(a.api(&http).available("solo", "S1").await, stock - 2);
    let aside = std::fs::read_dir(&a_data)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .any(|n| n.starts_with("dropd.db.superseded-"));
    assert!(aside, "the stale database is kept aside");
    a.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_acknowledging_writes_until_it_can() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s3 = S3Server::start(&dir.path().join("s3"));
    let url = s3.url("outage");
    let data = dir.path().join("a");
    let http = client();
    let a = ServerProcess::start_with(&data, &leased_args(&url, "2s"), &S3Server::credentials());
    let key = create_admin_key(&data);
    let admin = a.api(&http).with_admin_key(&key);
    admin.create_drop(&live_spec("outage")).await;
    let buyer = a.api(&http).buyer("cy");
    assert_eq!(buyer.hold("outage", "S1", 1, "before").await.status(), 201);

    s3.pause();
    let deadline = Instant::now() + Duration::from_secs(15);
    let problem = loop {
        let res = buyer.hold("outage", "S1", 1, "during").await;
        if res.status() == 503 {
            break expect_problem(res, 503, "lease-expired").await;
        }
        assert_eq!(res.status(), 201, "a write is answered or refused");
        assert!(Instant::now() < deadline, "writes were never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(problem["detail"]
        .as_str()
        .expect("detail")
        .contains("lease"));
    let res = http
        .get(a.api(&http).url("/readyz"))
        .send()
        .await
        .expect("sent");
    expect_problem(res, 503, "unavailable").await;
    // Reads go on.
    assert!(admin.available("outage", "S1").await > 0);

    s3.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = buyer.hold("outage", "S1", 1, "after").await;
        if res.status() == 201 {
            break;
        }
        assert_eq!(res.status(), 503);
        assert!(Instant::now() < deadline, "writes never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replica_has_the_same_lease_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = file_url(&dir.path().join("replica"));
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let args = leased_args(&url, "2s");
    let a = ServerProcess::start_with(&a_data, &args, &[]);
    let err = refused(&b_data, &args);
    assert!(err.contains(&holder_of(&a_data)), "{err}");
    a.terminate();
    // Released at the clean stop: B takes over at once.
    let b = ServerProcess::start_with(&b_data, &args, &[]);
    b.terminate();
}

fn signal(server: &ServerProcess, name: &str) {
    let status = Command::new("kill")
        .args([name, &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Split brain, played out: a leader frozen past its lease wakes up to find another leader.
/// It uploads nothing more and stops with an error naming the new holder, and the replica's
/// TXIDs stay one unbroken line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_woken_after_a_takeover_stops_and_ships_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let http = client();
    let args = leased_args(&url, "2s");
    let mut a = ServerProcess::start_with(&a_data, &args, &[]);
    let admin = a.api(&http).with_admin_key(&create_admin_key(&a_data));
    admin.create_drop(&live_spec("frozen")).await;
    wait_replicated(&admin, SYNC).await;
    signal(&a, "-STOP");
    std::thread::sleep(Duration::from_millis(2_500));
    let b = ServerProcess::start_with(&b_data, &args, &[]);
    let res = b
        .api(&http)
        .buyer("dee")
        .hold("frozen", "S1", 1, "b1")
        .await;
    assert_eq!(res.status(), 201, "B leads from the replica's state");
    signal(&a, "-CONT");
    let exit = a
        .exited_within(Duration::from_secs(10))
        .await
        .expect("the deposed leader stops");
    assert!(!exit.success(), "and says so: {exit}");
    let res = b
        .api(&http)
        .buyer("dee")
        .hold("frozen", "S1", 1, "b2")
        .await;
    assert_eq!(res.status(), 201);
    b.terminate();
    let mut l0: Vec<(u64, u64)> = crate::support::litestream::list_replica(&replica)
        .into_iter()
        .filter(|f| f.level == 0)
        .map(|f| (f.min_txid, f.max_txid))
        .collect();
    l0.sort();
    for pair in l0.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "{l0:?}");
    }
}
