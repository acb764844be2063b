//! What the benchmark checks after each write phase (the invariants, and the database against
//! what the clients were told), and the admin calls that set phases up.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use super::load::GroupResult;
use super::loopback_addr;
use super::server::OwnServer;

/// Checks the invariants and that the database counts match what the load generator saw.
pub(super) fn verify(
    own: &Option<OwnServer>,
    drop: &str,
    seen: &GroupResult,
    stock: Option<i64>,
) -> anyhow::Result<Option<String>> {
    let acked = seen.outcome("held") + seen.outcome("ordered");
    verify_counts(
        own,
        drop,
        acked,
        seen.errors > 0,
        stock.map(|s| (seen.requests, s as u64)),
    )
}

/// The invariants, and `acked` holds in the database for the drop (at least that many if some
/// requests may have committed unseen: lost in transport, or cut off when the client stopped).
/// With `stock` (attempts, units): more attempts than units sell exactly the units.
pub(super) fn verify_counts(
    own: &Option<OwnServer>,
    drop: &str,
    acked: u64,
    unseen_commits: bool,
    stock: Option<(u64, u64)>,
) -> anyhow::Result<Option<String>> {
    let Some(srv) = own else {
        return Ok(None);
    };
    let conn = rusqlite::Connection::open_with_flags(
        &srv.db_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    if let Err(broken) = crate::store::invariants::check_invariants(&conn)? {
        return Ok(Some(broken));
    }
    let (holds, units): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(quantity), 0) FROM holds WHERE drop_id = ?1",
        [drop],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let acked = acked as i64;
    let counts_match = if unseen_commits {
        holds >= acked
    } else {
        holds == acked
    };
    if !counts_match {
        return Ok(Some(format!(
            "{drop}: {holds} holds in the database, {acked} acknowledged"
        )));
    }
    if let Some((attempts, stock)) = stock {
        if attempts > stock && units != stock as i64 {
            return Ok(Some(format!(
                "{drop}: {units} units held of {stock} after {attempts} attempts"
            )));
        }
    }
    Ok(Some("ok".into()))
}

/// The admin API, through a plain blocking client on its own runtime.
pub(super) struct Admin {
    base: String,
    key: String,
    rt: tokio::runtime::Runtime,
}

impl Admin {
    pub(super) fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.to_owned(),
            key: key.to_owned(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// `GET path` as JSON (with the admin key, which public routes ignore).
    pub(super) fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let addr = loopback_addr(&self.base)?;
        let (key, path) = (self.key.clone(), path.to_owned());
        self.rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path.as_str())
                .header("host", addr.to_string())
                .header("authorization", format!("Bearer {key}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))?;
            let res = sender.send_request(req).await?;
            let status = res.status().as_u16();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await?
                .to_bytes();
            if status != 200 {
                bail!("GET {path} answered {status}");
            }
            Ok(serde_json::from_slice(&body)?)
        })
    }

    pub(super) fn create_drop(&self, id: &str, stock: i64) -> anyhow::Result<()> {
        let now = chrono::Utc::now();
        let spec = json!({
            "id": id, "name": id, "description": "benchmark",
            "starts_at": crate::domain::clock::rfc3339(now - chrono::Duration::minutes(1)),
            "ends_at": crate::domain::clock::rfc3339(now + chrono::Duration::hours(6)),
            "per_buyer_limit": 1000, "hold_seconds": 3600,
            "skus": [{"sku": "S1", "name": "S1", "price": {"amount": 1000, "currency": "EUR"}, "stock": stock}]
        });
        let status = self.send("POST", "/v1/admin/drops", &spec)?;
        if status != 201 {
            bail!("creating benchmark drop {id} answered {status}");
        }
        Ok(())
    }

    /// An admin request with a JSON body; returns the status.
    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<u16> {
        let addr = loopback_addr(&self.base)?;
        let body = serde_json::to_vec(body)?;
        let (key, path, method) = (self.key.clone(), path.to_owned(), method.to_owned());
        self.rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method.as_str())
                .uri(path.as_str())
                .header("host", addr.to_string())
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
            let res = sender.send_request(req).await?;
            anyhow::Ok(res.status().as_u16())
        })
    }
}
