//! `Dropd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">`, the scheme
//! Stripe uses: the receiver recomputes it with the endpoint's secret, compares in constant
//! time, and refuses a `t` too far from its clock (a replayed body).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "Dropd-Signature";

pub fn v1(secret: &str, t: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn header_value(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

/// A new endpoint's signing secret.
pub fn new_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_time_and_body() {
        let a = v1("s", 1, "{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, v1("s", 2, "{}"));
        assert_ne!(a, v1("s", 1, "{ }"));
        assert_ne!(a, v1("t", 1, "{}"));
        assert_eq!(header_value("s", 1, "{}"), format!("t=1,v1={a}"));
    }
}
