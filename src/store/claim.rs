//! Exactly one runner per db: an exclusive OS lock on a sidecar file `<db>.lock`, taken
//! before anything else and held for the life of the process.
//!
//! Owns the lock and what it says about its holder. The lock is `flock`-style
//! ([`std::fs::File::try_lock`]): the kernel decides it atomically, so two runs started at
//! the same instant cannot both get it; it survives a suspended holder (Ctrl-Z, SIGSTOP)
//! and is released by the kernel when the holder exits or is killed, so a crash never leaves
//! a stale claim. The holder writes its pid, host and start time into the lock file for the
//! refusal message (the db records the same in its `meta` table for `status`).
//!
//! What it cannot see: a runner on another machine when the db sits on a network
//! filesystem (NFS, SMB) whose locks are not shared between hosts; the README says so.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::StoreError;
use crate::clock::unix_ms;

/// Who holds a db: written into the lock file by the holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// When it took the db, in Unix milliseconds.
    pub since_ms: u64,
}

/// The exclusive right to run a db, held until dropped (or the process ends).
#[derive(Debug)]
pub struct Claim {
    /// The locked file; the lock lives as long as this handle.
    _file: File,
    /// Who holds it (this process).
    pub holder: Holder,
}

/// The lock file of the db at `db`: `<db>.lock` beside it.
pub fn lock_path(db: &Path) -> PathBuf {
    super::sidecar(db, ".lock")
}

impl Claim {
    /// Takes the db at `db` for this process, or says who holds it.
    ///
    /// # Errors
    /// [`StoreError::Claimed`] when another process holds it; [`StoreError::Lock`] when the
    /// lock file cannot be created or locked (a missing folder, a read-only filesystem).
    pub fn take(db: &Path) -> Result<Claim, StoreError> {
        let path = lock_path(db);
        let io = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may not have written itself in yet: then it is unnamed.
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Claimed {
                    db: db.to_path_buf(),
                    holder: Holder::parse(&text),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder {
            pid: std::process::id(),
            host: host_name(),
            since_ms: unix_ms(SystemTime::now()),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(holder.to_line().as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Claim {
            _file: file,
            holder,
        })
    }
}

impl Holder {
    fn to_line(&self) -> String {
        format!("{} {} {}\n", self.pid, self.since_ms, self.host)
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut parts = text.trim().splitn(3, ' ');
        Some(Holder {
            pid: parts.next()?.parse().ok()?,
            since_ms: parts.next()?.parse().ok()?,
            host: parts.next()?.to_string(),
        })
    }

    /// When it took the db.
    pub fn since(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.since_ms)
    }
}

/// This machine's name, for telling the user where the holder runs.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into())
}

/// The refusal's description of the holder: `pid 123 on host, since 2026-…Z`.
pub fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => format!(
            "pid {} on {}, since {}",
            h.pid,
            h.host,
            humantime::format_rfc3339_seconds(h.since())
        ),
        None => "a process that is just starting".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_the_same_db_is_refused_with_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a.db");
        let first = Claim::take(&db).expect("first claim");
        match Claim::take(&db) {
            Err(StoreError::Claimed { holder, .. }) => {
                assert_eq!(holder, Some(first.holder.clone()));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(first);
        Claim::take(&db).expect("the claim is free once its holder is gone");
    }

    #[test]
    fn a_claim_names_the_lock_file_beside_the_db() {
        assert_eq!(
            lock_path(Path::new("dir/a.db")),
            PathBuf::from("dir/a.db.lock")
        );
    }
}
