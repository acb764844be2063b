//! litestream.yml as dropd reads it: Litestream's keys for one database and its replica, the
//! top-level sections for compaction and retention, and dropd's own `dropd:` section.
//!
//! A key that none of these structs names is reported by `serde_ignored`; `Section` tells a key
//! Litestream reads (and dropd has no use for) from a typo.

use serde::{Deserialize, Deserializer};
use serde_ignored::Path;
use serde_json::Value;

use super::values::{list, Deferred, Flag, Mapping, Period, Size, Text};

/// A mapping read on its own, with the keys Litestream knows there and dropd reads nothing
/// from (it owns checkpoints, serves no metrics port of Litestream's, and so on).
pub(super) trait Section: for<'de> Deserialize<'de> {
    /// Those keys, for the mapping at `parent` below this section.
    fn litestream_only(parent: &Path<'_>) -> &'static [&'static str];
}

pub(super) const NO_DB: &str = "must list the database to replicate";
pub(super) const ONE_REPLICA: &str = "dropd ships to exactly one replica: give one `replica:`";

/// The whole file.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct File {
    /// Left unread but for the entry dropd serves: the others may use what Litestream has and
    /// dropd lacks (several replicas, say).
    #[serde(default, deserialize_with = "dbs")]
    pub dbs: Vec<Value>,
    #[serde(default, deserialize_with = "mapping")]
    pub snapshot: Option<Snapshot>,
    #[serde(default, deserialize_with = "levels")]
    pub levels: Option<Vec<Level>>,
    pub l0_retention: Option<Period>,
    #[serde(default, deserialize_with = "mapping")]
    pub retention: Option<Retention>,
    #[serde(default, deserialize_with = "mapping")]
    pub dropd: Option<Dropd>,
}

impl Section for File {
    fn litestream_only(parent: &Path<'_>) -> &'static [&'static str] {
        match parent {
            Path::Root => &[
                "addr",
                "logging",
                "exec",
                "mcp-addr",
                "access-key-id",
                "secret-access-key",
                "validation",
            ],
            _ => &[],
        }
    }
}

/// One entry of `dbs`.
#[derive(Deserialize)]
pub(super) struct Db {
    pub path: Option<Text>,
    /// `replica` and Litestream's list form `replicas` (accepted with one replica) are read
    /// once it is clear which one is given: that both are is the error to report then.
    #[serde(default, deserialize_with = "given")]
    pub replica: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    pub replicas: Option<Value>,
}

impl Section for Db {
    fn litestream_only(parent: &Path<'_>) -> &'static [&'static str] {
        match parent {
            Path::Root => &[
                "meta-path",
                "monitor-interval",
                "checkpoint-interval",
                "min-checkpoint-page-count",
                "max-checkpoint-page-count",
                "truncate-page-n",
                "busy-timeout",
            ],
            _ => &[],
        }
    }
}

/// `dbs[].replica`: a `url`, or a `type` with its `path` or `bucket`; the S3 settings are read
/// for an S3 replica only.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Replica {
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub url: Option<Text>,
    pub path: Option<Deferred<Text>>,
    pub bucket: Option<Deferred<Text>>,
    pub endpoint: Option<Deferred<Text>>,
    pub region: Option<Deferred<Text>>,
    pub force_path_style: Option<Deferred<Flag>>,
    pub access_key_id: Option<Deferred<Text>>,
    pub secret_access_key: Option<Deferred<Text>>,
    pub sync_interval: Option<Period>,
}

impl Section for Replica {
    fn litestream_only(parent: &Path<'_>) -> &'static [&'static str] {
        match parent {
            Path::Root => &[
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
            ],
            _ => &[],
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Snapshot {
    pub interval: Option<Period>,
    pub retention: Option<Period>,
}

/// One entry of `levels`, for levels 1 and up.
#[derive(Deserialize)]
pub(super) struct Level {
    pub interval: Option<Period>,
}

#[derive(Deserialize)]
pub(super) struct Retention {
    pub enabled: Option<Flag>,
}

/// dropd's own section, which Litestream ignores.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Dropd {
    pub checkpoint_wal_size: Option<Size>,
    pub max_wal_size: Option<Size>,
}

// `deserialize_with` functions: serde's `Option` would take null as "not given", where
// Litestream's files mean no such thing.

fn mapping<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Mapping::deserialize(d).map(|Mapping(section)| Some(section))
}

/// Any value, null included: a key given as null is still given.
fn given<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn dbs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    list(d, NO_DB, |_| None)
}

fn levels<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Level>>, D::Error> {
    let levels: Vec<Mapping<Level>> = list(d, "must be a list of {interval: ...}", |len| {
        (len > 8).then_some("at most 8 levels (1..8; 9 holds snapshots)")
    })?;
    Ok(Some(
        levels.into_iter().map(|Mapping(level)| level).collect(),
    ))
}
