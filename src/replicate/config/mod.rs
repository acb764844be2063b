//! Replication settings, from `--replica URL` or from a Litestream-format `litestream.yml`, so
//! one file configures both dropd and the real `litestream`.
//!
//! Litestream ignores keys it does not know; dropd warns about them instead (a typo in a
//! retention key should not pass silently), and refuses values it cannot use, naming the key.
//!
//! `file` holds the file's shape as serde structs, `values` how each kind of value is read, and
//! `reader` turns the sections into one `ReplicationConfig`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::replica::ReplicaTarget;

mod file;
mod reader;
mod values;

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
        let mut reader = reader::Reader {
            origin,
            warnings: Vec::new(),
        };
        let config = reader.root(root, db)?;
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
    #[test]
    fn every_unread_key_warns_with_its_full_path() {
        let (_, mut warnings) = parse(
            r#"
addr: ":9090"
logging: {level: debug}
bogus: 1
dbs:
  - path: a.db
    meta-path: /x
    extra: {deep: 1}
    replicas:
      - url: file:///tmp/r
        part-size: 5MB
        nope: 1
snapshot: {interval: 1h, every: 2h}
levels:
  - {interval: 10s, what: 1}
retention: {enabled: true, check: 1}
dropd: {max-wal-size: 2GB, min-wal-size: 1}
"#,
        )
        .expect("valid");
        warnings.sort();
        let mut expected = [
            "addr is a Litestream key dropd ignores",
            "logging is a Litestream key dropd ignores",
            "unknown key bogus (ignored)",
            "dbs[0].meta-path is a Litestream key dropd ignores",
            "unknown key dbs[0].extra (ignored)",
            "dbs[0].replicas[0].part-size is a Litestream key dropd ignores",
            "unknown key dbs[0].replicas[0].nope (ignored)",
            "unknown key snapshot.every (ignored)",
            "unknown key levels[0].what (ignored)",
            "unknown key retention.check (ignored)",
            "unknown key dropd.min-wal-size (ignored)",
        ]
        .map(|w| format!("litestream.yml: {w}"));
        expected.sort();
        assert_eq!(warnings, expected);
    }

    #[test]
    fn only_the_served_entry_of_dbs_is_read() {
        let text = "dbs:\n  - path: /nonexistent/other.db\n    odd: 1\n    replicas: [{url: 'file:///a'}, {url: 'file:///b'}]\n  - path: /nonexistent/served.db\n    replica: {url: 'file:///r'}\n";
        let (config, warnings) = ReplicationConfig::parse(
            text,
            "litestream.yml",
            Some(Path::new("/nonexistent/served.db")),
            &env,
        )
        .expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.target, ReplicaTarget::File(PathBuf::from("/r")));
        let err = parse(text).expect_err("two dbs, none named").to_string();
        assert!(err.contains("lists several databases"), "{err}");
    }

    #[test]
    fn loose_values_are_read_as_litestream_reads_them() {
        let (config, _) = parse(
            "dbs:\n  - path: 7\n    replica: {type: s3, bucket: 42, path: /p/, region: 1, force-path-style: 'yes', secret-access-key: ''}\nretention: {enabled: 'no'}\ndropd: {checkpoint-wal-size: 1000, max-wal-size: 1MiB}\n",
        )
        .expect("valid");
        assert_eq!(config.db_path, Some(PathBuf::from("7")));
        let ReplicaTarget::S3(s3) = &config.target else {
            panic!("not s3")
        };
        assert_eq!((s3.bucket.as_str(), s3.path.as_str()), ("42", "p"));
        assert_eq!(s3.region.as_deref(), Some("1"));
        assert!(s3.force_path_style);
        assert_eq!(s3.secret_access_key, None);
        assert!(!config.retention_enabled);
        assert_eq!(
            (config.checkpoint_wal_size, config.max_wal_size),
            (1000, 1 << 20)
        );
    }

    #[test]
    fn a_wrong_value_or_shape_is_refused_naming_its_key() {
        let db = "dbs:\n  - path: a.db\n    replica: {url: 'file:///r'}\n";
        let cases = [
            ("[1, 2]\n".to_owned(), "(top level): must be a mapping of keys to values"),
            ("dbs: 5\n".to_owned(), "dbs: must list the database to replicate"),
            ("dbs: [5]\n".to_owned(), "dbs[0]: must be a mapping of keys to values"),
            ("dbs:\n  - path: a.db\n    replica: [1]\n".to_owned(), "dbs[0].replica: must be a mapping of keys to values"),
            ("dbs:\n  - path: a.db\n    replicas: [{url: 'file:///a'}, {url: 'file:///b'}]\n".to_owned(), "dbs[0].replicas: dropd ships to exactly one replica: give one `replica:`"),
            ("dbs:\n  - path: a.db\n    replicas: [5]\n".to_owned(), "dbs[0].replicas[0]: must be a mapping of keys to values"),
            ("dbs:\n  - path: a.db\n    replica: {url: 'file:///a'}\n    replicas: [{url: 'file:///b'}]\n".to_owned(), "dbs[0]: give either replica or replicas, not both"),
            ("dbs:\n  - path: a.db\n    replica: {url: true}\n".to_owned(), "dbs[0].replica.url: must be a string"),
            ("dbs:\n  - path: a.db\n    replica: {url: 's3://b/p', force-path-style: 1}\n".to_owned(), "dbs[0].replica.force-path-style: must be true or false"),
            (format!("{db}snapshot: ~\n"), "snapshot: must be a mapping of keys to values"),
            (format!("{db}snapshot: {{retention: 2}}\n"), "snapshot.retention: \"2\" is not a duration (like 1s, 500ms, 1h30m)"),
            (format!("{db}levels: {{interval: 1s}}\n"), "levels: must be a list of {interval: ...}"),
            (format!("{db}levels: [{{}}]\n"), "levels[0].interval: is missing"),
            (format!("{db}levels: [{}]\n", ["{interval: 1s}"; 9].join(", ")), "levels: at most 8 levels (1..8; 9 holds snapshots)"),
            (format!("{db}l0-retention: 0s\n"), "l0-retention: must be longer than zero"),
            (format!("{db}dropd: {{max-wal-size: -1}}\n"), "dropd.max-wal-size: must be a size such as 64MB"),
            (format!("{db}dropd: {{checkpoint-wal-size: lots}}\n"), "dropd.checkpoint-wal-size: \"lots\" is not a size such as 64MB"),
            (format!("{db}dropd: {{max-wal-size: 1MB}}\n"), "dropd.max-wal-size: must be larger than dropd.checkpoint-wal-size"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected).to_string();
            assert_eq!(err, format!("litestream.yml: {expected}"), "{text}");
        }
    }
}
