//! The local control socket, `<data-dir>/dropd.sock` (mode 0600): how `dropd admin-key create`
//! and `revoke` reach a running server, so the change goes through its writer (and so to its
//! replica, like every other write) and counts at once. Who can reach the data directory can
//! open the database itself; the socket grants nothing more.
//!
//! One JSON line asks, one JSON line answers. Nothing but the hash of a new key crosses it.

pub mod client;
mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use server::{start, Control};

pub const SOCKET_FILE: &str = "dropd.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    CreateAdminKey {
        name: String,
        key_hash: String,
        /// `admin` (older clients send none) or `payments`.
        #[serde(default = "admin_scope")]
        scope: String,
    },
    RevokeAdminKey {
        id: String,
    },
}

fn admin_scope() -> String {
    "admin".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Created { id: String },
    Revoked { id: String, was_active: bool },
    Failed { message: String },
}
