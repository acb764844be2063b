//! The dropd the benchmark starts for itself: the same binary, a temporary data directory,
//! loopback only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct OwnServer {
    child: Child,
    pub base: String,
    pub pid: u32,
    pub db_path: PathBuf,
}

pub fn create_admin_key(data_dir: &Path) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args(["admin-key", "create", "--name", "bench", "--data-dir"])
        .arg(data_dir)
        .output()
        .context("running dropd admin-key create")?;
    if !out.status.success() {
        bail!(
            "dropd admin-key create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

impl OwnServer {
    pub fn start(
        data_dir: &Path,
        secret: &str,
        synchronous: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--token-secret", secret])
            // One address, thousands of buyers, several writes each at once: limits off (an
            // `--rate-limit on` among `extra` wins).
            .env("DROPD_RATE_LIMIT", "off")
            .env("DROPD_DRAIN_GRACE", "0s")
            // Webhooks, if any, stay on this machine.
            .env("DROPD_WEBHOOK_ALLOW", "127.0.0.1/32")
            // The load plays buyers who confirm their own holds.
            .env("DROPD_BUYER_CONFIRMS", "true")
            .args(["--synchronous", synchronous, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("DROPD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dropd serve")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(base) = line.strip_prefix("dropd listening on ") {
                        break base.to_owned();
                    }
                }
                _ => bail!("dropd serve exited before it was listening"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            pid: child.id(),
            child,
            base,
            db_path: data_dir.join(crate::app::DB_FILE),
        })
    }

    /// SIGTERM, then wait for the drain; SIGKILL if it takes too long.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("dropd did not stop within 30 s of SIGTERM")
    }
}

/// Samples the size of the server's WAL every 50 ms (a `stat`, no descriptor on the file) until
/// stopped: how large the WAL grew during a phase.
pub struct WalWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl WalWatch {
    pub fn start(db_path: &Path) -> Self {
        let wal = PathBuf::from(format!("{}-wal", db_path.display()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut largest = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                std::thread::sleep(Duration::from_millis(50));
            }
            largest
        });
        Self { stop, handle }
    }

    /// The largest size seen, in MB.
    pub fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0) as f64 / 1e6
    }
}
