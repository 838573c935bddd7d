//! Leases: one holder at a time for a named job (an OAuth 2 refresh, say) across every
//! process and host sharing the vault.
//!
//! A lease is a row taken by one atomic upsert that succeeds only when the row is free,
//! expired, or already this holder's; its expiry comes from the database's clock, so hosts'
//! clocks do not have to agree. A holder that dies keeps the lease until it expires, never
//! longer. Leases decide nothing about access and are not audited.

use std::time::Duration;

use crate::Vault;
use crate::error::Result;
use crate::store::{SqlExt, params};

/// A lease held (see [`Vault::lease`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What it is for.
    pub name: String,
    /// Who holds it (unique per holder: host, process and a random part).
    pub holder: String,
}

impl Vault {
    /// Takes lease `name` for `holder` for `ttl`, if no one else holds it (or their lease has
    /// expired); renews it if `holder` has it already. `None`: someone else holds it.
    pub fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let inner = self.lock();
        let now = inner.conn.backend().now_ms_sql();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let taken = inner.conn.execute(
            &format!(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, {now} + ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE leases.expires_at <= {now} OR leases.holder = excluded.holder"
            ),
            params![name, holder, ttl_ms],
        )?;
        Ok((taken == 1).then(|| Lease { name: name.to_owned(), holder: holder.to_owned() }))
    }

    /// Gives a lease back (a no-op if it expired and someone else took it).
    pub fn release_lease(&self, lease: &Lease) -> Result<()> {
        let inner = self.lock();
        inner.conn.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", params![lease.name, lease.holder])?;
        Ok(())
    }
}
