//! A raw keep-alive HTTP/1.1 connection for the load generator's closed loop: requests written
//! from bytes, answers read by Content-Length, so a request costs the client about what it
//! costs wrk.

use std::net::SocketAddr;

use tokio::net::TcpStream;

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
