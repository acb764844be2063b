//! The command line's side: ask a running server, if there is one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{socket_path, Request, Response};

/// The server's answer, or `None` when no server runs on this data directory (no socket, or
/// nobody listening on it).
pub fn ask(data_dir: &Path, request: &Request) -> anyhow::Result<Option<Response>> {
    let path = socket_path(data_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .context("asking the running server")?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the running server's answer")?;
    let response = serde_json::from_str(&answer)
        .with_context(|| format!("the running server answered {answer:?}"))?;
    Ok(Some(response))
}
