//! A real S3-protocol server on 127.0.0.1 (s3s + s3s-fs, in process, on its own runtime and
//! thread) that a test can stop and start again on the same port to play an outage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dropd::replicate::replica::{ReplicaTarget, S3Target};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

pub const ACCESS_KEY: &str = "dropd-test";
pub const SECRET_KEY: &str = "dropd-test-secret";
pub const BUCKET: &str = "drops";

pub struct S3Server {
    pub addr: SocketAddr,
    root: PathBuf,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl S3Server {
    /// Serves `root` (each directory a bucket; `drops` is created) on a free port.
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
        let mut server = S3Server {
            addr: "127.0.0.1:0".parse().expect("addr"),
            root: root.to_owned(),
            running: None,
        };
        server.resume();
        server
    }

    /// Starts serving again on the same port.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "already running");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let root = self.root.clone();
        let addr = self.addr;
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("s3 runtime");
            runtime.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
                let mut builder = s3s::service::S3ServiceBuilder::new(fs);
                builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = builder.build();
                let listener = tokio::net::TcpListener::bind(addr).await.expect("s3 port");
                ready_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("ready");
                let http = ConnBuilder::new(TokioExecutor::new());
                let mut stopped = std::pin::pin!(stopped);
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    let conn = http
                        .serve_connection(TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
            // Drops every open connection too: clients see the server gone, as in an outage.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        });
        self.addr = ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("s3 server started");
        self.running = Some(Running { stop, thread });
    }

    pub fn pause(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            running.thread.join().expect("s3 server thread");
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A replica URL Litestream understands too.
    pub fn url(&self, path: &str) -> String {
        format!(
            "s3://{BUCKET}/{path}?endpoint={}&region=us-east-1&forcePathStyle=true",
            self.endpoint()
        )
    }

    /// The target dropd uses in process (credentials given, not taken from the environment).
    pub fn target(&self, path: &str) -> ReplicaTarget {
        ReplicaTarget::S3(S3Target {
            bucket: BUCKET.into(),
            path: path.into(),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
        })
    }

    /// Environment for child processes (dropd or litestream) to reach this server.
    pub fn credentials() -> [(&'static str, &'static str); 4] {
        [
            ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY),
            ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.pause();
    }
}
