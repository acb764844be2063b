//! A raw keep-alive HTTP/1.1 connection for the load generator's closed loop: requests written
//! from bytes, answers read by Content-Length, so a request costs the client about what it
//! costs wrk.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;

use super::workload::{classify, Ctx, GroupResult, Workload, HOLD_BODY};

/// Just enough HTTP/1.1 for the closed loop: one request at a time, answers with a
/// Content-Length (dropd sends one on every non-streaming answer).
pub(super) struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl RawConn {
    pub(super) async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            body: 0..0,
        })
    }

    pub(super) fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// Sends `req` and reads the whole answer; returns its status.
    pub(super) async fn exchange(&mut self, req: &[u8]) -> std::io::Result<u16> {
        use tokio::io::AsyncWriteExt;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.stream.write_all(req).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if self.read_more().await? == 0 {
                return Err(bad("connection closed"));
            }
        };
        let head = &self.buf[..head_end];
        let status = head
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let length = content_length(head).ok_or_else(|| bad("no content-length"))?;
        while self.buf.len() < head_end + length {
            if self.read_more().await? == 0 {
                return Err(bad("connection closed mid-body"));
            }
        }
        self.body = head_end..head_end + length;
        Ok(status)
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    const NAME: &[u8] = b"content-length:";
    head.split(|b| *b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            std::str::from_utf8(&line[NAME.len()..])
                .ok()?
                .trim()
                .parse()
                .ok()
        } else {
            None
        }
    })
}

/// The closed loop for plain requests, on a raw keep-alive connection: each request is written
/// from bytes rendered once per connection with the buyer's token and the key patched in, and
/// each answer is read by its Content-Length; no per-request allocation, timer or URI parse, so
/// the generator costs about what wrk does and the ratios it reports agree with wrk's.
pub(super) async fn drive(
    ctx: &Ctx,
    workload: &Workload,
    phase: usize,
    index: usize,
    total: usize,
    deadline: Instant,
    max: u64,
) -> GroupResult {
    use std::io::Write as _;
    let mut result = GroupResult::new();
    let host = ctx.host.to_str().unwrap_or("127.0.0.1");
    let (head, is_post) = match workload {
        Workload::Health => (
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            false,
        ),
        Workload::ReadDrop { drop } => (
            format!("GET /v1/drops/{drop} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            false,
        ),
        // A buyer's token and nothing else: written below, ended there.
        Workload::Join { drop } => (
            format!(
                "POST /v1/drops/{drop}/queue HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
                 Authorization: "
            ),
            true,
        ),
        Workload::QueuePlace { drop } => (
            format!("GET /v1/drops/{drop}/queue HTTP/1.1\r\nHost: {host}\r\nAuthorization: "),
            true,
        ),
        _ => {
            let drop = match workload {
                Workload::Hold { drop }
                | Workload::HoldForwarded { drop }
                | Workload::Scalp { drop }
                | Workload::Flood { drop } => drop.as_str(),
                _ => "",
            };
            (
                format!(
                    "POST /v1/drops/{drop}/holds HTTP/1.1\r\nHost: {host}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\nAuthorization: ",
                    HOLD_BODY.len()
                ),
                true,
            )
        }
    };
    let Ok(mut conn) = RawConn::open(ctx.addr).await else {
        result.errors += 1;
        return result;
    };
    let mut req = Vec::with_capacity(1024);
    let mut i: u64 = 0;
    while i < max && Instant::now() < deadline {
        let spread = (i as usize * total + index) % ctx.tokens.len().max(1);
        let buyer = if matches!(workload, Workload::Scalp { .. }) {
            0
        } else {
            spread
        };
        req.clear();
        req.extend_from_slice(head.as_bytes());
        if is_post {
            req.extend_from_slice(ctx.tokens[buyer].as_bytes());
            match workload {
                Workload::HoldForwarded { .. } => {
                    let _ = write!(
                        req,
                        "\r\nX-Forwarded-For: 10.{}.{}.{}",
                        (buyer >> 16) & 255,
                        (buyer >> 8) & 255,
                        buyer & 255
                    );
                }
                Workload::Scalp { .. } => {
                    req.extend_from_slice(b"\r\nX-Forwarded-For: 198.51.100.7")
                }
                Workload::Flood { .. } => {
                    req.extend_from_slice(b"\r\nX-Forwarded-For: 203.0.113.66")
                }
                _ => {}
            }
            if matches!(
                workload,
                Workload::Join { .. } | Workload::QueuePlace { .. }
            ) {
                req.extend_from_slice(b"\r\n\r\n");
            } else {
                let _ = write!(
                    req,
                    "\r\nIdempotency-Key: {}-{phase}-{index}-{i}\r\n\r\n",
                    ctx.run_id
                );
                req.extend_from_slice(HOLD_BODY);
            }
        }
        let started = Instant::now();
        match conn.exchange(&req).await {
            Ok(status) => {
                result.requests += 1;
                let _ = result
                    .latency
                    .record((started.elapsed().as_micros() as u64).max(1));
                *result
                    .outcomes
                    .entry(classify(status, conn.body()))
                    .or_default() += 1;
            }
            Err(_) => {
                result.errors += 1;
                match RawConn::open(ctx.addr).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
            }
        }
        i += 1;
    }
    result.finished = Some(Instant::now());
    result
}
