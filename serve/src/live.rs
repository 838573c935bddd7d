//! The catalogue a server is serving, replaceable while it runs: `SIGHUP` loads the skill
//! directories again and swaps the new tools in, and connected MCP clients are told the tool
//! list changed. Calls already running finish on the skills they started with.

use std::sync::{Arc, RwLock};

use skillbox_runtime::Catalogue;
use tokio::sync::watch;

/// The current catalogue and a counter of replacements.
#[derive(Debug)]
pub struct LiveCatalogue {
    current: RwLock<Arc<Catalogue>>,
    changes: watch::Sender<u64>,
}

impl LiveCatalogue {
    /// Starts with `catalogue`.
    pub fn new(catalogue: Catalogue) -> Arc<LiveCatalogue> {
        Arc::new(LiveCatalogue { current: RwLock::new(Arc::new(catalogue)), changes: watch::Sender::new(0) })
    }

    /// The tools now.
    pub fn current(&self) -> Arc<Catalogue> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves `catalogue` from now on, and tells subscribers.
    pub fn replace(&self, catalogue: Catalogue) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalogue);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes on every [`LiveCatalogue::replace`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
