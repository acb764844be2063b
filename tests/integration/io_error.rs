//! A failed fsync at COMMIT: the real binary, with fsync made to fail (EIO) from a moment on by
//! a small LD_PRELOAD shim built here with gcc, must abort rather than answer and carry on, and
//! every hold it acknowledged before must be there after the restart.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use crate::support::api::client;
use crate::support::buyers::{hold_until_gone, verify_survived, Acked};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
static int failing(void) {
    const char *trigger = getenv("FAIL_FSYNC_WHEN");
    return trigger && access(trigger, F_OK) == 0;
}
int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_at_commit_aborts_and_loses_no_acknowledged_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("fail_fsync.c");
    let shim = dir.path().join("fail_fsync.so");
    std::fs::write(&source, SHIM).expect("shim source");
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("gcc runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let data = dir.path().join("data");
    let admin_key = create_admin_key(&data);
    let trigger = dir.path().join("fail-now");
    let (shim, trigger_path) = (shim.display().to_string(), trigger.display().to_string());
    let envs = [
        ("LD_PRELOAD", shim.as_str()),
        ("FAIL_FSYNC_WHEN", trigger_path.as_str()),
    ];
    let mut server = ServerProcess::start_with(&data, &[], &envs);
    let http = client();
    server
        .api(&http)
        .with_admin_key(&admin_key)
        .create_drop(&live_spec("fsync"))
        .await;
    let buyers = tokio::spawn({
        let base = server.base.clone();
        async move { hold_until_gone(&base, "fsync").await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&trigger, b"").expect("trigger");
    let status = server
        .exited_within(Duration::from_secs(30))
        .await
        .expect("the server stops serving once fsync fails");
    assert_eq!(
        status.signal(),
        Some(6),
        "an I/O error at commit aborts the process: {status}"
    );
    let (holds, refused) = buyers.await.expect("buyers");
    assert!(holds.len() > 100, "holds were acknowledged first");
    assert!(
        !refused.iter().any(|r| r.starts_with("500")),
        "a commit that failed its fsync was answered instead of aborting: {refused:?}"
    );

    std::fs::remove_file(&trigger).expect("trigger removed");
    let server = ServerProcess::start(&data);
    let acked = Acked {
        holds,
        orders: Vec::new(),
    };
    verify_survived(&server.api(&http), &data, &acked).await;
    server.terminate();
}
