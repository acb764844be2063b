//! The payment callback's signature: `Dropd-Payment-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` under the callback secret, within a tolerance window, each body taken once.
//! A leaf the server state holds; the route is `payments`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::http::codes::Code;
use crate::http::problem::ApiError;

pub const SIGNATURE_HEADER: &str = "Dropd-Payment-Signature";

/// The callback's secret, its window, and the bodies taken within it.
pub struct PaymentCallback {
    secret: String,
    tolerance: Duration,
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl PaymentCallback {
    pub fn new(secret: String, tolerance: Duration) -> Self {
        Self {
            secret,
            tolerance,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Checks the signature against `body` at `now` (Unix seconds).
    pub(crate) fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), ApiError> {
        let invalid = |why: &str| ApiError::new(Code::SignatureInvalid, why.to_owned());
        let header = header.ok_or_else(|| invalid("send Dropd-Payment-Signature: t=..,v1=.."))?;
        let (mut t, mut v1) = (None, Vec::new());
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => v1.push(value),
                _ => {}
            }
        }
        let t = t.ok_or_else(|| invalid("the signature has no valid t="))?;
        if (now - t).unsigned_abs() > self.tolerance.as_secs() {
            return Err(ApiError::new(
                Code::SignatureExpired,
                format!(
                    "the signature is from {t}, more than {} s from now",
                    self.tolerance.as_secs()
                ),
            ));
        }
        let body = std::str::from_utf8(body).map_err(|_| invalid("the body is not UTF-8"))?;
        let expected = crate::outbox::sign::v1(&self.secret, t, body);
        if !v1
            .iter()
            .any(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
        {
            return Err(invalid("the signature does not match the body"));
        }
        Ok(())
    }

    /// True the first time `digest` is seen within the window.
    pub(crate) fn first_time(&self, digest: [u8; 32], now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.tolerance.as_secs() as i64;
        if seen.len() > 10_000 {
            seen.retain(|_, at| now - *at <= 2 * window);
        }
        match seen.get(&digest) {
            Some(at) if now - *at <= 2 * window => false,
            _ => {
                seen.insert(digest, now);
                true
            }
        }
    }
}
