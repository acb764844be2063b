//! Admission tokens: what a queue drop's buyer shows on `POST .../holds` once their place was
//! served. Stateless (HMAC over drop, buyer, place and expiry, keyed from the buyer-token
//! secrets), so the hold path checks one without a read; the writer judges its expiry.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const PREFIX: &str = "adm1";

/// Keys derived from the buyer-token secrets (the first signs, all verify, as for tokens), so
/// every box given the same secrets accepts the others' admissions.
#[derive(Clone)]
pub struct AdmissionKeys {
    keys: Vec<[u8; 32]>,
}

/// Why a token does not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionError {
    /// Not a token, not signed by this server, or for another drop or buyer.
    Invalid,
}

fn mac(key: &[u8], parts: &[&str]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.finalize().into_bytes().into()
}

impl AdmissionKeys {
    pub fn from_secrets(secrets: &[Vec<u8>]) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| mac(s, &["dropd admission tokens v1"]))
                .collect(),
        }
    }

    /// `adm1.<drop>.<place>.<until ms>.<hex HMAC>`: the buyer is bound by the HMAC only.
    pub fn sign(&self, drop_id: &str, buyer: &str, place: i64, until_ms: i64) -> String {
        let (place, until) = (place.to_string(), until_ms.to_string());
        let key = self.keys.first().map_or(&[0u8; 32], |k| k);
        let tag = mac(key, &[PREFIX, drop_id, buyer, &place, &until]);
        format!("{PREFIX}.{drop_id}.{place}.{until}.{}", hex::encode(tag))
    }

    /// Until when `token` admits `buyer` to `drop_id` (Unix ms); its time is not judged here.
    pub fn verify(&self, token: &str, drop_id: &str, buyer: &str) -> Result<i64, AdmissionError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [prefix, drop, place, until, tag] = parts[..] else {
            return Err(AdmissionError::Invalid);
        };
        if prefix != PREFIX || drop != drop_id {
            return Err(AdmissionError::Invalid);
        }
        let until_ms: i64 = until.parse().map_err(|_| AdmissionError::Invalid)?;
        place.parse::<i64>().map_err(|_| AdmissionError::Invalid)?;
        let tag = hex::decode(tag).map_err(|_| AdmissionError::Invalid)?;
        let good = self.keys.iter().any(|key| {
            let expected = mac(key, &[PREFIX, drop, buyer, place, until]);
            bool::from(expected.as_slice().ct_eq(&tag))
        });
        if good {
            Ok(until_ms)
        } else {
            Err(AdmissionError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_admits_only_its_buyer_to_its_drop() {
        let keys = AdmissionKeys::from_secrets(&[b"first-secret-of-enough-length!!!".to_vec()]);
        let token = keys.sign("drop-a", "alice", 7, 1_000);
        assert_eq!(keys.verify(&token, "drop-a", "alice"), Ok(1_000));
        assert!(keys.verify(&token, "drop-a", "bob").is_err());
        assert!(keys.verify(&token, "drop-b", "alice").is_err());
        let forged = token.replace(".1000.", ".9000.");
        assert!(keys.verify(&forged, "drop-a", "alice").is_err());
        assert!(keys.verify("adm1.drop-a", "drop-a", "alice").is_err());
        let rotated = AdmissionKeys::from_secrets(&[
            b"a-newer-secret-of-enough-length!".to_vec(),
            b"first-secret-of-enough-length!!!".to_vec(),
        ]);
        assert_eq!(rotated.verify(&token, "drop-a", "alice"), Ok(1_000));
    }
}
