//! The vault's own files are reached only where their owner put them: a key file or vault path
//! that is a symbolic link, a key file others may read, and a vault whose directory others can
//! write are refused with the fix (issue 8, item 9).

#![cfg(unix)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use skillbox_vault::{Error, InitOptions, MasterKeySource, Vault, generate_key_file};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A private directory holding a fresh key file and a vault keyed by it.
struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    vault: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    generate_key_file(&key).unwrap();
    let vault = dir.path().join("vault.db");
    Vault::init(&vault, &MasterKeySource::KeyFile(key.clone()), &InitOptions::default()).unwrap();
    Setup { dir, key, vault }
}

fn open(vault: &Path, key: &Path) -> Result<Vault, Error> {
    Vault::open(vault, &MasterKeySource::KeyFile(key.to_path_buf()))
}

#[test]
fn a_symlinked_key_file_is_refused_with_its_target_named() {
    let s = setup();
    let link = s.dir.path().join("link.key");
    symlink(&s.key, &link).unwrap();
    let err = open(&s.vault, &link).unwrap_err();
    assert!(matches!(err, Error::InvalidMasterKey { .. }), "{err}");
    let text = err.to_string();
    let target = s.key.canonicalize().unwrap();
    assert!(text.contains("symbolic link") && text.contains(&format!("--key-file {}", target.display())), "{text}");
    // The file itself opens the vault.
    open(&s.vault, &s.key).unwrap();
}

#[test]
fn a_key_file_others_may_read_is_refused_with_chmod_600() {
    let s = setup();
    for mode in [0o640, 0o604, 0o660, 0o602] {
        chmod(&s.key, mode);
        let err = open(&s.vault, &s.key).unwrap_err();
        assert!(matches!(err, Error::KeyFilePermissions { .. }), "{mode:o}: {err}");
        assert!(err.to_string().contains(&format!("chmod 600 {}", s.key.display())), "{err}");
    }
    chmod(&s.key, 0o400);
    open(&s.vault, &s.key).unwrap();
}

#[test]
fn a_key_file_that_is_not_a_regular_file_is_refused() {
    let s = setup();
    let err = open(&s.vault, s.dir.path()).unwrap_err();
    assert!(matches!(err, Error::InvalidMasterKey { .. }), "{err}");
}

#[test]
fn a_symlinked_vault_path_is_refused_for_open_and_init() {
    let s = setup();
    let link = s.dir.path().join("link.db");
    symlink(&s.vault, &link).unwrap();
    let err = open(&link, &s.key).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidInput { what: "vault path", .. }), "{text}");
    assert!(text.contains("symbolic link") && text.contains(&s.vault.canonicalize().unwrap().display().to_string()));

    // A dangling link is not followed to create a vault where it points either.
    let dangling = s.dir.path().join("dangling.db");
    let planted = s.dir.path().join("planted.db");
    symlink(&planted, &dangling).unwrap();
    let err = Vault::init(&dangling, &MasterKeySource::KeyFile(s.key.clone()), &InitOptions::default()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!planted.exists());
}

#[test]
fn a_vault_in_a_directory_every_user_can_write_is_refused() {
    let s = setup();
    for mode in [0o777, 0o1777, 0o703] {
        chmod(s.dir.path(), mode);
        let err = open(&s.vault, &s.key).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::InvalidInput { what: "vault path", .. }), "{mode:o}: {text}");
        assert!(text.contains("writable by every user") && text.contains("chmod o-w"), "{text}");
        let other = s.dir.path().join("other.db");
        let err = Vault::init(&other, &MasterKeySource::KeyFile(s.key.clone()), &InitOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { what: "vault path", .. }), "{mode:o}: {err}");
        assert!(!other.exists());
    }
    chmod(s.dir.path(), 0o700);
    open(&s.vault, &s.key).unwrap();
}

/// Only as root (as in CI containers), since only root can give a directory away.
#[test]
fn a_vault_in_another_users_directory_is_refused() {
    let s = setup();
    const NOBODY: u32 = 65534;
    if std::os::unix::fs::chown(s.dir.path(), Some(NOBODY), None).is_err() {
        eprintln!("skipped: not running as root, cannot chown a directory to another user");
        return;
    }
    let err = open(&s.vault, &s.key).unwrap_err();
    assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
}
