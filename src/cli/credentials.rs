//! `dropd token` and `dropd admin-key`: the credentials a server accepts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::app::DEFAULT_TOKEN_TTL;
use crate::auth::{self, TokenKeys, TokenPolicy};
use crate::control::{self, Request, Response};
use crate::defaults;
use crate::domain::BuyerId;
use crate::store::{admin_keys, open};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The buyer id the token speaks for.
    #[arg(long)]
    pub sub: String,
    /// How long the token is valid, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub tokens: TokenFlags,
}

/// How buyer tokens are signed and what a server accepts; `serve` and `token` share them so a
/// minted token is one the server takes.
#[derive(Debug, Args)]
pub struct TokenFlags {
    /// Secret for buyer tokens (at least 32 bytes). Repeat it to accept several while rotating:
    /// the first signs, all verify. Default: <data-dir>/token-secret, one secret per line.
    #[arg(
        long = "token-secret",
        env = "DROPD_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub token_secrets: Vec<String>,
    /// Longest a token may live (exp minus iat); longer-lived tokens are refused.
    #[arg(long, env = "DROPD_TOKEN_MAX_LIFETIME", default_value = defaults::TOKEN_MAX_LIFETIME_TEXT,
          value_parser = humantime::parse_duration)]
    pub token_max_lifetime: Duration,
    /// Require this `iss` in every token (and put it in minted ones).
    #[arg(long, env = "DROPD_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// Require this `aud` in every token (and put it in minted ones).
    #[arg(long, env = "DROPD_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
}

impl TokenFlags {
    pub fn policy(&self) -> TokenPolicy {
        TokenPolicy {
            max_lifetime: self.token_max_lifetime,
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
            ..TokenPolicy::default()
        }
    }
}

pub(super) fn token(args: TokenArgs) -> anyhow::Result<()> {
    let sub = BuyerId::parse(&args.sub).map_err(anyhow::Error::msg)?;
    let secrets = auth::load_secrets(&args.tokens.token_secrets, &args.data_dir, false)?;
    let policy = args.tokens.policy();
    let ttl = if args.ttl.is_zero() {
        DEFAULT_TOKEN_TTL
    } else {
        args.ttl
    };
    if ttl > policy.max_lifetime {
        anyhow::bail!(
            "--ttl {} is longer than the {} the server accepts (--token-max-lifetime)",
            humantime::format_duration(ttl),
            humantime::format_duration(policy.max_lifetime)
        );
    }
    let keys = TokenKeys::with_secrets(&secrets, policy)?;
    println!("{}", keys.mint(&sub, ttl)?);
    Ok(())
}

pub(super) fn create_admin_key(name: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    create_key(name, "admin", data_dir)
}

/// A key of `scope`: `admin` (`dak_...`) or a service's (`dsk_...`).
pub(super) fn create_key(
    name: &str,
    scope: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    if !auth::SCOPES.contains(&scope) {
        anyhow::bail!(
            "unknown scope {scope:?}; known: {}",
            auth::SCOPES.join(", ")
        );
    }
    let (key, hash) = if scope == "admin" {
        auth::generate_admin_key()
    } else {
        auth::generate_service_key()
    };
    let request = Request::CreateAdminKey {
        name: name.into(),
        key_hash: hex::encode(hash),
        scope: scope.into(),
    };
    let id = match control::client::ask(data_dir, &request)? {
        Some(Response::Created { id }) => id,
        Some(other) => anyhow::bail!("the running server did not create the key: {other:?}"),
        None => {
            let conn = open_database(data_dir, true)?;
            // The key and its audit entry commit together.
            let tx = conn.unchecked_transaction()?;
            let id = admin_keys::insert(&tx, name, &hash, scope, chrono::Utc::now())
                .context("storing the key")?;
            tx.commit()?;
            id
        }
    };
    let what = if scope == "admin" {
        "admin key".to_owned()
    } else {
        format!("{scope} service key")
    };
    eprintln!("created {what} {id} ({name}); it is shown only once:");
    println!("{key}");
    Ok(())
}

pub(super) fn revoke_admin_key(id: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let request = Request::RevokeAdminKey { id: id.into() };
    let was_active = match control::client::ask(data_dir, &request)? {
        Some(Response::Revoked { was_active, .. }) => was_active,
        Some(other) => anyhow::bail!("the running server did not revoke the key: {other:?}"),
        None => {
            let conn = open_database(data_dir, false)?;
            let tx = conn.unchecked_transaction()?;
            let revoked = admin_keys::revoke(&tx, id, chrono::Utc::now())
                .context("revoking the admin key")?;
            tx.commit()?;
            revoked
        }
    };
    if !was_active {
        anyhow::bail!("no active admin key {id} (see `dropd admin-key list`)");
    }
    eprintln!("revoked admin key {id}");
    Ok(())
}

pub(super) fn list_admin_keys(data_dir: &std::path::Path) -> anyhow::Result<()> {
    list_keys(data_dir, |scope| scope == "admin")
}

/// The keys whose scope `shown` accepts.
pub(super) fn list_keys(
    data_dir: &std::path::Path,
    shown: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let conn = open_database(data_dir, false)?;
    let keys = admin_keys::list(&conn).context("reading the keys")?;
    let keys = keys.into_iter().filter(|k| shown(&k.scope));
    println!("{:<30}  {:<16}  {:<20}  revoked", "id", "name", "created");
    for key in keys {
        let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        println!(
            "{:<30}  {:<16}  {:<20}  {}",
            key.id,
            key.name,
            at(key.created_at),
            key.revoked_at.map_or("-".into(), at)
        );
    }
    Ok(())
}

/// The data directory's database for a one-off command run beside (or without) a server: a
/// one-row write serialized with a running server by SQLite's write lock, on a connection that
/// never checkpoints (see `open::open_writer`).
fn open_database(data_dir: &std::path::Path, create: bool) -> anyhow::Result<rusqlite::Connection> {
    let path = data_dir.join(crate::app::DB_FILE);
    if create {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    } else if !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    open::open_for_cli(&path).with_context(|| format!("opening {}", path.display()))
}
