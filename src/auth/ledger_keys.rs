//! The server's ledger signing keys: `<data-dir>/ledger-keys` (created mode 0600 on first
//! start), or the systemd credential `ledger-keys`. One Ed25519 seed per line, in hex; the first
//! signs, every one is listed at `GET /v1/keys`, so receipts and heads signed before a rotation
//! still verify. `dropd ledger-key rotate` puts a new key first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::ledger::LedgerKey;

pub const FILE: &str = "ledger-keys";

/// A key as `GET /v1/keys` lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    pub id: String,
    /// Always `Ed25519`.
    pub algorithm: &'static str,
    /// The 32-byte public key, hex.
    pub public_key: String,
    /// The key signing new heads now (older ones stay listed).
    pub active: bool,
}

pub struct LedgerKeys {
    pub signer: Arc<LedgerKey>,
    pub public: Vec<PublicKey>,
}

fn parse(text: &str, from: &Path) -> Result<LedgerKeys, String> {
    let keys: Vec<LedgerKey> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            hex::decode(line)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(LedgerKey::from_seed)
                .ok_or_else(|| {
                    format!(
                        "{}: each line must be a 32-byte Ed25519 seed in hex (64 digits)",
                        from.display()
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let public = keys
        .iter()
        .enumerate()
        .map(|(i, k)| PublicKey {
            id: k.id().to_owned(),
            algorithm: "Ed25519",
            public_key: k.public_hex(),
            active: i == 0,
        })
        .collect();
    let signer = keys
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} holds no key", from.display()))?;
    Ok(LedgerKeys {
        signer: Arc::new(signer),
        public,
    })
}

fn new_seed_line() -> String {
    format!("{}\n", hex::encode(rand::random::<[u8; 32]>()))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The credential, if systemd passed one; else the data directory's file.
fn location(data_dir: &Path) -> PathBuf {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|dir| PathBuf::from(dir).join(FILE))
        .filter(|p| p.exists())
        .unwrap_or_else(|| data_dir.join(FILE))
}

/// The keys, creating a first one in the data directory if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<LedgerKeys, String> {
    let path = location(data_dir);
    if !path.exists() {
        write_private(&path, &new_seed_line())?;
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&text, &path)
}

/// Puts a new key first (it signs from the next start on); returns its id.
pub fn rotate(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join(FILE);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let text = new_seed_line() + &old;
    let keys = parse(&text, &path)?;
    write_private(&path, &text)?;
    Ok(keys.signer.id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_old_key_listed_and_signs_with_the_new() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create(dir.path()).expect("created");
        let mode = std::fs::metadata(dir.path().join(FILE))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("metadata");
        assert_eq!(mode, 0o600);
        let again = load_or_create(dir.path()).expect("loaded");
        assert_eq!(
            again.signer.id(),
            first.signer.id(),
            "the same key after a restart"
        );
        let new = rotate(dir.path()).expect("rotated");
        let after = load_or_create(dir.path()).expect("loaded");
        assert_eq!(after.signer.id(), new);
        assert_eq!(after.public.len(), 2);
        assert!(after
            .public
            .iter()
            .any(|k| k.id == first.signer.id() && !k.active));
    }
}
