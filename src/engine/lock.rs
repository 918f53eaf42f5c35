//! The playbook lock held for the length of a run, renewed in the
//! background so that its lease does not lapse while the run lives.

use std::sync::Arc;
use std::time::Duration;

use crate::run_id::RunId;
use crate::store::{LeaseHolder, Store, StoreError};

pub struct PlaybookLock {
    store: Arc<dyn Store>,
    name: String,
    holder: LeaseHolder,
    renewal: tokio::task::JoinHandle<()>,
}

fn holder(run_id: &RunId, ttl: Duration) -> LeaseHolder {
    let now = jiff::Timestamp::now();
    let expires =
        now + jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_secs(60));
    LeaseHolder {
        run_id: run_id.clone(),
        host: crate::host::hostname(),
        pid: std::process::id(),
        pid_start: crate::host::process_start(std::process::id()),
        acquired_at: now.to_string(),
        expires_at: expires.to_string(),
    }
}

impl PlaybookLock {
    pub async fn acquire(
        store: Arc<dyn Store>,
        name: &str,
        run_id: &RunId,
        take_over: Option<&RunId>,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        let lease = holder(run_id, ttl);
        store.acquire(name, &lease, take_over).await?;
        let renewal = {
            let store = store.clone();
            let name = name.to_string();
            let mut lease = lease.clone();
            tokio::spawn(async move {
                let period = (ttl / 3).max(Duration::from_millis(100));
                loop {
                    tokio::time::sleep(period).await;
                    let renewed = holder(&lease.run_id, ttl);
                    lease.expires_at = renewed.expires_at;
                    if let Err(err) = store.renew(&name, &lease).await {
                        tracing::error!(lock = %name, %err, "cannot renew the playbook lock");
                    }
                }
            })
        };
        Ok(Self {
            store,
            name: name.to_string(),
            holder: lease,
            renewal,
        })
    }

    /// Stops renewal and removes the lock.
    pub async fn release(self) {
        self.renewal.abort();
        if let Err(err) = self.store.release(&self.name, &self.holder).await {
            tracing::error!(lock = %self.name, %err, "cannot release the playbook lock");
        }
    }
}

impl Drop for PlaybookLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}
