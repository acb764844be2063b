//! The real binary, spawned: `dropd serve` on port 0 with a data directory of the test's, and
//! `dropd admin-key create` for the key its admin routes take.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::api::{Api, SECRET};

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    /// What it printed before its address (`--demo` prints its credentials there).
    pub printed: Vec<String>,
}

impl ServerProcess {
    /// Starts `dropd serve` on port 0 and waits for the line that names its address.
    pub fn start(data_dir: &Path) -> ServerProcess {
        Self::start_with(data_dir, &[], &[])
    }

    /// With extra `serve` arguments and environment.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        let logs = if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::spawn(data_dir, args, envs, logs)
    }

    /// With its log (stderr) written to `log`.
    pub fn start_logging(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> ServerProcess {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn(data_dir, args, envs, Stdio::from(file))
    }

    fn spawn(data_dir: &Path, args: &[&str], envs: &[(&str, &str)], logs: Stdio) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dropd"))
            // These tests act as many buyers from one address; admission has tests of its own
            // (a test's `--rate-limit on` wins over this).
            .env("DROPD_RATE_LIMIT", "off")
            // Nothing balances load in front of a test: stop at once (a test's
            // `--drain-grace` wins over this).
            .env("DROPD_DRAIN_GRACE", "0s")
            // Nothing in the suite ever connects outside this machine.
            .env("DROPD_WEBHOOK_ALLOW", "127.0.0.1/32")
            // Most tests play the buyer all the way to an order (a test's `--buyer-confirms`
            // or its own DROPD_BUYER_CONFIRMS wins over this).
            .env("DROPD_BUYER_CONFIRMS", "true")
            .envs(envs.iter().copied())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token-secret",
                SECRET,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .expect("dropd starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .expect("dropd printed its address before exiting")
                .expect("stdout readable");
            if let Some(base) = line.strip_prefix("dropd listening on ") {
                break base.to_owned();
            }
            printed.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServerProcess {
            child,
            base,
            printed,
        }
    }

    /// SIGTERM, then waits for the graceful exit (which includes the shipper's last sync).
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("child reaped");
        assert!(exit.success(), "dropd exits 0 on SIGTERM: {exit}");
    }

    /// Waits up to `within` for the process to end on its own.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The API of this server, through `http`.
    pub fn api(&self, http: &reqwest::Client) -> Api {
        Api::new(http, &self.base)
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("child reaped");
    }
}

pub fn create_admin_key(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(["admin-key", "create", "--name", "test", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("dropd admin-key runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A `payments` service key made by `dropd service-key create`.
pub fn create_service_key(data_dir: &Path) -> String {
    let dir = data_dir.to_str().expect("a UTF-8 path");
    let (ok, key, err) = dropd(&[
        "service-key",
        "create",
        "--scope",
        "payments",
        "--data-dir",
        dir,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("payments service key sk_"), "{err}");
    key.trim().to_owned()
}

/// `dropd ARGS...` to its end: (success, stdout, stderr).
pub fn dropd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .args(args)
        .output()
        .expect("dropd runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
