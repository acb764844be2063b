//! From the file's typed sections to one `ReplicationConfig`: the checks that span keys, the
//! warnings for keys nothing read, and the path of the key behind every refusal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::file::{Db, File, Replica, Section, NO_DB, ONE_REPLICA};
use super::values::{Deferred, Flag, Mapping, Text};
use super::{ConfigError, ReplicationConfig};
use crate::replicate::replica::{ReplicaTarget, S3Target};

pub(super) struct Reader<'a> {
    pub origin: &'a str,
    pub warnings: Vec<String>,
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// `at` followed by the path `serde_ignored` gives, in the file's own spelling.
fn ignored_key(at: &str, path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => at.to_owned(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_key(at, parent)),
        Path::Map { parent, key } => join(&ignored_key(at, parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_key(at, parent),
    }
}

/// `at` followed by the path `serde_path_to_error` gives, in the same spelling.
fn failed_key(at: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut key = at.to_owned();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(key, "[{index}]");
            }
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                key = join(&key, name);
            }
            Segment::Unknown => key = join(&key, "?"),
        }
    }
    if key.is_empty() {
        "(top level)".to_owned()
    } else {
        key
    }
}

impl Reader<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Reads the mapping `value`, found at `at`, into `T`; warns about the keys it left unread.
    fn section<T: Section>(&mut self, value: Value, at: &str) -> Result<T, ConfigError> {
        let origin = self.origin;
        let mut warnings = Vec::new();
        let mut note = |path: serde_ignored::Path<'_>| {
            let full = ignored_key(at, &path);
            let known = match &path {
                serde_ignored::Path::Map { parent, key } => {
                    T::litestream_only(parent).contains(&key.as_str())
                }
                _ => false,
            };
            warnings.push(if known {
                format!("{origin}: {full} is a Litestream key dropd ignores")
            } else {
                format!("{origin}: unknown key {full} (ignored)")
            });
        };
        let ignored = serde_ignored::Deserializer::new(value, &mut note);
        match serde_path_to_error::deserialize(ignored) {
            Ok(Mapping(section)) => {
                self.warnings.append(&mut warnings);
                Ok(section)
            }
            Err(e) => Err(self.invalid(&failed_key(at, e.path()), e.into_inner().to_string())),
        }
    }

    pub(super) fn root(
        &mut self,
        root: Value,
        db: Option<&Path>,
    ) -> Result<ReplicationConfig, ConfigError> {
        let top: File = self.section(root, "")?;
        let mut dbs = top.dbs;
        if dbs.is_empty() {
            return Err(self.invalid("dbs", NO_DB));
        }
        let index = self.pick_db(&dbs, db)?;
        let at = format!("dbs[{index}]");
        let entry: Db = self.section(dbs.swap_remove(index), &at)?;
        let (replica, replica_at) = match (entry.replica, entry.replicas) {
            (Some(replica), None) => (replica, format!("{at}.replica")),
            (None, Some(Value::Array(mut list))) if list.len() == 1 => {
                (list.swap_remove(0), format!("{at}.replicas[0]"))
            }
            (None, Some(_)) => return Err(self.invalid(&format!("{at}.replicas"), ONE_REPLICA)),
            (Some(_), Some(_)) => {
                return Err(self.invalid(&at, "give either replica or replicas, not both"))
            }
            (None, None) => return Err(self.invalid(&format!("{at}.replica"), "is missing")),
        };
        let replica: Replica = self.section(replica, &replica_at)?;
        let sync_interval = replica.sync_interval.as_ref().map(|p| p.0);
        let mut config = ReplicationConfig::for_target(self.target(replica, &replica_at)?);
        config.db_path = entry.path.map(|p| PathBuf::from(p.0));
        if let Some(interval) = sync_interval {
            config.sync_interval = interval;
        }
        if let Some(snapshot) = top.snapshot {
            if let Some(interval) = snapshot.interval {
                config.snapshot_interval = interval.0;
            }
            if let Some(retention) = snapshot.retention {
                config.snapshot_retention = retention.0;
            }
        }
        if let Some(levels) = top.levels {
            config.levels = Vec::with_capacity(levels.len());
            for (i, level) in levels.into_iter().enumerate() {
                let key = format!("levels[{i}].interval");
                let interval = level
                    .interval
                    .ok_or_else(|| self.invalid(&key, "is missing"))?
                    .0;
                if config.levels.last().is_some_and(|prev| *prev > interval) {
                    return Err(self.invalid(&key, "must not be shorter than the level below it"));
                }
                config.levels.push(interval);
            }
        }
        if let Some(retention) = top.l0_retention {
            config.l0_retention = retention.0;
        }
        if let Some(enabled) = top.retention.and_then(|r| r.enabled) {
            config.retention_enabled = enabled.0;
        }
        if let Some(ours) = top.dropd {
            if let Some(size) = ours.checkpoint_wal_size {
                config.checkpoint_wal_size = size.0;
            }
            if let Some(size) = ours.max_wal_size {
                config.max_wal_size = size.0;
            }
            if config.max_wal_size <= config.checkpoint_wal_size {
                return Err(self.invalid(
                    "dropd.max-wal-size",
                    "must be larger than dropd.checkpoint-wal-size",
                ));
            }
        }
        Ok(config)
    }

    /// The entry of `dbs` whose path is `db`; the only one needs no name.
    fn pick_db(&self, dbs: &[Value], db: Option<&Path>) -> Result<usize, ConfigError> {
        if dbs.len() == 1 {
            return Ok(0);
        }
        let wanted = db.ok_or_else(|| {
            self.invalid("dbs", "lists several databases: name the one dropd serves")
        })?;
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let wanted = canonical(wanted);
        dbs.iter()
            .position(|entry| {
                entry
                    .get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| canonical(Path::new(p)) == wanted)
            })
            .ok_or_else(|| {
                self.invalid(
                    "dbs",
                    format!("has no entry whose path is {}", wanted.display()),
                )
            })
    }

    /// A deferred value of the replica at `at`, read now that it applies.
    fn checked<T: DeserializeOwned>(
        &self,
        value: Option<Deferred<T>>,
        at: &str,
        key: &str,
    ) -> Result<Option<T>, ConfigError> {
        value
            .map(|value| value.check())
            .transpose()
            .map_err(|message| self.invalid(&join(at, key), message))
    }

    fn target(&self, replica: Replica, at: &str) -> Result<ReplicaTarget, ConfigError> {
        let url = replica.url.map(|t| t.0);
        let kind = replica.kind.map(|t| t.0);
        let mut target = match (&url, kind.as_deref()) {
            (Some(url), _) => ReplicaTarget::parse_url(url)
                .map_err(|e| self.invalid(&join(at, "url"), e.to_string()))?,
            (None, Some("file")) => {
                let Text(path) = self
                    .checked(replica.path, at, "path")?
                    .ok_or_else(|| self.invalid(&join(at, "path"), "is missing"))?;
                ReplicaTarget::File(PathBuf::from(path))
            }
            (None, Some("s3")) => {
                let Text(bucket) = self
                    .checked(replica.bucket, at, "bucket")?
                    .ok_or_else(|| self.invalid(&join(at, "bucket"), "is missing"))?;
                let path = self.checked(replica.path, at, "path")?.map(|t| t.0);
                ReplicaTarget::S3(S3Target {
                    bucket,
                    path: path.unwrap_or_default().trim_matches('/').to_owned(),
                    ..S3Target::default()
                })
            }
            (None, Some(other)) => {
                return Err(self.invalid(
                    &join(at, "type"),
                    format!("{other:?} is not supported: use file or s3"),
                ))
            }
            (None, None) => {
                return Err(self.invalid(at, "needs a url, or a type with its path or bucket"))
            }
        };
        if let (Some(url_kind), Some(kind)) = (&url, &kind) {
            let scheme = url_kind.split("://").next().unwrap_or_default();
            if scheme != kind {
                return Err(self.invalid(
                    &join(at, "type"),
                    format!("is {kind:?} but the url is {scheme}://"),
                ));
            }
        }
        if let ReplicaTarget::S3(s3) = &mut target {
            if let Some(Text(endpoint)) = self.checked(replica.endpoint, at, "endpoint")? {
                s3.endpoint = Some(endpoint);
            }
            if let Some(Text(region)) = self.checked(replica.region, at, "region")? {
                s3.region = Some(region);
            }
            if let Some(Flag(style)) =
                self.checked(replica.force_path_style, at, "force-path-style")?
            {
                s3.force_path_style = style;
            }
            let given = |text: Option<Text>| text.map(|t| t.0).filter(|s| !s.is_empty());
            s3.access_key_id = given(self.checked(replica.access_key_id, at, "access-key-id")?);
            s3.secret_access_key =
                given(self.checked(replica.secret_access_key, at, "secret-access-key")?);
        }
        Ok(target)
    }
}
