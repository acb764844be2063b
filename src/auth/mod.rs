//! Who may call: buyer tokens (HS256 JWTs, `tokens`), verified once per token per worker
//! thread, and admin keys (random, stored as SHA-256).

pub mod admission;
pub mod ledger_keys;
mod tokens;

pub use tokens::{key_id, TokenError, TokenKeys, TokenPolicy};

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::BuyerId;

pub const SECRET_FILE: &str = "token-secret";
const ADMIN_KEY_PREFIX: &str = "dak_";
/// Service keys (scope `payments`): a payment service confirming holds into orders.
const SERVICE_KEY_PREFIX: &str = "dsk_";
/// The scopes a key may have.
pub const SCOPES: &[&str] = &["admin", "payments"];

/// Most verified tokens one thread remembers; past that it starts over.
const CACHED_TOKENS: usize = 65_536;

struct Verified {
    token: Box<str>,
    keys: u64,
    buyer: BuyerId,
    exp: u64,
}

thread_local! {
    /// Tokens this worker thread verified, by their exact bytes: a buyer's token is checked
    /// once, not on every request (an HMAC and a JSON parse each time). Expiry is checked on
    /// every hit.
    static VERIFIED: std::cell::RefCell<std::collections::HashMap<u64, Verified>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    static HASHER: std::hash::RandomState = std::hash::RandomState::new();
}

/// The cache slot of a token: a hash of its last 32 bytes (the signature's end, so distinct
/// tokens differ there), a fraction of the cost of hashing the whole token. A slot holds the
/// whole token and is trusted only if it is this one.
fn slot(token: &str) -> u64 {
    use std::hash::BuildHasher;
    let bytes = token.as_bytes();
    HASHER.with(|h| h.hash_one(&bytes[bytes.len().saturating_sub(32)..]))
}

impl TokenKeys {
    /// The buyer a token speaks for, or why it is not accepted.
    pub fn verify(&self, token: &str) -> Result<BuyerId, TokenError> {
        if token.len() > self.policy.max_len {
            return Err(TokenError::TooLong(self.policy.max_len));
        }
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.leeway();
        let slot = slot(token);
        let hit = VERIFIED.with(|cache| {
            cache
                .borrow()
                .get(&slot)
                .filter(|v| {
                    v.keys == self.id && &*v.token == token && now <= v.exp.saturating_add(leeway)
                })
                .map(|v| v.buyer.clone())
        });
        if let Some(buyer) = hit {
            return Ok(buyer);
        }
        let (buyer, exp) = self.verify_uncached(token)?;
        VERIFIED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= CACHED_TOKENS {
                cache.clear();
            }
            cache.insert(
                slot,
                Verified {
                    token: token.into(),
                    keys: self.id,
                    buyer: buyer.clone(),
                    exp,
                },
            );
        });
        Ok(buyer)
    }
}

/// Where the secrets come from: given (flags or env), or `<data-dir>/token-secret`, created
/// with mode 0600 on first use when `create` is set. The file holds one secret per line: the
/// first signs, every one verifies (rotation: add the new secret as the first line, restart,
/// remove the old line once its tokens have expired).
pub fn load_secrets(
    given: &[String],
    data_dir: &Path,
    create: bool,
) -> anyhow::Result<Vec<Vec<u8>>> {
    if !given.is_empty() {
        return Ok(given.iter().map(|s| s.as_bytes().to_vec()).collect());
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secrets: Vec<Vec<u8>> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.as_bytes().to_vec())
                .collect();
            if secrets.is_empty() {
                bail!("{} holds no secret", path.display());
            }
            return Ok(secrets);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no token secret at {}: start `dropd serve --data-dir {}` once to create it, \
             or pass --token-secret",
            path.display(),
            data_dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, secret.as_bytes())?;
    tracing::info!(path = %path.display(), "created a new buyer-token secret");
    Ok(vec![secret.into_bytes()])
}

/// Creates `path` with mode 0600 and `contents`, durably; fails if it exists.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// A new admin key and the hash to store. The key itself is shown once and never stored.
pub fn generate_admin_key() -> (String, [u8; 32]) {
    let key = format!(
        "{ADMIN_KEY_PREFIX}{}",
        hex::encode(rand::random::<[u8; 32]>())
    );
    let hash = hash_admin_key(&key);
    (key, hash)
}

/// A new service key of a scope and the hash to store.
pub fn generate_service_key() -> (String, [u8; 32]) {
    let key = format!(
        "{SERVICE_KEY_PREFIX}{}",
        hex::encode(rand::random::<[u8; 32]>())
    );
    let hash = hash_admin_key(&key);
    (key, hash)
}

/// `dsk_` and 64 lowercase hex digits.
pub fn looks_like_service_key(credential: &str) -> bool {
    looks_like_key(credential, SERVICE_KEY_PREFIX)
}

fn looks_like_key(credential: &str, prefix: &str) -> bool {
    credential.len() == prefix.len() + 64
        && credential.starts_with(prefix)
        && credential[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn hash_admin_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `dak_` and 64 lowercase hex digits: anything else is no admin key, and costs no lookup.
pub fn looks_like_admin_key(credential: &str) -> bool {
    looks_like_key(credential, ADMIN_KEY_PREFIX)
}

/// The active admin keys, in memory: an admin request costs a hash and compares, no database
/// read. Replaced whole when the table changes (see `store::admin_keys::KeyWatch`).
#[derive(Default)]
pub struct AdminKeyBook {
    keys: std::sync::RwLock<Vec<(String, Vec<u8>, String)>>,
}

impl AdminKeyBook {
    /// Every active key: id, hash, scope.
    pub fn replace(&self, keys: Vec<(String, Vec<u8>, String)>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The id of the active admin key `key` is, compared in constant time against every one.
    pub fn check(&self, key: &str) -> Option<String> {
        if !looks_like_admin_key(key) {
            return None;
        }
        self.find(key, "admin")
    }

    /// The id of the active service key of `scope` that `key` is.
    pub fn check_service(&self, key: &str, scope: &str) -> Option<String> {
        if !looks_like_service_key(key) {
            return None;
        }
        self.find(key, scope)
    }

    fn find(&self, key: &str, scope: &str) -> Option<String> {
        let hash = hash_admin_key(key);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (id, stored, of) in keys.iter() {
            if bool::from(stored.as_slice().ct_eq(&hash)) && of == scope {
                found = Some(id.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Admin keys have a recognizable prefix; a JWT is three dot-separated parts.
pub fn looks_like_buyer_token(credential: &str) -> bool {
    !credential.starts_with(ADMIN_KEY_PREFIX)
        && !credential.starts_with(SERVICE_KEY_PREFIX)
        && credential.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_minted_token_verifies_and_names_its_buyer() {
        let keys = TokenKeys::new(&[7u8; 32]).expect("long enough");
        let buyer = BuyerId::parse("alice").expect("valid");
        let token = keys.mint(&buyer, Duration::from_secs(60)).expect("mints");
        assert_eq!(keys.verify(&token), Ok(buyer));
        let other = TokenKeys::new(&[8u8; 32]).expect("long enough");
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn only_an_active_generated_admin_key_is_found_by_its_id() {
        let (key, hash) = generate_admin_key();
        let book = AdminKeyBook::default();
        assert_eq!(book.check(&key), None);
        book.replace(vec![("ak_1".into(), hash.to_vec(), "admin".into())]);
        assert_eq!(book.check(&key), Some("ak_1".into()));
        assert_eq!(book.check("dak_wrong"), None);
        let (other, _) = generate_admin_key();
        assert_eq!(book.check(&other), None);
        assert!(looks_like_admin_key(&key) && !looks_like_admin_key(&key.to_uppercase()));
        book.replace(Vec::new());
        assert_eq!(book.check(&key), None, "revoked");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new(b"short").is_err());
    }
}
