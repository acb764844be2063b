//! Buyer tokens: HS256 JWTs with `sub` and `exp` (`iat`, `nbf`, `iss`, `aud` when present or
//! required), signed with the first of the server's secrets and verified with any of them, so a
//! secret can be rotated without logging every buyer out. Each secret has a public key id (`kid`,
//! from its hash) that a token names in its header; a token without one is tried against all.

use std::time::Duration;

use anyhow::{bail, Context};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::BuyerId;

const MIN_SECRET_LEN: usize = 32;
/// Clock skew tolerated between the minting and the verifying machine.
const LEEWAY_SECS: u64 = 5;

/// What a server accepts beyond a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Longest a token may live (`exp` minus `iat`, or minus now without `iat`).
    pub max_lifetime: Duration,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Longest token accepted, in bytes: longer ones are refused before any parsing.
    pub max_len: usize,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            max_lifetime: crate::defaults::TOKEN_MAX_LIFETIME,
            issuer: None,
            audience: None,
            max_len: crate::defaults::TOKEN_MAX_LEN,
        }
    }
}

/// Why a token is refused; each has a stable problem code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {0} bytes")]
    TooLong(usize),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token lives longer than this server allows ({0})")]
    LifetimeTooLong(String),
    #[error("the token's audience (aud) is not this server's")]
    WrongAudience,
    #[error("the token's issuer (iss) is not the one this server trusts")]
    WrongIssuer,
    #[error("the token was not signed with this server's secret")]
    BadSignature,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLong(_) => "token-too-long",
            TokenError::NotYetValid => "token-not-yet-valid",
            TokenError::LifetimeTooLong(_) => "token-lifetime-too-long",
            TokenError::WrongAudience => "token-wrong-audience",
            TokenError::WrongIssuer => "token-wrong-issuer",
            // The codes clients already branch on.
            TokenError::Expired | TokenError::BadSignature | TokenError::Invalid(_) => {
                "unauthorized"
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

#[derive(Clone)]
struct Secret {
    kid: String,
    decoding: DecodingKey,
}

/// The server's buyer-token secrets and policy, ready to sign and verify.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    signing_kid: String,
    secrets: Vec<Secret>,
    validation: Validation,
    pub(super) policy: TokenPolicy,
    /// Tells these keys' cached verdicts from others' (tests run several servers in one
    /// process).
    pub(super) id: u64,
    /// Signs and checks queue admissions with keys derived from the same secrets.
    pub admissions: super::admission::AdmissionKeys,
}

/// A secret's public name: the start of its SHA-256, which says nothing about the secret.
pub fn key_id(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..6])
}

impl TokenKeys {
    /// One secret, the default policy.
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        Self::with_secrets(&[secret.to_vec()], TokenPolicy::default())
    }

    /// The first secret signs; every one verifies.
    pub fn with_secrets(secrets: &[Vec<u8>], policy: TokenPolicy) -> anyhow::Result<Self> {
        let Some(first) = secrets.first() else {
            bail!("no token secret");
        };
        if let Some(short) = secrets.iter().position(|s| s.len() < MIN_SECRET_LEN) {
            bail!(
                "token secret {} of {} is shorter than {MIN_SECRET_LEN} bytes",
                short + 1,
                secrets.len()
            );
        }
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        required.extend(policy.issuer.as_ref().map(|_| "iss"));
        required.extend(policy.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        if let Some(iss) = &policy.issuer {
            validation.set_issuer(&[iss]);
        }
        match &policy.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(first),
            signing_kid: key_id(first),
            secrets: secrets
                .iter()
                .map(|s| Secret {
                    kid: key_id(s),
                    decoding: DecodingKey::from_secret(s),
                })
                .collect(),
            validation,
            policy,
            id: rand::random(),
            admissions: super::admission::AdmissionKeys::from_secrets(secrets),
        })
    }

    pub fn mint(&self, sub: &BuyerId, ttl: Duration) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct Minted<'a> {
            #[serde(flatten)]
            claims: Claims,
            #[serde(skip_serializing_if = "Option::is_none")]
            iss: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            aud: Option<&'a str>,
        }
        let iat = jsonwebtoken::get_current_timestamp();
        let minted = Minted {
            claims: Claims {
                sub: sub.to_string(),
                exp: iat + ttl.as_secs(),
                iat: Some(iat),
                nbf: None,
            },
            iss: self.policy.issuer.as_deref(),
            aud: self.policy.audience.as_deref(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, &minted, &self.encoding).context("signing the token")
    }

    /// Checks everything but the cache: signature, claims and policy. Returns the buyer and
    /// the token's `exp`.
    pub(super) fn verify_uncached(&self, token: &str) -> Result<(BuyerId, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(map_error)?;
        let candidates: Vec<&Secret> = match &header.kid {
            Some(kid) => self.secrets.iter().filter(|s| &s.kid == kid).collect(),
            None => self.secrets.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(TokenError::BadSignature);
        }
        let mut last = TokenError::BadSignature;
        for secret in candidates {
            match jsonwebtoken::decode::<Claims>(token, &secret.decoding, &self.validation) {
                Ok(data) => {
                    let claims = data.claims;
                    self.check_lifetime(&claims)?;
                    let buyer = BuyerId::parse(&claims.sub).map_err(TokenError::Invalid)?;
                    return Ok((buyer, claims.exp));
                }
                Err(e) => {
                    last = map_error(e);
                    if last != TokenError::BadSignature {
                        // The signature matched: the claims are what is wrong.
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn check_lifetime(&self, claims: &Claims) -> Result<(), TokenError> {
        let from = claims
            .iat
            .unwrap_or_else(jsonwebtoken::get_current_timestamp);
        let lifetime = claims.exp.saturating_sub(from);
        if lifetime > self.policy.max_lifetime.as_secs() + LEEWAY_SECS {
            return Err(TokenError::LifetimeTooLong(
                humantime::format_duration(self.policy.max_lifetime).to_string(),
            ));
        }
        Ok(())
    }

    pub(super) fn leeway(&self) -> u64 {
        self.validation.leeway
    }
}

fn map_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::WrongIssuer,
        _ => TokenError::Invalid(e.to_string()),
    }
}
