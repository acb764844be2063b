//! Where LTX files live: a directory (`file:///dir`) or an S3 bucket (`s3://bucket/path`).
//! Both backends name and timestamp objects exactly as Litestream does (see docs/design.md,
//! "Replication"), so either tool can restore what the other wrote.
//!
//! Calls block: the shipper and `restore` are plain threads. The S3 client runs on its own
//! small tokio runtime, never on an actix worker.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

use super::ltx::Header;

/// One LTX object of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFile {
    pub level: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    /// The object's name in its replica (a path for files, a key for S3).
    pub key: String,
    pub size: u64,
    /// When it was written: the header timestamp Litestream keeps beside the object (file
    /// mtime; S3 `litestream-timestamp`), or the upload time until `refine_times` is called.
    pub written: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{0}")]
    Url(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Store {
        context: String,
        source: object_store::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReplicaError {
    let context = context.into();
    move |source| ReplicaError::Io { context, source }
}

fn store(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> ReplicaError {
    let context = context.into();
    move |source| ReplicaError::Store { context, source }
}

/// A replica's address and credentials, from a URL or from litestream.yml.
#[derive(Clone, PartialEq, Eq)]
pub enum ReplicaTarget {
    File(PathBuf),
    S3(S3Target),
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    /// Key prefix without leading or trailing slashes ("" for the bucket's root).
    pub path: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl fmt::Display for ReplicaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaTarget::File(path) => write!(f, "file://{}", path.display()),
            ReplicaTarget::S3(s3) => {
                write!(f, "s3://{}/{}", s3.bucket, s3.path)?;
                if let Some(endpoint) = &s3.endpoint {
                    write!(f, "?endpoint={endpoint}")?;
                }
                Ok(())
            }
        }
    }
}

// Credentials never reach logs or panics.
impl fmt::Debug for ReplicaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplicaTarget({self})")
    }
}

impl ReplicaTarget {
    /// `file:///dir`, or `s3://bucket/path?endpoint=http://host:port&region=r&force-path-style=true`
    /// (Litestream's `forcePathStyle` spelling is accepted too).
    pub fn parse_url(text: &str) -> Result<Self, ReplicaError> {
        let bad = |why: &str| {
            ReplicaError::Url(format!(
                "{text:?} is not a replica URL ({why}): use file:///path/to/replica or \
                 s3://bucket/path?endpoint=...&region=..."
            ))
        };
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("a file URL needs an absolute path"))?;
                Ok(ReplicaTarget::File(path))
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("no bucket"))?;
                let mut s3 = S3Target {
                    bucket: bucket.to_owned(),
                    path: url.path().trim_matches('/').to_owned(),
                    ..S3Target::default()
                };
                for (key, value) in url.query_pairs() {
                    match key.as_ref() {
                        "endpoint" => s3.endpoint = Some(value.into_owned()),
                        "region" => s3.region = Some(value.into_owned()),
                        "force-path-style" | "forcePathStyle" => {
                            s3.force_path_style = parse_bool(&value)
                                .ok_or_else(|| bad("force-path-style must be true or false"))?;
                        }
                        other => {
                            tracing::warn!(key = other, "ignoring an unknown replica URL option")
                        }
                    }
                }
                Ok(ReplicaTarget::S3(s3))
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }

    pub fn open(&self) -> Result<Arc<dyn Replica>, ReplicaError> {
        Ok(match self {
            ReplicaTarget::File(path) => Arc::new(FileReplica::new(path.clone())),
            ReplicaTarget::S3(s3) => Arc::new(S3Replica::connect(s3.clone())?),
        })
    }
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// One LTX file being stored, written as it is encoded; it appears in the replica, under its
/// Litestream name, only once `finish` returns.
pub trait Upload: Write + Send {
    fn finish(self: Box<Self>) -> Result<LtxFile, ReplicaError>;
    /// Leaves nothing behind (a temp file, an unfinished multipart upload).
    fn abort(self: Box<Self>);
}

/// What the shipper and restore need from a replica.
pub trait Replica: Send + Sync {
    /// Every LTX object, in no particular order; other names are ignored.
    fn list(&self) -> Result<Vec<LtxFile>, ReplicaError>;
    fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError>;
    /// Copies one object into `out` as it arrives, without holding it in memory.
    fn read_into(&self, file: &LtxFile, out: &mut dyn Write) -> Result<u64, ReplicaError> {
        let bytes = self.read(file)?;
        out.write_all(&bytes)
            .map_err(io(format!("copying {}", file.key)))?;
        Ok(bytes.len() as u64)
    }
    /// Starts storing the LTX file `header` describes at `level`.
    fn create(&self, level: u32, header: &Header) -> Result<Box<dyn Upload + '_>, ReplicaError>;
    /// Stores one LTX file under its Litestream name, with the header timestamp beside it.
    fn write(&self, level: u32, header: &Header, bytes: Vec<u8>) -> Result<LtxFile, ReplicaError> {
        let mut upload = self.create(level, header)?;
        if let Err(e) = upload.write_all(&bytes) {
            upload.abort();
            return Err(io(format!("writing {}", file_name(header)))(e));
        }
        upload.finish()
    }
    fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError>;
    /// Replaces upload times with the timestamps kept beside the objects, where listing alone
    /// does not give them (S3). Needed only for a point-in-time restore.
    fn refine_times(&self, _files: &mut [LtxFile]) -> Result<(), ReplicaError> {
        Ok(())
    }
}

/// `%016x-%016x.ltx`, lowercase hex.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    if min.len() != 16 || max.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(min, 16).ok()?,
        u64::from_str_radix(max, 16).ok()?,
    ))
}

pub fn file_name(header: &Header) -> String {
    format!("{:016x}-{:016x}.ltx", header.min_txid, header.max_txid)
}

fn written(level: u32, header: &Header, key: String, size: usize) -> LtxFile {
    LtxFile {
        level,
        min_txid: header.min_txid,
        max_txid: header.max_txid,
        key,
        size: size as u64,
        written: header_time(header),
    }
}

fn header_time(header: &Header) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(header.timestamp_ms.max(0) as u64)
}

/// `<root>/ltx/<level>/<min>-<max>.ltx`.
pub struct FileReplica {
    root: PathBuf,
}

impl FileReplica {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

impl Replica for FileReplica {
    fn list(&self) -> Result<Vec<LtxFile>, ReplicaError> {
        let mut files = Vec::new();
        let ltx_dir = self.root.join("ltx");
        let levels = match std::fs::read_dir(&ltx_dir) {
            Ok(levels) => levels,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(io(format!("listing {}", ltx_dir.display()))(e)),
        };
        for level in levels {
            let level = level.map_err(io(format!("listing {}", ltx_dir.display())))?;
            let Some(number) = level
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = level.path();
            for entry in
                std::fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))?
            {
                let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
                let Some((min, max)) = entry.file_name().to_str().and_then(parse_name) else {
                    continue;
                };
                let meta = entry
                    .metadata()
                    .map_err(io(format!("reading {}", entry.path().display())))?;
                files.push(LtxFile {
                    level: number,
                    min_txid: min,
                    max_txid: max,
                    key: entry.path().display().to_string(),
                    size: meta.len(),
                    written: meta
                        .modified()
                        .map_err(io(format!("reading {}", entry.path().display())))?,
                });
            }
        }
        Ok(files)
    }

    fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError> {
        std::fs::read(&file.key).map_err(io(format!("reading {}", file.key)))
    }

    fn read_into(&self, file: &LtxFile, out: &mut dyn Write) -> Result<u64, ReplicaError> {
        let mut source =
            std::fs::File::open(&file.key).map_err(io(format!("reading {}", file.key)))?;
        std::io::copy(&mut source, out).map_err(io(format!("reading {}", file.key)))
    }

    /// Temp file, fsync, rename, directory fsync, then the mtime Litestream reads as the
    /// file's timestamp.
    fn create(&self, level: u32, header: &Header) -> Result<Box<dyn Upload + '_>, ReplicaError> {
        let dir = self.root.join("ltx").join(level.to_string());
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let name = file_name(header);
        let tmp = dir.join(format!("{name}.tmp"));
        let file =
            std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        Ok(Box::new(FileUpload {
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            path: dir.join(&name),
            dir,
            tmp,
            level,
            header: *header,
            size: 0,
        }))
    }

    fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError> {
        for file in files {
            match std::fs::remove_file(&file.key) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("deleting {}", file.key))(e)),
            }
        }
        Ok(())
    }
}

struct FileUpload {
    out: std::io::BufWriter<std::fs::File>,
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    level: u32,
    header: Header,
    size: usize,
}

impl Write for FileUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.size += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Upload for FileUpload {
    fn finish(self: Box<Self>) -> Result<LtxFile, ReplicaError> {
        let this = *self;
        let tmp = this.tmp.clone();
        let result = (|| {
            let file = this
                .out
                .into_inner()
                .map_err(|e| io(format!("writing {}", tmp.display()))(e.into_error()))?;
            file.sync_all()
                .map_err(io(format!("syncing {}", tmp.display())))?;
            file.set_modified(header_time(&this.header))
                .map_err(io(format!("setting the time of {}", tmp.display())))?;
            drop(file);
            std::fs::rename(&tmp, &this.path).map_err(io(format!("renaming {}", tmp.display())))?;
            sync_dir(&this.dir)
        })();
        if let Err(err) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        Ok(written(
            this.level,
            &this.header,
            this.path.display().to_string(),
            this.size,
        ))
    }

    fn abort(self: Box<Self>) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), ReplicaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

const TIMESTAMP_KEY: &str = "litestream-timestamp";

/// `<path>/<level as %04x>/<min>-<max>.ltx` with the header timestamp as user metadata.
pub struct S3Replica {
    target: S3Target,
    client: Arc<AmazonS3>,
    /// Above this an upload goes in parts of `part_size`, so a large snapshot never sits in
    /// one request (S3 wants parts of at least 5 MiB but the last).
    multipart_threshold: usize,
    part_size: usize,
    // Option so Drop can shut it down without blocking, even from async code.
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Replica {
    pub fn connect(target: S3Target) -> Result<Self, ReplicaError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replica-io")
            .enable_all()
            .build()
            .map_err(io("starting the S3 client runtime"))?;
        let env = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok());
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&target.bucket)
            .with_region(
                target
                    .region
                    .clone()
                    .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
                    .unwrap_or_else(|| "us-east-1".into()),
            )
            // Our shipper retries with its own backoff; a request must not hang it for minutes.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(key) = target
            .access_key_id
            .clone()
            .or_else(|| env(&["LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]))
        {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = target
            .secret_access_key
            .clone()
            .or_else(|| env(&["LITESTREAM_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]))
        {
            builder = builder.with_secret_access_key(secret);
        }
        if let Ok(token) = std::env::var("AWS_SESSION_TOKEN") {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &target.endpoint {
            // As Litestream does: an endpoint without a scheme is plain http (MinIO and friends).
            let endpoint = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        } else if !target.force_path_style {
            builder = builder.with_virtual_hosted_style_request(true);
        }
        let client = {
            let _guard = runtime.enter();
            builder.build().map_err(store(format!(
                "configuring the S3 client for bucket {}",
                target.bucket
            )))?
        };
        Ok(Self {
            target,
            client: Arc::new(client),
            multipart_threshold: 16 << 20,
            part_size: 16 << 20,
            runtime: Some(runtime),
        })
    }

    /// Uploads above `threshold` bytes go in parts of `part_size` (at least 5 MiB).
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> Self {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(5 << 20);
        self
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => unreachable!("the runtime lives until drop"),
        }
    }

    fn prefix(&self) -> Option<ObjectPath> {
        (!self.target.path.is_empty()).then(|| ObjectPath::from(self.target.path.as_str()))
    }

    fn key(&self, level: u32, name: &str) -> ObjectPath {
        let relative = format!("{level:04x}/{name}");
        match self.prefix() {
            Some(prefix) => ObjectPath::from(format!("{prefix}/{relative}")),
            None => ObjectPath::from(relative),
        }
    }

    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.target.bucket)
    }
}

/// Keys come back from listings already encoded: parse them, do not encode them twice.
fn object_key(key: &str) -> ObjectPath {
    ObjectPath::parse(key).unwrap_or_else(|_| ObjectPath::from(key))
}

impl Drop for S3Replica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An S3 object written as it is encoded: held in memory up to the multipart threshold (one
/// PUT), else sent in parts as they fill, so memory stays at about one part.
struct S3Upload<'a> {
    replica: &'a S3Replica,
    key: ObjectPath,
    level: u32,
    header: Header,
    attributes: Attributes,
    buffer: Vec<u8>,
    multipart: Option<Box<dyn object_store::MultipartUpload>>,
    size: usize,
    failed: Option<String>,
}

impl S3Upload<'_> {
    fn send_parts(&mut self, all: bool) -> Result<(), object_store::Error> {
        let part_size = self.replica.part_size;
        if self.multipart.is_none() {
            let options = PutMultipartOptions {
                attributes: std::mem::take(&mut self.attributes),
                ..PutMultipartOptions::default()
            };
            let upload = self
                .replica
                .block_on(self.replica.client.put_multipart_opts(&self.key, options))?;
            self.multipart = Some(upload);
        }
        while self.buffer.len() >= part_size || (all && !self.buffer.is_empty()) {
            let take = self.buffer.len().min(part_size);
            let rest = self.buffer.split_off(take);
            let part = std::mem::replace(&mut self.buffer, rest);
            if let Some(upload) = &mut self.multipart {
                let sending = upload.put_part(PutPayload::from(part));
                self.replica.block_on(sending)?;
            }
        }
        Ok(())
    }
}

impl Write for S3Upload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(why.clone()));
        }
        self.buffer.extend_from_slice(buf);
        self.size += buf.len();
        if self.buffer.len() > self.replica.multipart_threshold || self.multipart.is_some() {
            if let Err(err) = self.send_parts(false) {
                let why = format!(
                    "uploading {}: {err}",
                    self.replica.describe(self.key.as_ref())
                );
                self.failed = Some(why.clone());
                return Err(std::io::Error::other(why));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload<'_> {
    fn finish(mut self: Box<Self>) -> Result<LtxFile, ReplicaError> {
        let context = format!("uploading {}", self.replica.describe(self.key.as_ref()));
        if let Some(why) = self.failed.take() {
            self.abort();
            return Err(ReplicaError::Url(why));
        }
        let result = if self.multipart.is_some() {
            self.send_parts(true)
                .and_then(|()| match &mut self.multipart {
                    Some(upload) => self.replica.block_on(upload.complete()).map(|_| ()),
                    None => Ok(()),
                })
        } else {
            let options = PutOptions {
                attributes: std::mem::take(&mut self.attributes),
                ..PutOptions::default()
            };
            let payload = PutPayload::from(std::mem::take(&mut self.buffer));
            self.replica
                .block_on(self.replica.client.put_opts(&self.key, payload, options))
                .map(|_| ())
        };
        match result {
            Ok(()) => Ok(written(
                self.level,
                &self.header,
                self.key.to_string(),
                self.size,
            )),
            Err(err) => {
                self.abort();
                Err(store(context)(err))
            }
        }
    }

    fn abort(mut self: Box<Self>) {
        // Parts of an unfinished upload are kept (and billed) until aborted.
        if let Some(mut upload) = self.multipart.take() {
            let _ = self.replica.block_on(upload.abort());
        }
    }
}

impl Replica for S3Replica {
    fn list(&self) -> Result<Vec<LtxFile>, ReplicaError> {
        let prefix = self.prefix();
        let skip = prefix.as_ref().map_or(0, |p| p.parts().count());
        let metas: Vec<object_store::ObjectMeta> = self
            .block_on(async {
                let mut out = Vec::new();
                let mut stream = self.client.list(prefix.as_ref());
                while let Some(meta) = stream.next().await {
                    out.push(meta?);
                }
                Ok::<_, object_store::Error>(out)
            })
            .map_err(store(format!(
                "listing s3://{}/{}",
                self.target.bucket, self.target.path
            )))?;
        let mut files = Vec::new();
        for meta in metas {
            let parts: Vec<String> = meta
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_owned())
                .collect();
            let [level, name] = parts.as_slice() else {
                continue;
            };
            let (4, Ok(level), Some((min, max))) = (
                level.len(),
                u32::from_str_radix(level, 16),
                parse_name(name),
            ) else {
                continue;
            };
            files.push(LtxFile {
                level,
                min_txid: min,
                max_txid: max,
                key: meta.location.to_string(),
                size: meta.size,
                written: meta.last_modified.into(),
            });
        }
        Ok(files)
    }

    fn read(&self, file: &LtxFile) -> Result<Vec<u8>, ReplicaError> {
        let key = object_key(&file.key);
        let bytes = self
            .block_on(async { self.client.get(&key).await?.bytes().await })
            .map_err(store(format!("reading {}", self.describe(&file.key))))?;
        Ok(bytes.to_vec())
    }

    fn read_into(&self, file: &LtxFile, out: &mut dyn Write) -> Result<u64, ReplicaError> {
        let key = object_key(&file.key);
        let context = format!("reading {}", self.describe(&file.key));
        self.block_on(async {
            let mut stream = self
                .client
                .get(&key)
                .await
                .map_err(store(context.clone()))?
                .into_stream();
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(store(context.clone()))?;
                out.write_all(&chunk).map_err(io(context.clone()))?;
                total += chunk.len() as u64;
            }
            Ok(total)
        })
    }

    fn create(&self, level: u32, header: &Header) -> Result<Box<dyn Upload + '_>, ReplicaError> {
        let key = self.key(level, &file_name(header));
        let stamp = chrono::DateTime::<chrono::Utc>::from(header_time(header))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(TIMESTAMP_KEY.into()),
            AttributeValue::from(stamp),
        );
        Ok(Box::new(S3Upload {
            replica: self,
            key,
            level,
            header: *header,
            attributes,
            buffer: Vec::new(),
            multipart: None,
            size: 0,
            failed: None,
        }))
    }

    fn delete(&self, files: &[LtxFile]) -> Result<(), ReplicaError> {
        for file in files {
            let key = object_key(&file.key);
            match self.block_on(self.client.delete(&key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store(format!("deleting {}", self.describe(&file.key)))(e)),
            }
        }
        Ok(())
    }

    fn refine_times(&self, files: &mut [LtxFile]) -> Result<(), ReplicaError> {
        for file in files.iter_mut() {
            let key = object_key(&file.key);
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            let got = self
                .block_on(self.client.get_opts(&key, options))
                .map_err(store(format!("reading {}", self.describe(&file.key))))?;
            if let Some(stamp) = got
                .attributes
                .get(&Attribute::Metadata(TIMESTAMP_KEY.into()))
                .and_then(|v| chrono::DateTime::parse_from_rfc3339(v.as_ref()).ok())
            {
                file.written = stamp.into();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_directory_or_a_bucket_with_its_options() {
        assert_eq!(
            ReplicaTarget::parse_url("file:///var/lib/replica").expect("file"),
            ReplicaTarget::File(PathBuf::from("/var/lib/replica"))
        );
        let ReplicaTarget::S3(s3) = ReplicaTarget::parse_url(
            "s3://drops/prod/db?endpoint=http://127.0.0.1:9000&region=eu-west-1&forcePathStyle=true",
        )
        .expect("s3") else {
            panic!("not s3");
        };
        assert_eq!(s3.bucket, "drops");
        assert_eq!(s3.path, "prod/db");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert!(s3.force_path_style);
        for bad in ["/tmp/replica", "ftp://x/y", "s3:///path", "file://relative"] {
            let err = ReplicaTarget::parse_url(bad).expect_err(bad).to_string();
            assert!(err.contains("replica URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn names_are_two_sixteen_digit_hex_txids() {
        assert_eq!(
            parse_name("0000000000000001-00000000000000ff.ltx"),
            Some((1, 255))
        );
        assert_eq!(parse_name("1-2.ltx"), None);
        assert_eq!(parse_name("0000000000000001-0000000000000002.tmp"), None);
    }
}
