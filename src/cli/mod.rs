//! The command line: `serve`, `token`, `admin-key create`. Every `serve` flag can also come from
//! `DROPD_<FLAG>`; flags win over the environment, which wins over defaults.

mod config;
mod credentials;
mod replay;
mod restore;
mod serve;
mod verify;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use credentials::{TokenArgs, TokenFlags};
pub use restore::RestoreArgs;
pub use serve::{ServeArgs, Switch};

use crate::defaults;

#[derive(Debug, Parser)]
#[command(
    name = "dropd",
    version = crate::VERSION,
    about = "A server for limited-stock drops"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of a variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint a buyer token (for development, or for a login service to copy).
    Token(TokenArgs),
    /// Manage admin keys.
    #[command(subcommand)]
    AdminKey(AdminKeyCommand),
    /// Keys for services: `--scope payments` confirms holds into orders.
    #[command(subcommand)]
    ServiceKey(ServiceKeyCommand),
    /// Check a hold receipt against its drop's ledger and the server's keys: the signature,
    /// every link of the chain, and the receipt's own entry.
    Verify(verify::VerifyArgs),
    /// Re-decide a drop's whole history from its ledger (restored from a replica or read from
    /// a copy) with the writer's own rule, report any outcome it does not reproduce, and with
    /// --buyer show the attempts that won before theirs.
    Replay(replay::ReplayArgs),
    /// The keys ledger heads are signed with.
    #[command(subcommand)]
    LedgerKey(LedgerKeyCommand),
    /// Rebuild a database from a replica (latest, --txid or --timestamp). Litestream's
    /// single-dash spellings (-txid, -timestamp, -if-db-not-exists...) work too.
    Restore(RestoreArgs),
    /// Print the settings `serve` would run with (its flags, the environment, the config
    /// file), secrets left out.
    Config(ServeArgs),
    /// Measure hold attempts/s against the /healthz ceiling, group commit against a naive
    /// baseline, and reads under fire; prints a markdown table and writes JSON.
    #[cfg(feature = "bench")]
    Bench(crate::bench::BenchArgs),
}

/// Litestream's flags are single-dash (`-txid`); clap wants `--txid`. Known names are rewritten
/// before parsing so scripts written for `litestream restore` work unchanged.
pub fn litestream_compatible_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    const LONG: &[&str] = &[
        "txid",
        "timestamp",
        "if-db-not-exists",
        "if-replica-exists",
        "parallelism",
        "config",
        "dry-run",
    ];
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some(text) if text.starts_with('-') && !text.starts_with("--") => {
                let name = text[1..].split('=').next().unwrap_or_default();
                if LONG.contains(&name) {
                    format!("-{text}").into()
                } else {
                    arg
                }
            }
            _ => arg,
        })
        .collect()
}

#[derive(Debug, Subcommand)]
pub enum AdminKeyCommand {
    /// Create an admin key; it is printed once and stored only as a hash. With a server
    /// running on the data directory, through its writer (valid at once).
    Create {
        #[arg(long, default_value = "ops")]
        name: String,
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
    /// List admin keys: id, name, created, revoked (never the keys).
    List {
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Revoke an admin key by its id; a running server refuses it within a second.
    Revoke {
        /// The key's id (`ak_...`, from `list`).
        id: String,
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerKeyCommand {
    /// Make a new signing key; it signs from the next start, and older keys stay listed at
    /// `GET /v1/keys` so what they signed still verifies.
    Rotate {
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceKeyCommand {
    /// Create a service key of a scope; printed once, stored only as a hash.
    Create {
        /// `payments`: may confirm any hold into an order (`POST /v1/holds/{hold}/confirm`).
        #[arg(long)]
        scope: String,
        #[arg(long, default_value = "payments")]
        name: String,
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
    /// List service keys: id, name, created, revoked (never the keys).
    List {
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Revoke a service key by its id (`sk_...`).
    Revoke {
        id: String,
        #[arg(long, env = "DROPD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Token(args) => credentials::token(args),
        Command::AdminKey(AdminKeyCommand::Create { name, data_dir }) => {
            credentials::create_admin_key(&name, &data_dir)
        }
        Command::AdminKey(AdminKeyCommand::List { data_dir }) => {
            credentials::list_admin_keys(&data_dir)
        }
        Command::AdminKey(AdminKeyCommand::Revoke { id, data_dir }) => {
            credentials::revoke_admin_key(&id, &data_dir)
        }
        Command::ServiceKey(ServiceKeyCommand::Create {
            scope,
            name,
            data_dir,
        }) => credentials::create_key(&name, &scope, &data_dir),
        Command::ServiceKey(ServiceKeyCommand::List { data_dir }) => {
            credentials::list_keys(&data_dir, |scope| scope != "admin")
        }
        Command::ServiceKey(ServiceKeyCommand::Revoke { id, data_dir }) => {
            credentials::revoke_admin_key(&id, &data_dir)
        }
        Command::Verify(args) => verify::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::LedgerKey(LedgerKeyCommand::Rotate { data_dir }) => {
            let id = crate::auth::ledger_keys::rotate(&data_dir).map_err(anyhow::Error::msg)?;
            eprintln!("ledger key {id} signs from the next start; older keys stay listed");
            Ok(())
        }
        Command::Restore(args) => restore::restore(args),
        Command::Config(args) => config::print(&args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            crate::telemetry::init("warn");
            crate::bench::run(args)
        }
    }
}
