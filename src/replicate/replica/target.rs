//! Where a replica is, as `--replica URL` or litestream.yml name it: a directory or an S3
//! bucket and prefix, with the options and credentials to reach it.

use std::fmt;
use std::path::PathBuf;

use super::ReplicaError;

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
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
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
}
