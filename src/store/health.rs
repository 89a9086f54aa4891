//! Whether the store takes writes. Every write of the tick path reports here; an outage
//! (full, read-only, unreachable, failing I/O) is logged once when it starts and once when
//! it ends, and while it lasts the daemon claims no tick and sends no call: a call that
//! cannot be recorded must not happen.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::StoreError;

/// Why the store cannot take writes, in words an operator acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outage {
    /// No space left (disk full, file size limit, quota).
    Full(String),
    /// The database or its file system is read-only.
    ReadOnly(String),
    /// The database server cannot be reached (refused, timed out, pool exhausted).
    Unreachable(String),
    /// Reading or writing the database files fails.
    Io(String),
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(detail) => write!(f, "the database is full ({detail}): free disk space or raise the limit"),
            Self::ReadOnly(detail) => write!(f, "the database is read-only ({detail})"),
            Self::Unreachable(detail) => write!(f, "the database is unreachable ({detail})"),
            Self::Io(detail) => write!(f, "the database cannot be written ({detail})"),
        }
    }
}

impl Outage {
    /// The outage an sqlx error stands for, if any (a constraint or a bug is not one).
    pub fn of(err: &sqlx::Error) -> Option<Self> {
        match err {
            sqlx::Error::PoolTimedOut => Some(Self::Unreachable("no database connection became free in time".into())),
            sqlx::Error::PoolClosed => Some(Self::Unreachable("the connection pool is closed".into())),
            sqlx::Error::Io(io) => Some(Self::Unreachable(io.to_string())),
            sqlx::Error::Tls(tls) => Some(Self::Unreachable(format!("TLS: {tls}"))),
            sqlx::Error::Database(db) => {
                let message = db.message().to_string();
                let code = db.code().unwrap_or_default().to_string();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite result codes: the primary code is the extended code's low byte.
                    return match code.parse::<i32>().unwrap_or_default() & 0xff {
                        13 => Some(Self::Full(message)),         // SQLITE_FULL
                        8 => Some(Self::ReadOnly(message)),      // SQLITE_READONLY
                        10 | 11 | 14 => Some(Self::Io(message)), // IOERR, CORRUPT, CANTOPEN
                        _ => None,
                    };
                }
                // PostgreSQL SQLSTATEs: 53100 disk full, 53xxx/58xxx resources and system,
                // 25006 read-only transaction, 08xxx connection, 57P0x shutting down.
                match code.as_str() {
                    "53100" => Some(Self::Full(message)),
                    "25006" => Some(Self::ReadOnly(message)),
                    code if code.starts_with("08") || code.starts_with("57P") => Some(Self::Unreachable(message)),
                    code if code.starts_with("53") || code.starts_with("58") => Some(Self::Io(message)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// How long writes must keep succeeding after a successful probe before an outage is
/// declared over. On a disk at its limit some writes still fit (an update in place, a WAL
/// frame over old space) while the next insert fails; within this window such a failure
/// continues the same outage instead of starting a new one, so health does not flap.
const TRIAL: std::time::Duration = std::time::Duration::from_secs(10);

type Started = (Outage, DateTime<Utc>);

#[derive(Debug, Default)]
struct State {
    /// Writes are failing: nothing is claimed, nothing sent.
    outage: Option<Started>,
    /// A probe succeeded: work resumes, but a failure now continues the outage.
    trial: Option<(Started, std::time::Instant)>,
}

/// The store's write health, shared by every clone of the store.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    trial: std::time::Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            trial: TRIAL,
        }
    }
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().expect("health lock");
        // A trial that lasted without failure ends the outage (one line).
        if let Some(((outage, since), trial_start)) = state.trial.take() {
            if trial_start.elapsed() >= self.trial {
                let lasted = crate::time::now()
                    .signed_duration_since(since)
                    .to_std()
                    .unwrap_or_default();
                tracing::warn!(cause = %outage, ?lasted, "the store takes writes again: scheduling resumes");
            } else {
                state.trial = Some(((outage, since), trial_start));
            }
        }
        state
    }

    /// The current outage and when it started, if writes are failing.
    pub fn outage(&self) -> Option<(Outage, DateTime<Utc>)> {
        self.state().outage.clone()
    }

    pub fn is_writable(&self) -> bool {
        self.state().outage.is_none()
    }

    /// Notes the outcome of a write: a failure that is an outage starts one (or, during
    /// the trial after a probe, continues the last one). A success does not end an
    /// outage; only a probe ([`Health::probed`]), tried with backoff, does.
    pub fn observe<T>(&self, result: &Result<T, StoreError>) {
        if let Err(err) = result
            && let Some(outage) = err.outage()
        {
            self.failed(outage.clone());
        }
    }

    /// Notes the outcome of a probe write: a success lets work resume on trial.
    pub fn probed<T>(&self, result: &Result<T, StoreError>) {
        if result.is_err() {
            return self.observe(result);
        }
        let mut state = self.state();
        if let Some(started) = state.outage.take() {
            tracing::debug!(cause = %started.0, "a probe write succeeded; resuming on trial");
            crate::metrics::global().store_writable(true);
            state.trial = Some((started, std::time::Instant::now()));
        }
    }

    fn failed(&self, outage: Outage) {
        let mut state = self.state();
        if state.outage.is_some() {
            return;
        }
        crate::metrics::global().store_writable(false);
        if let Some((started, _)) = state.trial.take() {
            tracing::debug!(cause = %outage, "writes fail again during the trial: the outage goes on");
            state.outage = Some(started);
            return;
        }
        tracing::error!(cause = %outage, "the store stopped taking writes: no tick is claimed and no call sent until it recovers");
        state.outage = Some((outage, crate::time::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_starts_once_and_ends_after_a_probe_and_a_quiet_trial() {
        let health = Health {
            state: Mutex::default(),
            trial: std::time::Duration::from_millis(50),
        };
        assert!(health.is_writable());
        let full = || -> Result<(), StoreError> { Err(StoreError::Unavailable(Outage::Full("disk".into()))) };
        health.observe(&full());
        let (first, since) = health.outage().unwrap();
        health.observe(&full());
        // A second failure keeps the first start.
        assert_eq!(health.outage().unwrap().1, since);
        assert!(first.to_string().contains("the database is full"), "{first}");
        // Errors that are not outages do not end or start one.
        health.observe(&Err::<(), _>(StoreError::Conflict("x".into())));
        assert!(!health.is_writable());
        // A write that happens to fit does not end it (no flapping at the disk's limit)…
        health.observe(&Ok::<(), StoreError>(()));
        assert!(!health.is_writable());
        // …a probe lets work resume on trial; a failure then is the same outage.
        health.probed(&Ok::<(), StoreError>(()));
        assert!(health.is_writable());
        health.observe(&full());
        assert_eq!(health.outage().unwrap().1, since, "the same outage goes on");
        // A probe and a trial without failure end it.
        health.probed(&Ok::<(), StoreError>(()));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(health.is_writable());
        assert!(health.state.lock().unwrap().trial.is_none(), "the trial is over");
        health.observe(&full());
        assert_ne!(health.outage().unwrap().1, since, "a later failure is a new outage");
    }
}
