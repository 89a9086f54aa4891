//! What the daemon asks of its host: systemd notifications, the SQLite single-daemon lock,
//! the file-descriptor budget, surviving a file size limit, and words for a bind failure.

use std::path::PathBuf;

use super::DaemonError;
use crate::store::Store;

/// systemd notifications; no-ops outside systemd (no `NOTIFY_SOCKET`).
pub(super) fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(%err, "sd_notify failed");
    }
}

/// Holds the SQLite single-daemon lock for as long as it lives.
pub(super) struct SqliteLock(#[allow(dead_code)] std::fs::File);

pub(super) fn lock_sqlite(store: &Store) -> Result<Option<SqliteLock>, DaemonError> {
    let Some(file) = store.sqlite_file() else {
        return Ok(None);
    };
    let path = PathBuf::from(format!("{}.daemon-lock", file.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|reason| DaemonError::LockFile {
            path: path.display().to_string(),
            reason,
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(SqliteLock(lock))),
        Err(_) => Err(DaemonError::SqliteInUse(file.display().to_string())),
    }
}

/// The sidecar's connection cap: `api.max_connections`, held below a quarter of the open
/// file limit (raised to its hard limit first), so the API can never take the descriptors
/// ticks need for the store, the product and the model.
pub(super) fn sidecar_connections(configured: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let budget = usize::try_from(soft / 4).unwrap_or(usize::MAX).max(16);
    if configured > budget {
        tracing::warn!(
            configured,
            budget,
            "api.max_connections is above a quarter of the open file limit; the sidecar keeps to the quarter"
        );
    }
    configured.min(budget)
}

/// A file size limit (RLIMIT_FSIZE) would kill the process with SIGXFSZ on the write that
/// crosses it; with a handler installed, the write fails with EFBIG instead and the store
/// reports a full database, which the daemon waits out.
pub(super) fn survive_file_size_limits() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::from_raw(25)) {
        Ok(mut xfsz) => {
            tokio::spawn(async move { while xfsz.recv().await.is_some() {} });
        }
        Err(err) => tracing::debug!(%err, "cannot handle SIGXFSZ"),
    }
}

pub(super) fn bind_hint(reason: &std::io::Error, key: &str) -> String {
    match reason.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!(" (another process listens there: stop it, or choose another port with {key})")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!(" (ports below 1024 need privileges: choose another with {key})")
        }
        _ => String::new(),
    }
}

/// A listening socket with the deepest accept queue the kernel allows (`somaxconn`):
/// a burst of connections waits in the queue for the accept loop instead of having its
/// SYNs dropped and retried a second later (tokio's `bind` asks for 1024).
pub(super) fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)
}
