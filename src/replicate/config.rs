//! Replication settings, from `--replica URL` or from a Litestream-format `litestream.yml`, so
//! one file configures both dropd and the real `litestream`.
//!
//! Litestream ignores keys it does not know; dropd warns about them instead (a typo in a
//! retention key should not pass silently), and refuses values it cannot use, naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::replica::{parse_bool, ReplicaTarget, S3Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    pub target: ReplicaTarget,
    /// `dbs[].path` when read from a file.
    pub db_path: Option<PathBuf>,
    pub sync_interval: Duration,
    /// Compaction intervals of levels 1..n.
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    pub l0_retention: Duration,
    pub retention_enabled: bool,
    /// dropd only: the WAL size at which the writer waits briefly for the shipper so that it
    /// can truncate the WAL.
    pub checkpoint_wal_size: u64,
    /// dropd only: the WAL size at which, with the replica unreachable, the writer checkpoints
    /// anyway and the shipper sends the whole database once the replica is back.
    pub max_wal_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

impl ReplicationConfig {
    pub fn for_target(target: ReplicaTarget) -> Self {
        Self {
            target,
            db_path: None,
            sync_interval: Duration::from_secs(1),
            levels: vec![
                Duration::from_secs(30),
                Duration::from_secs(5 * 60),
                Duration::from_secs(60 * 60),
            ],
            snapshot_interval: Duration::from_secs(24 * 60 * 60),
            snapshot_retention: Duration::from_secs(24 * 60 * 60),
            l0_retention: Duration::from_secs(5 * 60),
            retention_enabled: true,
            checkpoint_wal_size: 16 << 20,
            max_wal_size: 1 << 30,
        }
    }

    /// Reads `path`; `db` picks the entry of `dbs` when there are several. Returns the config
    /// and warnings for keys dropd does not use.
    pub fn load(path: &Path, db: Option<&Path>) -> Result<(Self, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), db, &|name| {
            std::env::var(name).ok()
        })
    }

    pub fn parse(
        text: &str,
        origin: &str,
        db: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let expanded = expand_env(text, env);
        let root: Value = serde_saphyr::from_str(&expanded).map_err(|e| ConfigError::Yaml {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut reader = Reader {
            origin,
            warnings: Vec::new(),
        };
        let config = reader.root(&root, db)?;
        Ok((config, reader.warnings))
    }
}

/// Go's `os.ExpandEnv`, as Litestream applies it to the whole file: `$VAR` and `${VAR}`,
/// unset variables become empty.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, skip) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                // Go eats an unclosed "${".
                None => {
                    rest = braced;
                    continue;
                }
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&env(name).unwrap_or_default());
            rest = &after[skip..];
        }
    }
    out.push_str(rest);
    out
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

struct Reader<'a> {
    origin: &'a str,
    warnings: Vec<String>,
}

/// Keys Litestream knows that dropd reads no meaning from (it owns checkpoints, serves no
/// metrics port of Litestream's, and so on).
const IGNORED_TOP: &[&str] = &[
    "addr",
    "logging",
    "exec",
    "mcp-addr",
    "access-key-id",
    "secret-access-key",
    "validation",
];
const IGNORED_DB: &[&str] = &[
    "meta-path",
    "monitor-interval",
    "checkpoint-interval",
    "min-checkpoint-page-count",
    "max-checkpoint-page-count",
    "truncate-page-n",
    "busy-timeout",
];
const IGNORED_REPLICA: &[&str] = &[
    "name",
    "retention",
    "retention-check-interval",
    "snapshot-interval",
    "validation-interval",
    "skip-verify",
    "part-size",
    "concurrency",
    "sse-customer-key",
    "sse-customer-algorithm",
    "sse-kms-key-id",
];

impl Reader<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn object<'v>(
        &self,
        value: &'v Value,
        key: &str,
    ) -> Result<&'v Map<String, Value>, ConfigError> {
        value
            .as_object()
            .ok_or_else(|| self.invalid(key, "must be a mapping of keys to values"))
    }

    fn check_keys(&mut self, map: &Map<String, Value>, at: &str, known: &[&str], ignored: &[&str]) {
        for key in map.keys() {
            let full = if at.is_empty() {
                key.clone()
            } else {
                join(at, key)
            };
            if ignored.contains(&key.as_str()) {
                self.warnings.push(format!(
                    "{}: {full} is a Litestream key dropd ignores",
                    self.origin
                ));
            } else if !known.contains(&key.as_str()) {
                self.warnings
                    .push(format!("{}: unknown key {full} (ignored)", self.origin));
            }
        }
    }

    fn string(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.invalid(&join(at, key), "must be a string")),
        }
    }

    fn duration(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        let full = format!("{at}{}{key}", if at.is_empty() { "" } else { "." });
        let Some(text) = self.string(map, at, key)? else {
            return Ok(None);
        };
        let parsed = humantime::parse_duration(&text).map_err(|_| {
            self.invalid(
                &full,
                format!("{text:?} is not a duration (like 1s, 500ms, 1h30m)"),
            )
        })?;
        if parsed.is_zero() {
            return Err(self.invalid(&full, "must be longer than zero"));
        }
        Ok(Some(parsed))
    }

    fn boolean(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<bool>, ConfigError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => parse_bool(s)
                .map(Some)
                .ok_or_else(|| self.invalid(&join(at, key), "must be true or false")),
            Some(_) => Err(self.invalid(&join(at, key), "must be true or false")),
        }
    }

    fn size(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<u64>, ConfigError> {
        let full = join(at, key);
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| self.invalid(&full, "must be a size such as 64MB")),
            Some(Value::String(s)) => match s.parse::<bytesize::ByteSize>() {
                Ok(size) if size.as_u64() > 0 => Ok(Some(size.as_u64())),
                _ => Err(self.invalid(&full, format!("{s:?} is not a size such as 64MB"))),
            },
            Some(_) => Err(self.invalid(&full, "must be a size such as 64MB")),
        }
    }

    fn root(&mut self, root: &Value, db: Option<&Path>) -> Result<ReplicationConfig, ConfigError> {
        let top = self.object(root, "(top level)")?;
        self.check_keys(
            top,
            "",
            &[
                "dbs",
                "snapshot",
                "levels",
                "l0-retention",
                "retention",
                "dropd",
            ],
            IGNORED_TOP,
        );
        let dbs = match top.get("dbs") {
            Some(Value::Array(dbs)) if !dbs.is_empty() => dbs,
            _ => return Err(self.invalid("dbs", "must list the database to replicate")),
        };
        let index = self.pick_db(dbs, db)?;
        let at = format!("dbs[{index}]");
        let entry = self.object(&dbs[index], &at)?;
        self.check_keys(entry, &at, &["path", "replica", "replicas"], IGNORED_DB);
        let db_path = self.string(entry, &at, "path")?.map(PathBuf::from);
        let (replica, replica_at) = match (entry.get("replica"), entry.get("replicas")) {
            (Some(replica), None) => (replica, format!("{at}.replica")),
            (None, Some(Value::Array(list))) if list.len() == 1 => {
                (&list[0], format!("{at}.replicas[0]"))
            }
            (None, Some(_)) => {
                return Err(self.invalid(
                    &format!("{at}.replicas"),
                    "dropd ships to exactly one replica: give one `replica:`",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid(&at, "give either replica or replicas, not both"))
            }
            (None, None) => return Err(self.invalid(&format!("{at}.replica"), "is missing")),
        };
        let replica = self.object(replica, &replica_at)?;
        self.check_keys(
            replica,
            &replica_at,
            &[
                "type",
                "url",
                "path",
                "bucket",
                "endpoint",
                "region",
                "force-path-style",
                "access-key-id",
                "secret-access-key",
                "sync-interval",
            ],
            IGNORED_REPLICA,
        );
        let target = self.target(replica, &replica_at)?;
        let mut config = ReplicationConfig::for_target(target);
        config.db_path = db_path;
        if let Some(interval) = self.duration(replica, &replica_at, "sync-interval")? {
            config.sync_interval = interval;
        }
        if let Some(snapshot) = top.get("snapshot") {
            let snapshot = self.object(snapshot, "snapshot")?;
            self.check_keys(snapshot, "snapshot", &["interval", "retention"], &[]);
            if let Some(interval) = self.duration(snapshot, "snapshot", "interval")? {
                config.snapshot_interval = interval;
            }
            if let Some(retention) = self.duration(snapshot, "snapshot", "retention")? {
                config.snapshot_retention = retention;
            }
        }
        if let Some(levels) = top.get("levels") {
            let Value::Array(levels) = levels else {
                return Err(self.invalid("levels", "must be a list of {interval: ...}"));
            };
            if levels.len() > 8 {
                return Err(self.invalid("levels", "at most 8 levels (1..8; 9 holds snapshots)"));
            }
            config.levels = Vec::with_capacity(levels.len());
            for (i, level) in levels.iter().enumerate() {
                let at = format!("levels[{i}]");
                let level = self.object(level, &at)?;
                self.check_keys(level, &at, &["interval"], &[]);
                let interval = self
                    .duration(level, &at, "interval")?
                    .ok_or_else(|| self.invalid(&format!("{at}.interval"), "is missing"))?;
                if config.levels.last().is_some_and(|prev| *prev > interval) {
                    return Err(self.invalid(
                        &format!("{at}.interval"),
                        "must not be shorter than the level below it",
                    ));
                }
                config.levels.push(interval);
            }
        }
        if let Some(retention) = self.duration(top, "", "l0-retention")? {
            config.l0_retention = retention;
        }
        if let Some(retention) = top.get("retention") {
            let retention = self.object(retention, "retention")?;
            self.check_keys(retention, "retention", &["enabled"], &[]);
            if let Some(enabled) = self.boolean(retention, "retention", "enabled")? {
                config.retention_enabled = enabled;
            }
        }
        if let Some(ours) = top.get("dropd") {
            let ours = self.object(ours, "dropd")?;
            self.check_keys(ours, "dropd", &["checkpoint-wal-size", "max-wal-size"], &[]);
            if let Some(size) = self.size(ours, "dropd", "checkpoint-wal-size")? {
                config.checkpoint_wal_size = size;
            }
            if let Some(size) = self.size(ours, "dropd", "max-wal-size")? {
                config.max_wal_size = size;
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

    fn target(&self, replica: &Map<String, Value>, at: &str) -> Result<ReplicaTarget, ConfigError> {
        let url = self.string(replica, at, "url")?;
        let kind = self.string(replica, at, "type")?;
        let mut target = match (&url, kind.as_deref()) {
            (Some(url), _) => ReplicaTarget::parse_url(url)
                .map_err(|e| self.invalid(&format!("{at}.url"), e.to_string()))?,
            (None, Some("file")) => {
                let path = self
                    .string(replica, at, "path")?
                    .ok_or_else(|| self.invalid(&format!("{at}.path"), "is missing"))?;
                ReplicaTarget::File(PathBuf::from(path))
            }
            (None, Some("s3")) => ReplicaTarget::S3(S3Target {
                bucket: self
                    .string(replica, at, "bucket")?
                    .ok_or_else(|| self.invalid(&format!("{at}.bucket"), "is missing"))?,
                path: self
                    .string(replica, at, "path")?
                    .unwrap_or_default()
                    .trim_matches('/')
                    .to_owned(),
                ..S3Target::default()
            }),
            (None, Some(other)) => {
                return Err(self.invalid(
                    &format!("{at}.type"),
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
                    &format!("{at}.type"),
                    format!("is {kind:?} but the url is {scheme}://"),
                ));
            }
        }
        if let ReplicaTarget::S3(s3) = &mut target {
            if let Some(endpoint) = self.string(replica, at, "endpoint")? {
                s3.endpoint = Some(endpoint);
            }
            if let Some(region) = self.string(replica, at, "region")? {
                s3.region = Some(region);
            }
            if let Some(style) = self.boolean(replica, at, "force-path-style")? {
                s3.force_path_style = style;
            }
            s3.access_key_id = self
                .string(replica, at, "access-key-id")?
                .filter(|s| !s.is_empty());
            s3.secret_access_key = self
                .string(replica, at, "secret-access-key")?
                .filter(|s| !s.is_empty());
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BUCKET" => Some("drops".into()),
            "S3_KEY" => Some("AKIA123".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<(ReplicationConfig, Vec<String>), ConfigError> {
        ReplicationConfig::parse(text, "litestream.yml", None, &env)
    }

    #[test]
    fn a_litestream_file_gives_the_replica_levels_and_retention() {
        let (config, warnings) = parse(
            r#"
dbs:
  - path: /var/lib/dropd/dropd.db
    replica:
      type: s3
      bucket: $BUCKET
      path: prod/dropd
      endpoint: http://127.0.0.1:9000
      region: eu-west-1
      force-path-style: true
      access-key-id: ${S3_KEY}
      sync-interval: 500ms
snapshot:
  interval: 1h
  retention: 6h
levels:
  - interval: 10s
  - interval: 1m
l0-retention: 2m
retention:
  enabled: false
dropd:
  max-wal-size: 256MB
"#,
        )
        .expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        let ReplicaTarget::S3(s3) = &config.target else {
            panic!("not s3")
        };
        assert_eq!(s3.bucket, "drops");
        assert_eq!(s3.path, "prod/dropd");
        assert_eq!(s3.access_key_id.as_deref(), Some("AKIA123"));
        assert!(s3.force_path_style);
        assert_eq!(config.sync_interval, Duration::from_millis(500));
        assert_eq!(
            config.levels,
            vec![Duration::from_secs(10), Duration::from_secs(60)]
        );
        assert_eq!(config.snapshot_interval, Duration::from_secs(3600));
        assert_eq!(config.l0_retention, Duration::from_secs(120));
        assert!(!config.retention_enabled);
        assert_eq!(config.max_wal_size, 256_000_000);
        assert_eq!(
            config.db_path,
            Some(PathBuf::from("/var/lib/dropd/dropd.db"))
        );
    }

    #[test]
    fn unknown_keys_warn_and_invalid_values_name_their_key() {
        let (config, warnings) = parse(
            "dbs:\n  - path: a.db\n    replica:\n      url: file:///tmp/r\n      sync-intervl: 1s\nsnapshots: {}\n",
        )
        .expect("valid");
        assert_eq!(config.target, ReplicaTarget::File(PathBuf::from("/tmp/r")));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("dbs[0].replica.sync-intervl")));
        assert!(warnings.iter().any(|w| w.contains("unknown key snapshots")));

        let cases = [
            ("dbs:\n  - path: a.db\n    replica:\n      url: file:///r\n      sync-interval: soon\n", "dbs[0].replica.sync-interval"),
            ("dbs:\n  - path: a.db\n    replica:\n      type: gcs\n      bucket: b\n", "dbs[0].replica.type"),
            ("dbs:\n  - path: a.db\n", "dbs[0].replica"),
            ("dbs: []\n", "dbs"),
            ("dbs:\n  - path: a.db\n    replica: {url: 'file:///r'}\nlevels:\n  - interval: 5m\n  - interval: 30s\n", "levels[1].interval"),
            ("dbs:\n  - path: a.db\n    replica: {url: 'file:///r'}\nretention: {enabled: maybe}\n", "retention.enabled"),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn env_expansion_follows_go() {
        let expanded = expand_env("a $BUCKET ${S3_KEY} $MISSING $ $5 ${", &env);
        assert_eq!(expanded, "a drops AKIA123  $  ");
    }
}
