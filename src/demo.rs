//! `serve --demo`: a live drop to play with, and everything needed to call the API at once.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Duration as Span;

use crate::app::Application;
use crate::auth;
use crate::domain::views::{NewDrop, NewSku};
use crate::domain::{BuyerId, Clock, Currency, Money, Refusal};

pub const DROP_ID: &str = "demo";

/// Where the demo's admin key is kept between starts (mode 0600), so a restart shows the same
/// key instead of minting another that is never revoked.
pub const ADMIN_KEY_FILE: &str = "demo-admin-key";

pub async fn ensure(
    app: &Application,
    clock: &dyn Clock,
    base: &str,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let now = clock.now();
    let eur = Currency::parse("EUR").map_err(anyhow::Error::msg)?;
    let sku = |code: &str, name: &str, amount: i64, stock: i64| NewSku {
        sku: code.into(),
        name: name.into(),
        price: Money {
            amount,
            currency: eur.clone(),
        },
        stock,
    };
    let spec = NewDrop {
        id: DROP_ID.into(),
        name: "Demo drop".into(),
        description: "A live drop created by `dropd serve --demo`.".into(),
        starts_at: now - Span::minutes(1),
        ends_at: now + Span::days(30),
        per_buyer_limit: 2,
        hold_seconds: 300,
        skus: vec![
            sku("TEE-S", "Tee, size S", 3_500, 50),
            sku("TEE-M", "Tee, size M", 3_500, 100),
            sku("TEE-L", "Tee, size L", 3_500, 50),
        ],
        mode: Default::default(),
        admission_rate: None,
        admission_seconds: None,
    };
    match app
        .writer()
        .create_drop(crate::store::audit::Acting::by("cli"), spec)
        .await?
    {
        Ok(_) | Err(Refusal::DropExists { .. }) => {}
        Err(other) => return Err(anyhow::anyhow!("creating the demo drop: {other}")),
    }
    let admin_key = demo_admin_key(app, data_dir).await?;
    let key_file = data_dir.join(ADMIN_KEY_FILE).display().to_string();
    let buyer = BuyerId::parse("demo-buyer").map_err(anyhow::Error::msg)?;
    let token = app.tokens().mint(&buyer, Duration::from_secs(24 * 3600))?;
    println!(
        "\
demo drop '{DROP_ID}' is live.
buyer token (demo-buyer, 24h): {token}
admin key (in {key_file}): {admin_key}

open {base}/#/drops/{DROP_ID} in a browser (it gets a buyer token by itself), or try:
  curl -s {base}/v1/drops/{DROP_ID}
  curl -s -X POST {base}/v1/drops/{DROP_ID}/holds -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' -d '{{\"sku\":\"TEE-M\",\"quantity\":1}}'
  curl -s {base}/v1/admin/drops/{DROP_ID}/orders -H 'Authorization: Bearer {admin_key}'
"
    );
    Ok(())
}

/// The kept demo key while it is active; else a new one, kept.
async fn demo_admin_key(app: &Application, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim();
        if app.admin_key_id(key).is_some() {
            return Ok(key.to_owned());
        }
        // Revoked (or edited): a new one replaces it.
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let (key, _id) = app.create_admin_key("demo").await?;
    auth::write_private(&path, key.as_bytes())?;
    Ok(key)
}
