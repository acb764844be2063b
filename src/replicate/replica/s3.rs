//! An S3 replica, laid out as Litestream's S3 backend, through object_store on a runtime of its
//! own (never an actix worker).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

use super::{
    file_name, header_time, io, parse_name, store, written, LtxFile, Replica, ReplicaError,
    S3Target, Upload,
};
use crate::replicate::ltx::Header;

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

    fn lease_key(&self) -> ObjectPath {
        match self.prefix() {
            Some(prefix) => ObjectPath::from(format!("{prefix}/{}", super::LEASE_NAME)),
            None => ObjectPath::from(super::LEASE_NAME),
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

    fn read_lease(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        let key = self.lease_key();
        let context = format!("reading {}", self.describe(key.as_ref()));
        self.block_on(async {
            let got = match self.client.get(&key).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(store(context.clone())(e)),
            };
            let version = got.meta.e_tag.clone().ok_or_else(|| {
                ReplicaError::Url(format!(
                    "{context}: the store gave no ETag, so it cannot hold a lease"
                ))
            })?;
            let bytes = got.bytes().await.map_err(store(context.clone()))?;
            Ok(Some((bytes.to_vec(), version)))
        })
    }

    fn write_lease(
        &self,
        bytes: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError> {
        let key = self.lease_key();
        let context = format!("writing {}", self.describe(key.as_ref()));
        // If-None-Match: * to create, If-Match: <etag> to replace.
        let mode = match expected {
            None => object_store::PutMode::Create,
            Some(etag) => object_store::PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(etag.to_owned()),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let put = self.block_on(self.client.put_opts(&key, PutPayload::from(bytes), options));
        match put {
            Ok(done) => done.e_tag.map(Some).ok_or_else(|| {
                ReplicaError::Url(format!(
                    "{context}: the store gave no ETag, so it cannot hold a lease"
                ))
            }),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(store(context)(e)),
        }
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
