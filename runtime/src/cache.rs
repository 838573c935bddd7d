//! On-disk cache of compiled components.
//!
//! Compiling a component costs tens of milliseconds (seconds for large
//! ones); loading a precompiled artifact costs a fraction of one. Entries
//! are keyed by the SHA-256 of the component bytes *and* the engine's
//! compatibility hash (wasmtime version plus every setting that changes
//! generated code), so a different wasmtime or config never loads a stale
//! artifact. Writes go to a temporary file renamed into place, so a reader
//! never sees half an entry.
//!
//! Loading an entry loads native code, so whoever can write the cache can run
//! code as the user. The cache therefore trusts only what the user alone could
//! have written:
//!
//! - the directory is opened once, as a [`cap_std::fs::Dir`] handle, and must be
//!   owned by the effective user and writable by nobody else; otherwise
//!   [`ComponentCache::open`] fails with an error naming the fix (the run stops
//!   rather than silently compiling: a shared cache directory is a
//!   misconfiguration the operator should see). Directories it creates are 0700;
//! - every entry is reached through that handle, by a name built from a
//!   verified hex digest (no `/`, no `..`), never following a symlink, and
//!   must be a regular file owned by the user and writable by nobody else;
//!   an entry that fails is skipped with a warning, the component is compiled
//!   afresh and the entry replaced. Entries are written 0600.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    /// Invariant: the directory `dir` named when it was opened and checked; every entry is
    /// opened relative to it.
    root: Arc<Dir>,
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
    /// Opens (creating it 0700 if needed) a cache in `dir`.
    ///
    /// Refuses a directory owned by another user or writable by group or others, since
    /// whoever can write it can make skillbox load their native code.
    pub fn open(dir: impl Into<PathBuf>, engine: &Engine) -> Result<ComponentCache> {
        let dir = dir.into();
        let fail = |source| Error::Cache { path: dir.clone(), source };
        create_private_dir_all(&dir).map_err(fail)?;
        let root = Dir::open_ambient_dir(&dir, ambient_authority()).map_err(fail)?;
        let meta = root.dir_metadata().map_err(fail)?;
        if let Some(problem) = untrusted(&meta) {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to use this compile cache: the directory {problem}, so someone else could plant \
                     native code in it. Fix it with `chown $(id -u) {dir} && chmod 700 {dir}` (and empty it), or \
                     point SKILLBOX_CACHE_DIR / --cache-dir at a private directory, or run with --no-cache",
                    dir = dir.display()
                ),
            )));
        }
        Ok(ComponentCache { dir, root: Arc::new(root), engine_key: engine_key(engine) })
    }

    /// The default location: `$XDG_CACHE_HOME/skillbox/components`.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("skillbox").join("components"))
    }

    /// The directory this cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry name for `digest`, or `None` when it is not 64 lowercase hex characters (so
    /// a name never holds a separator, `..` or anything else than the digest and engine key).
    fn entry_name(&self, digest: &str) -> Option<String> {
        let hex = digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex.then(|| format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Loads the artifact for `digest`, or compiles `wasm` and stores it.
    ///
    /// A cache entry that cannot be read, is refused, or cannot be written
    /// only costs a compile: the failure is logged and the component is
    /// compiled as if uncached.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        compile: impl FnOnce() -> Result<Component>,
    ) -> Result<(Component, CacheOutcome)> {
        let Some(name) = self.entry_name(digest) else {
            tracing::warn!(digest, "not caching a component whose digest is not a SHA-256 hex string");
            return Ok((compile()?, CacheOutcome::Compiled));
        };
        let entry = self.dir.join(&name);
        match self.read_entry(&name) {
            Ok(None) => {}
            Ok(Some(bytes)) => {
                // SAFETY: the bytes come from a regular file, reached without following a
                // symlink, in a directory owned by this user and writable by nobody else,
                // itself owned by this user and writable by nobody else (checked on the open
                // handles just now). Only `store` below writes such files, from
                // `Component::serialize` of an engine with the same compatibility hash (it is
                // part of the name). Anyone able to write here could equally replace the
                // skillbox binary.
                match unsafe { Component::deserialize(engine, &bytes) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(e) => tracing::warn!(entry = %entry.display(), "ignoring unusable cache entry: {e:#}"),
                }
            }
            Err(e) => tracing::warn!(entry = %entry.display(), "ignoring cache entry: {e}"),
        }
        let component = compile()?;
        if let Err(e) = self.store(&name, &component) {
            tracing::warn!(entry = %entry.display(), "could not write compile cache: {e:#}");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    /// The bytes of entry `name`, `None` when there is none, or why it is refused.
    fn read_entry(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        let refused = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
        let link = match self.root.symlink_metadata(name) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !link.is_file() {
            return Err(refused(
                "it is not a regular file (a symlink, perhaps); it will be replaced by a fresh compile".into(),
            ));
        }
        let mut file = self.root.open(name)?;
        let meta = file.metadata()?;
        if !same_file(&link, &meta) {
            return Err(refused("it was replaced while being opened; compiling afresh".into()));
        }
        if let Some(problem) = untrusted(&meta) {
            return Err(refused(format!(
                "the file {problem}, so it may not be loaded as native code; compiling afresh and replacing it \
                 (check who else can write {})",
                self.dir.display()
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn store(&self, name: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let (tmp, mut file) = self.create_temp(name)?;
        let written = file.write_all(&bytes).and_then(|()| file.sync_all());
        drop(file);
        let renamed = written.and_then(|()| self.root.rename(&tmp, &self.root, name));
        if renamed.is_err() {
            let _ = self.root.remove_file(&tmp);
        }
        renamed
    }

    /// A new, exclusive, 0600 temporary file in the cache directory, named after `name`.
    fn create_temp(&self, name: &str) -> std::io::Result<(String, cap_std::fs::File)> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        cap_std::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut attempt = 0u32;
        loop {
            let tmp = format!(".{name}.{}.{nanos:x}.{attempt}.tmp", std::process::id());
            match self.root.open_with(&tmp, &options) {
                Ok(file) => return Ok((tmp, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
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

/// Creates `dir` and any missing parents, each 0700.
fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether `a` (from `lstat`) and `b` (from the opened handle) are the same file.
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use cap_std::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.is_file() == b.is_file()
    }
}

/// Why a cache directory or entry with metadata `meta` may not be trusted, if it may not:
/// owned by someone other than the effective user, or writable by group or others.
#[cfg(unix)]
fn untrusted(meta: &Metadata) -> Option<String> {
    use cap_std::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if meta.uid() != me {
        Some(format!("is owned by uid {}, not by you (uid {me})", meta.uid()))
    } else if mode & 0o022 != 0 {
        Some(format!("is writable by group or others (mode {mode:04o})"))
    } else {
        None
    }
}

#[cfg(not(unix))]
fn untrusted(_meta: &Metadata) -> Option<String> {
    None
}
