//! A lease on the lake, so that two batch runs never compact or publish at the same time
//! (two compactions of the same files would both commit and duplicate rows).
//!
//! The lease is an object `<lake>/_strata/batch.lease` created with put-if-absent. Its
//! holder renews it while it works; a holder that crashed stops renewing, and its lease
//! expires after [`LEASE_TTL`], so a new run can take over.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use strata_core::lake::{Lake, redact};
use strata_core::{Error, Result};
use tokio_util::sync::CancellationToken;

pub const LEASE_TTL: Duration = Duration::from_secs(60);
const LEASE_OBJECT: &str = "batch.lease";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A held lease; renewed in the background until [`Lease::release`] (or dropped).
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    stop: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("pid {} on {host}", std::process::id())
}

/// Whether a lease's holder is a process of this host that no longer runs (killed, say): its
/// lease need not be waited out.
fn holder_is_gone(holder: &str) -> bool {
    let me = self::holder();
    let host_of = |h: &str| h.split_once(" on ").map(|(_, host)| host.to_string());
    let pid = holder
        .strip_prefix("pid ")
        .and_then(|rest| rest.split_once(' '))
        .and_then(|(pid, _)| pid.parse::<u32>().ok());
    match (pid, host_of(holder), host_of(&me)) {
        (Some(pid), Some(host), Some(mine)) if host == mine && host != "unknown-host" => {
            std::fs::metadata("/proc/self").is_ok() && std::fs::metadata(format!("/proc/{pid}")).is_err()
        }
        _ => false,
    }
}

fn record(holder: &str, acquired_at: DateTime<Utc>) -> PutPayload {
    let r = LeaseRecord {
        holder: holder.to_string(),
        acquired_at,
        expires_at: Utc::now() + chrono::Duration::from_std(LEASE_TTL).expect("ttl"),
    };
    PutPayload::from(serde_json::to_vec(&r).expect("lease record serializes"))
}

/// Takes over a lease that expired (its holder died or is gone), conditionally where the
/// store can; `Busy` while it is held.
async fn take_over(store: &Arc<dyn ObjectStore>, path: &Path, me: &str, now: DateTime<Utc>) -> Result<()> {
    let existing = store
        .get(path)
        .await
        .map_err(|e| Error::lake("read the batch lease", e))?;
    let meta = existing.meta.clone();
    let bytes = existing
        .bytes()
        .await
        .map_err(|e| Error::lake("read the batch lease", e))?;
    let current: Option<LeaseRecord> = serde_json::from_slice(&bytes).ok();
    if let Some(current) = &current
        && current.expires_at > now
        && !holder_is_gone(&current.holder)
    {
        return Err(Error::Busy(format!(
            "another batch run ({}) holds the lease since {}; it expires at {} unless renewed. \
             Wait for that run to finish",
            current.holder,
            current.acquired_at.to_rfc3339(),
            current.expires_at.to_rfc3339(),
        )));
    }
    // Expired (its holder died): take it over, conditionally where the store can.
    let update = PutOptions::from(PutMode::Update(object_store::UpdateVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    }));
    match store.put_opts(path, record(me, now), update).await {
        Ok(_) => {}
        Err(object_store::Error::NotImplemented { .. }) => {
            store
                .delete(path)
                .await
                .map_err(|e| Error::lake("replace an expired batch lease", e))?;
            store
                .put_opts(path, record(me, now), PutOptions::from(PutMode::Create))
                .await
                .map_err(|e| Error::Busy(format!("another batch run took the expired lease first: {e}")))?;
        }
        Err(object_store::Error::Precondition { .. }) => {
            return Err(Error::Busy(
                "another batch run took the expired lease first".to_string(),
            ));
        }
        Err(e) => return Err(Error::lake("take over an expired batch lease", e)),
    }
    tracing::warn!(previous = ?current.map(|c| c.holder), "took over the batch lease of a run that expired or is gone");
    Ok(())
}

/// Renews the lease every quarter of its time to live until `stop`.
fn renew(
    store: Arc<dyn ObjectStore>,
    me: String,
    now: DateTime<Utc>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = Path::from(LEASE_OBJECT);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(LEASE_TTL / 4) => {
                    if let Err(e) = store.put(&path, record(&me, now)).await {
                        tracing::warn!(error = %e, "could not renew the batch lease");
                    }
                }
            }
        }
    })
}

impl Lease {
    /// Takes the lease, or says who holds it.
    pub async fn acquire(lake: &Lake) -> Result<Lease> {
        let store = lake.strata_store()?;
        let path = Path::from(LEASE_OBJECT);
        let me = holder();
        let now = Utc::now();
        let created = store
            .put_opts(&path, record(&me, now), PutOptions::from(PutMode::Create))
            .await;
        match created {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => take_over(&store, &path, &me, now).await?,
            // The lake's first contact in a batch run: name where it is.
            Err(e) => {
                let dir = redact(&lake.root().join(&["_strata"]));
                return Err(Error::lake(format!("create the batch lease in {dir}"), e));
            }
        }

        let stop = CancellationToken::new();
        let renewer = renew(store.clone(), me, now, stop.clone());
        Ok(Lease {
            store,
            stop,
            renewer: Some(renewer),
        })
    }

    /// Gives the lease back.
    pub async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(r) = self.renewer.take() {
            let _ = r.await;
        }
        self.store
            .delete(&Path::from(LEASE_OBJECT))
            .await
            .map_err(|e| Error::lake("release the batch lease", e))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Not released (an error or a panic): stop renewing; the lease expires by itself.
        self.stop.cancel();
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}
