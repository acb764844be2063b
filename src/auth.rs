//! Buyer tokens (HS256 JWTs with `sub` and `exp`) and admin keys (random, stored as SHA-256).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::BuyerId;

pub const SECRET_FILE: &str = "token-secret";
const MIN_SECRET_LEN: usize = 32;
const ADMIN_KEY_PREFIX: &str = "dak_";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// The server's buyer-token secret, ready to sign and verify.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tells this secret's cached verdicts from another's (tests run several servers in one
    /// process).
    id: u64,
}

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
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            bail!("the token secret must be at least {MIN_SECRET_LEN} bytes long");
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            id: rand::random(),
        })
    }

    pub fn mint(&self, sub: &BuyerId, ttl: Duration) -> anyhow::Result<String> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.to_string(),
            exp: iat + ttl.as_secs(),
            iat,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing the token")
    }

    /// The buyer a token speaks for, or why it is not accepted.
    pub fn verify(&self, token: &str) -> Result<BuyerId, String> {
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.validation.leeway;
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

    fn verify_uncached(&self, token: &str) -> Result<(BuyerId, u64), String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the token has expired".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the token was not signed with this server's secret".to_owned()
                }
                _ => format!("the token is not valid: {e}"),
            })?;
        Ok((BuyerId::parse(&data.claims.sub)?, data.claims.exp))
    }
}

/// Where the secret comes from: given (flag or env), or `<data-dir>/token-secret`, created with
/// mode 0600 on first use when `create` is set.
pub fn load_secret(given: Option<&str>, data_dir: &Path, create: bool) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = given {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(text.trim().as_bytes().to_vec()),
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
    Ok(secret.into_bytes())
}

fn write_private(path: &PathBuf, contents: &[u8]) -> anyhow::Result<()> {
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

pub fn hash_admin_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares against every stored hash in constant time, so timing tells nothing about which
/// bytes matched.
pub fn admin_key_matches(key: &str, stored: &[Vec<u8>]) -> bool {
    let hash = hash_admin_key(key);
    stored
        .iter()
        .fold(subtle::Choice::from(0), |found, h| {
            found | h.as_slice().ct_eq(&hash)
        })
        .into()
}

/// Admin keys have a recognizable prefix; a JWT is three dot-separated parts.
pub fn looks_like_buyer_token(credential: &str) -> bool {
    !credential.starts_with(ADMIN_KEY_PREFIX) && credential.split('.').count() == 3
}

#[cfg(test)]
mod tests {
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
    fn only_the_generated_admin_key_matches_its_hash() {
        let (key, hash) = generate_admin_key();
        assert!(admin_key_matches(&key, &[hash.to_vec()]));
        assert!(!admin_key_matches("dak_wrong", &[hash.to_vec()]));
        assert!(!admin_key_matches(&key, &[]));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new(b"short").is_err());
    }
}
