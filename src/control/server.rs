//! The server's side: the `control` thread answering the socket, and the `admin-keys` thread
//! keeping the in-memory key book current whoever changed the table (an operator's `sqlite3`
//! included), within a quarter of a second.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{socket_path, Request, Response};
use crate::auth::AdminKeyBook;
use crate::store::admin_keys::KeyWatch;
use crate::store::Writer;

const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The two threads; `stop` ends them and removes the socket.
pub struct Control {
    keeper: Arc<Keeper>,
    stop: Arc<AtomicBool>,
    socket: Option<PathBuf>,
    threads: Vec<JoinHandle<()>>,
}

struct Keeper {
    watch: Mutex<KeyWatch>,
    book: Arc<AdminKeyBook>,
}

impl Keeper {
    fn refresh(&self) {
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        match watch.changed() {
            Ok(Some(keys)) => self.book.replace(keys),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "reading the admin keys failed; keeping the last ones")
            }
        }
    }
}

/// Loads the key book now, then keeps it current and answers the socket until `stop`.
pub fn start(
    data_dir: &Path,
    db_path: &Path,
    writer: Writer,
    book: Arc<AdminKeyBook>,
) -> anyhow::Result<Control> {
    let keeper = Arc::new(Keeper {
        watch: Mutex::new(KeyWatch::open(db_path).context("opening the admin-key watch")?),
        book,
    });
    keeper.refresh();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (keeper, stop) = (keeper.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("admin-keys".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(WATCH_EVERY);
                        keeper.refresh();
                    }
                })?,
        );
    }
    let path = socket_path(data_dir);
    let socket = match bind(&path) {
        Ok(listener) => {
            let (keeper, stop) = (keeper.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("control".into())
                    .spawn(move || serve(listener, &writer, &keeper, &stop))?,
            );
            Some(path)
        }
        Err(err) => {
            // A data directory whose path is too long for a socket still serves; admin-key
            // changes then go to the database directly and count within the watch interval.
            tracing::warn!(error = %err, "no control socket; `dropd admin-key` will write the database directly");
            None
        }
    };
    Ok(Control {
        keeper,
        stop,
        socket,
        threads,
    })
}

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another dropd serve is running on this data directory (its control socket {} answers)",
            path.display()
        );
    }
    // Left by a server that did not stop cleanly: nobody listens on it.
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn serve(listener: UnixListener, writer: &Writer, keeper: &Keeper, stop: &AtomicBool) {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "the control socket has no runtime; it answers nothing");
            return;
        }
    };
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => runtime.block_on(answer(request, writer)),
            Err(err) => Response::Failed {
                message: format!("not a request: {err}"),
            },
        };
        // Before the answer: the caller may use the key the moment it is told.
        keeper.refresh();
        let mut text = serde_json::to_string(&response).unwrap_or_default();
        text.push('\n');
        let _ = (&stream).write_all(text.as_bytes());
    }
}

async fn answer(request: Request, writer: &Writer) -> Response {
    let failed = |message: String| Response::Failed { message };
    match request {
        Request::CreateAdminKey {
            name,
            key_hash,
            scope,
        } => {
            let Some(hash) = hex::decode(&key_hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                return failed("key_hash must be 64 hex digits".into());
            };
            if !crate::auth::SCOPES.contains(&scope.as_str()) {
                return failed(format!("unknown scope {scope:?}"));
            }
            match writer
                .create_admin_key(name.clone(), hash, scope.clone())
                .await
            {
                Ok(id) => {
                    tracing::info!(admin_key = %id, name, "admin key created");
                    Response::Created { id }
                }
                Err(err) => failed(err.to_string()),
            }
        }
        Request::RevokeAdminKey { id } => match writer.revoke_admin_key(id.clone()).await {
            Ok(was_active) => {
                tracing::info!(admin_key = %id, was_active, "admin key revoked");
                Response::Revoked { id, was_active }
            }
            Err(err) => failed(err.to_string()),
        },
    }
}

impl Control {
    /// Reads the key table again now (after a change this process made).
    pub fn refresh(&self) {
        self.keeper.refresh();
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if let Some(path) = &self.socket {
            // Wakes the control thread's accept.
            let _ = UnixStream::connect(path);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}
