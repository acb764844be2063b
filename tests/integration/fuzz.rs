//! schemathesis (PyPI, installed by `make test`) against the real server, from the document it
//! serves: as a buyer, as an admin and anonymously, every check but positive data acceptance (a
//! request the schema allows may still break a rule of the drop, which the server refuses with
//! a documented problem), a bounded number of examples, a fixed seed. Zero failures.

use std::path::Path;
use std::process::Command;

use crate::support::api::{buyer_token, client};
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

fn schemathesis(base: &str, header: &str, workdir: &Path) -> (bool, String) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools-venv/bin/schemathesis");
    let out = Command::new(&bin)
        .args(["run", &format!("{base}/openapi.json")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "10",
            "--request-timeout",
            "2",
            "--seed",
            "1",
        ])
        .args(["-H", header])
        // Webhook endpoints would have the server post to whatever URL the fuzzer makes up:
        // their routes are tested with a real receiver instead (webhooks.rs).
        .args(["--exclude-path-regex", "^/v1/admin/webhooks"])
        .env("NO_COLOR", "1")
        // Its cache of past runs goes to the test's directory, not the checkout.
        .current_dir(workdir)
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): run `make test-deps`", bin.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_as_a_buyer_an_admin_or_anonymously() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = create_admin_key(dir.path());
    let server = ServerProcess::start(dir.path());
    let http = client();
    // Something to find: a live drop for the buyer's holds and the admin's edits.
    server
        .api(&http)
        .with_admin_key(&admin)
        .create_drop(&live_spec("fuzz"))
        .await;
    let base = server.base.clone();
    let roles = [
        (
            "buyer",
            format!("Authorization: Bearer {}", buyer_token("fuzzer")),
        ),
        ("admin", format!("Authorization: Bearer {admin}")),
        ("anonymous", "X-Fuzz: anonymous".to_owned()),
    ];
    for (role, header) in roles {
        let (base, header) = (base.clone(), header.clone());
        let workdir = dir.path().to_owned();
        let (ok, report) =
            tokio::task::spawn_blocking(move || schemathesis(&base, &header, &workdir))
                .await
                .expect("joined");
        assert!(ok, "schemathesis as {role}:\n{report}");
    }
    server.terminate();
}
