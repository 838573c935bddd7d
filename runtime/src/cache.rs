//! On-disk cache of compiled components.
//!
//! Compiling a component costs tens of milliseconds (seconds for large
//! ones); loading a precompiled artifact costs a fraction of one. Entries
//! are keyed by the SHA-256 of the component bytes *and* the engine's
//! compatibility hash (wasmtime version plus every setting that changes
//! generated code), so a different wasmtime or config never loads a stale
//! artifact. Writes go to a temporary file renamed into place, so a reader
//! never sees half an entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

/// Where a component came from, for callers who care (benches, `-v` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a cached artifact.
    Hit,
    /// Compiled now (and stored, when a cache is in use).
    Compiled,
}

impl ComponentCache {
    /// Opens (creating if needed) a cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>, engine: &Engine) -> Result<ComponentCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Cache { path: dir.clone(), source })?;
        restrict_to_owner(&dir);
        Ok(ComponentCache { dir, engine_key: engine_key(engine) })
    }

    /// The default location: `$XDG_CACHE_HOME/skillbox/components`.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("skillbox").join("components"))
    }

    /// The directory this cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Loads the artifact for `digest`, or compiles `wasm` and stores it.
    ///
    /// A cache that cannot be read or written only costs a compile: the
    /// failure is logged and the component is compiled as if uncached.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        compile: impl FnOnce() -> Result<Component>,
    ) -> Result<(Component, CacheOutcome)> {
        let entry = self.entry_path(digest);
        if entry.exists() {
            // SAFETY: entries in this directory are written only by `store`
            // below, from `Component::serialize` of an engine with the same
            // compatibility hash (it is part of the file name), and the
            // directory is private to the user. Anyone able to write here
            // could equally replace the skillbox binary.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(entry = %entry.display(), "ignoring unusable cache entry: {e:#}"),
            }
        }
        let component = compile()?;
        if let Err(e) = self.store(&entry, &component) {
            tracing::warn!(entry = %entry.display(), "could not write compile cache: {e:#}");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, entry: &Path, component: &Component) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(entry).map_err(|e| e.error)?;
        Ok(())
    }
}

/// A short stable name for everything about the engine that affects compiled code.
fn engine_key(engine: &Engine) -> String {
    // DefaultHasher::new() uses fixed keys, so the value is stable across
    // runs of the same binary; a new binary at worst recompiles once.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(unix)]
fn restrict_to_owner(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &Path) {}
