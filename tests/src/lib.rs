//! Shared pieces for skillbox's integration tests: the sample skills' paths
//! (built by `build.rs`) and small helpers to set up runtimes and manifests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use skillbox_runtime::{Runtime, RuntimeConfig};

include!(concat!(env!("OUT_DIR"), "/skills.rs"));

/// A compile cache shared by one test process, in a temporary directory.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir for the compile cache")).path()
}

/// A runtime with a per-process compile cache (so tests never touch the user's).
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir().to_owned()), ..RuntimeConfig::default() })
        .expect("runtime starts")
}

/// Writes `text` as `skill.toml` into a fresh temporary directory.
///
/// `{component:NAME}` in the text is replaced with the absolute path of that
/// sample skill's component, so a test can reuse a real component under a
/// manifest of its own.
pub fn temp_skill(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = text.to_owned();
    for (name, path) in COMPONENTS {
        text = text.replace(&format!("{{component:{name}}}"), path);
    }
    let manifest = dir.path().join("skill.toml");
    std::fs::write(&manifest, text).expect("write skill.toml");
    (dir, manifest)
}

/// Parses JSON text, panicking with the text on failure.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
