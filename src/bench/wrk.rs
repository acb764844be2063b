//! The independent load client: `wrk -t1` against the same server, in the same rounds as the
//! benchmark's own generator, so the headline ratios do not rest on a client we wrote.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper::header::HeaderValue;

/// Holds of one unit, a fresh Idempotency-Key per request, buyers taken in turn. wrk's own
/// per-request cost (Lua formatting) is its own: it is measured, not hidden.
const HOLD_SCRIPT: &str = r#"
local tokens = {}
local n = 0
local path, prefix
function init(args)
  path = args[1]
  prefix = args[3]
  for line in io.lines(args[2]) do tokens[#tokens + 1] = line end
end
local body = '{"sku":"S1","quantity":1}'
function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["Authorization"] = tokens[(n % #tokens) + 1],
    ["Idempotency-Key"] = prefix .. "-" .. n,
    ["Content-Type"] = "application/json",
  }, body)
end
"#;

pub struct Wrk {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// What wrk printed.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WrkResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

pub enum Target<'a> {
    Health,
    Hold { drop: &'a str, key_prefix: &'a str },
}

impl Wrk {
    /// wrk on PATH (or at `bin`), with the hold script and the buyers' tokens written for it.
    pub fn find(bin: Option<&Path>, tokens: &[HeaderValue]) -> anyhow::Result<Option<Wrk>> {
        let bin = match bin {
            Some(bin) => bin.to_owned(),
            None => match which("wrk") {
                Some(bin) => bin,
                None => return Ok(None),
            },
        };
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("hold.lua"), HOLD_SCRIPT)?;
        let mut lines = String::new();
        for token in tokens {
            lines.push_str(token.to_str()?);
            lines.push('\n');
        }
        std::fs::write(dir.path().join("tokens"), lines)?;
        Ok(Some(Wrk { bin, dir }))
    }

    pub fn run(
        &self,
        addr: SocketAddr,
        target: &Target<'_>,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<WrkResult> {
        let seconds = duration.as_secs().max(1);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-t1", "--latency", "--timeout", "10s"])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"));
        match target {
            Target::Health => {
                cmd.arg(format!("http://{addr}/healthz"));
            }
            Target::Hold { drop, key_prefix } => {
                cmd.arg("-s")
                    .arg(self.dir.path().join("hold.lua"))
                    .arg(format!("http://{addr}/"))
                    .arg("--")
                    .arg(format!("/v1/drops/{drop}/holds"))
                    .arg(self.dir.path().join("tokens"))
                    .arg(key_prefix);
            }
        }
        let out = cmd.output().context("running wrk")?;
        if !out.status.success() {
            bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        parse(&String::from_utf8_lossy(&out.stdout))
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `5.28ms`, `812.00us`, `1.20s` in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * factor)
}

fn parse(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = millis(v).unwrap_or_default(),
            ["99%", v] => r.p99_ms = millis(v).unwrap_or_default(),
            [n, "requests", "in", t, ..] => {
                r.requests = n.parse().context("wrk's request count")?;
                r.seconds = millis(t.trim_end_matches(',')).unwrap_or_default() / 1e3;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if r.requests == 0 {
        bail!("wrk reported no requests:\n{out}");
    }
    Ok(r)
}

/// `dropd_wal_bytes_written_total` from the server's /metrics (0 if it is not there yet).
pub fn wal_bytes(addr: SocketAddr) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("dropd_wal_bytes_written_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_wrk_prints() {
        let out = "Running 5s test @ http://127.0.0.1:1/healthz
  1 threads and 256 connections
  Latency Distribution
     50%    5.28ms
     75%    5.64ms
     99%  812.00us
  231479 requests in 5.01s, 29.80MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 61513
Requests/sec:  46229.02
";
        let r = parse(out).expect("parses");
        assert_eq!(r.requests, 231_479);
        assert_eq!(r.non_2xx, 61_513);
        assert_eq!(r.socket_errors, 3);
        assert!((r.seconds - 5.01).abs() < 1e-9);
        assert!((r.p50_ms - 5.28).abs() < 1e-9);
        assert!((r.p99_ms - 0.812).abs() < 1e-9);
    }
}
