//! One driver per checkpoint on an object store: a lease object.
//!
//! A local checkpoint is held with `flock`, which the kernel releases when the process dies. An
//! object store has no locks, so the driver holds `CHECKPOINT/lease` instead: a small JSON
//! record (holder, owner, expiry) that it creates with a conditional PUT (`If-None-Match: *`)
//! and renews every [`LEASE_TTL`]/5 with a conditional update (`If-Match: <etag>`).
//!
//! - A second driver finds a lease that has not expired and is refused with the holder's name.
//! - A lease that expired (its driver died, on any host) or whose holder is a dead process on
//!   this host is taken over with a conditional update, so of two drivers racing for it one wins.
//! - A driver whose renewal is refused (someone else took the lease) or that could not renew
//!   before its lease expired has lost it: [`Lease::confirm`], which the checkpoint calls
//!   before recording a sink's publish and before each commit, fails from then on — a stale
//!   driver cannot commit. (`offsets/N` and `commits/N` are create-only too, so two drivers can
//!   never record different entries for one epoch.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{PutMode, PutResult};
use serde::{Deserialize, Serialize};

use crate::error::{CheckpointError, Result};
use crate::location::ObjectRoot;
use crate::store::now_ms;

/// How long a lease lasts without renewal. A driver on another host that died is replaced
/// after at most this long (one on the same host at once).
pub const LEASE_TTL: Duration = Duration::from_secs(10);

const LEASE: &str = "lease";

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    /// Random id of the holding driver.
    holder: String,
    /// Who holds it, for the refusal message.
    owner: String,
    host: String,
    pid: u32,
    /// When the lease lapses unless renewed (ms since the Unix epoch; 0: released).
    expires_at_ms: u64,
}

/// A held lease, renewed in the background until dropped.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    root: ObjectRoot,
    record: Mutex<Held>,
    stop: AtomicBool,
    ttl: Duration,
}

#[derive(Debug)]
struct Held {
    record: LeaseRecord,
    version: PutResult,
    /// Why the lease is no longer ours.
    lost: Option<String>,
}

impl Lease {
    /// Takes the lease of the checkpoint at `root`, or says who holds it.
    pub fn acquire(root: &ObjectRoot, ttl: Duration) -> Result<Lease> {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let pid = std::process::id();
        let now = now_ms();
        let record = LeaseRecord {
            holder: uuid::Uuid::new_v4().simple().to_string(),
            owner: format!("pid {pid} on {host}, started at {now} ms"),
            host: host.clone(),
            pid,
            expires_at_ms: now + ttl.as_millis() as u64,
        };
        let url = root.url_of(LEASE);
        let mode = match root.get(LEASE)? {
            None => PutMode::Create,
            Some((bytes, version)) => {
                let found: LeaseRecord =
                    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                        path: url.clone().into(),
                        message: e.to_string(),
                    })?;
                let dead_here = found.host == host && found.pid != pid && !process_alive(found.pid);
                if found.expires_at_ms > now && !dead_here {
                    return Err(CheckpointError::Locked {
                        path: root.url().into(),
                        owner: format!(
                            "{}; its lease expires in {:.0} s unless renewed",
                            found.owner,
                            (found.expires_at_ms - now) as f64 / 1000.0
                        ),
                    });
                }
                PutMode::Update(version.into())
            }
        };
        let version = match root.put(LEASE, to_json(&record), mode) {
            Ok(v) => v,
            Err(e) if e.is_conflict() => {
                return Err(CheckpointError::Locked {
                    path: root.url().into(),
                    owner: "another driver, which took the lease at the same moment".into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let shared = Arc::new(Shared {
            root: root.clone(),
            record: Mutex::new(Held {
                record,
                version,
                lost: None,
            }),
            stop: AtomicBool::new(false),
            ttl,
        });
        let renewer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-lease".into())
            .spawn(move || {
                let period = renewer.ttl / 5;
                while !renewer.stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(period);
                    if renewer.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    renewer.renew();
                }
            })
            .map_err(|e| CheckpointError::Io {
                action: "start the lease renewal thread for",
                path: url.into(),
                source: e,
            })?;
        Ok(Lease {
            shared,
            thread: Some(thread),
        })
    }

    /// Renews the lease now and fails if it is no longer this driver's.
    pub fn confirm(&self) -> Result<()> {
        self.shared.renew();
        let held = self.shared.held();
        match &held.lost {
            None => Ok(()),
            Some(reason) => Err(CheckpointError::LeaseLost {
                path: self.shared.root.url().into(),
                reason: reason.clone(),
            }),
        }
    }
}

impl Lease {
    /// Fails if the renewals found the lease taken over or expired (no request is made).
    pub fn check(&self) -> Result<()> {
        match &self.shared.held().lost {
            None => Ok(()),
            Some(reason) => Err(CheckpointError::LeaseLost {
                path: self.shared.root.url().into(),
                reason: reason.clone(),
            }),
        }
    }
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn renew(&self) {
        let mut held = self.held();
        if held.lost.is_some() {
            return;
        }
        let now = now_ms();
        let mut record = held.record.clone();
        record.expires_at_ms = now + self.ttl.as_millis() as u64;
        let mode = PutMode::Update(held.version.clone().into());
        match self.root.put(LEASE, to_json(&record), mode) {
            Ok(version) => {
                held.record = record;
                held.version = version;
            }
            Err(e) if e.is_conflict() => {
                let by = self
                    .root
                    .get(LEASE)
                    .ok()
                    .flatten()
                    .and_then(|(b, _)| serde_json::from_slice::<LeaseRecord>(&b).ok())
                    .map(|r| r.owner)
                    .unwrap_or_else(|| "another driver".into());
                tracing::error!(checkpoint = %self.root.url(), %by, "checkpoint lease taken over");
                held.lost = Some(format!("its lease was taken over by {by}"));
            }
            Err(e) if now >= held.record.expires_at_ms => {
                tracing::error!(checkpoint = %self.root.url(), error = %e, "checkpoint lease expired");
                held.lost = Some(format!(
                    "its lease expired before it could be renewed ({e})"
                ));
            }
            Err(e) => {
                tracing::warn!(checkpoint = %self.root.url(), error = %e, "renewing the checkpoint lease failed; retrying");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        // Released: the next driver need not wait for the expiry.
        let held = self.shared.held();
        if held.lost.is_none() {
            let mut record = held.record.clone();
            record.expires_at_ms = 0;
            let mode = PutMode::Update(held.version.clone().into());
            let _ = self.shared.root.put(LEASE, to_json(&record), mode);
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn to_json(record: &LeaseRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a lease record always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> ObjectRoot {
        ObjectRoot::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://test",
            "ck",
        )
    }

    #[test]
    fn a_live_lease_refuses_a_second_driver_and_is_released_on_drop() {
        let root = root();
        let first = Lease::acquire(&root, LEASE_TTL).unwrap();
        let err = Lease::acquire(&root, LEASE_TTL).unwrap_err().to_string();
        assert!(err.contains("in use by another driver"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        first.confirm().unwrap();
        drop(first);
        let second = Lease::acquire(&root, LEASE_TTL).unwrap();
        second.confirm().unwrap();
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_the_stale_holder_cannot_confirm() {
        let root = root();
        let stale = Lease::acquire(&root, Duration::from_millis(200)).unwrap();
        // The holder stalls (its renewals stop) past its expiry; another driver takes over.
        stale.shared.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(600));
        let other = Lease::acquire(&root, LEASE_TTL).unwrap();
        let err = stale.confirm().unwrap_err();
        assert!(stale.check().is_err(), "the loss is remembered");
        assert!(matches!(err, CheckpointError::LeaseLost { .. }), "{err}");
        assert!(err.to_string().contains("taken over"), "{err}");
        other.confirm().unwrap();
        // The stale driver's drop does not release the new holder's lease.
        drop(stale);
        other.confirm().unwrap();
        assert!(Lease::acquire(&root, LEASE_TTL).is_err());
    }
}
