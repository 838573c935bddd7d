//! Master-key rotation and backups.
//!
//! Rotation re-wraps the KEKs and the vault secret and replaces the key check
//! and KDF parameters in one transaction; no credential payload is touched.
//! A crash at any point leaves either the old or the new key valid, never a
//! mix: the failpoints below let tests prove that by SIGKILLing the process.

use std::path::Path;

use crate::store::{SqlExt, params};

use crate::audit::NewRow;
use crate::crypto::{self, Key32, Material};
use crate::error::{Error, Result};
use crate::types::AuditAction;
use crate::{Vault, derive_master, kek_ad, meta_get, meta_set, new_kdf, vault_secret_ad, write_kdf};

/// Environment variable naming a failpoint: `key-rotate:<step>` makes master-key
/// rotation print `FAILPOINT <step>` on stderr and hang at that step, so a test
/// can kill the process there. Steps: `before-begin`, `after-first-rewrap`,
/// `before-commit`, `after-commit`.
pub const FAILPOINT_ENV: &str = "SKILLBOX_FAILPOINT";

fn failpoint(step: &str) {
    if let Ok(v) = std::env::var(FAILPOINT_ENV)
        && v.strip_prefix("key-rotate:") == Some(step)
    {
        use std::io::Write;
        let mut err = std::io::stderr();
        let _ = writeln!(err, "FAILPOINT {step}");
        let _ = err.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl Vault {
    /// Replaces the master key with `new`. The KEKs and the vault secret are
    /// re-wrapped and the key check replaced in one transaction; credential
    /// ciphertexts are untouched. Audited as `key-rotate`.
    pub fn rotate_master_key(&self, new: &MasterKeySource, actor: &str) -> Result<()> {
        new.check_new()?;
        let material = new.material()?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        // Both stored KDF settings are read here: the current one (as open does)
        // and the iteration count for new passphrases. Either below the floor
        // means the file was edited: refuse before deriving anything.
        crate::read_kdf(&*inner.conn)?;
        let iterations: u32 = meta_get(&*inner.conn, "pbkdf2_iterations")?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(crypto::DEFAULT_PBKDF2_ITERATIONS);
        crypto::check_iterations("pbkdf2_iterations", iterations)?;
        let kdf = match &material {
            Material::Raw(_) => None,
            Material::Passphrase(_) => Some(new_kdf(iterations)?),
        };
        // PBKDF2 runs here, before any lock is taken in the file.
        let master = material.master_key(kdf.as_ref()).expect("KDF parameters are present for a passphrase");
        let new_keys = derive_master(&master, &self.vault_id);
        drop(master);
        let old_wrap = inner.keys.master_wrap.cipher();
        let new_wrap = new_keys.wrap.cipher();

        failpoint("before-begin");
        let tx = inner.conn.begin()?;
        // Another process may have rotated since we opened: then our old key is stale.
        let current_check = meta_get(&tx, "vault_secret")?.unwrap_or_default();
        let secret = crypto::open(&old_wrap, &vault_secret_ad(&self.vault_id), &current_check)
            .and_then(|b| Key32::from_slice(&b))
            .ok_or_else(|| Error::WrongMasterKey {
                location: self.location.display(),
                tried: inner.keys.source_kind,
                hint: " (the master key was changed by another process since this vault was opened; open it again)"
                    .into(),
            })?;
        let keks: Vec<(String, Vec<u8>)> =
            { tx.query_map("SELECT id, wrapped FROM keys ORDER BY id", params![], |r| Ok((r.get(0)?, r.get(1)?)))? };
        for (i, (id, wrapped)) in keks.iter().enumerate() {
            let kek = crypto::open(&old_wrap, &kek_ad(&self.vault_id, id), wrapped)
                .and_then(|b| Key32::from_slice(&b))
                .ok_or_else(|| Error::Corrupt { what: format!("key-encryption key {id}") })?;
            let rewrapped = crypto::seal(&new_wrap, &kek_ad(&self.vault_id, id), kek.bytes())?;
            tx.execute("UPDATE keys SET wrapped = ?2 WHERE id = ?1", params![id, rewrapped])?;
            if i == 0 {
                failpoint("after-first-rewrap");
            }
        }
        meta_set(&tx, "vault_secret", &crypto::seal(&new_wrap, &vault_secret_ad(&self.vault_id), secret.bytes())?)?;
        meta_set(&tx, "key_check", new_keys.check.bytes())?;
        write_kdf(&tx, kdf.as_ref())?;
        let detail = serde_json::json!({
            "keys_rewrapped": keks.len(),
            "new_source": new.describe(),
            "kdf": if kdf.is_some() { "pbkdf2-hmac-sha256" } else { "none" },
        })
        .to_string();
        self.audit(
            &tx,
            &NewRow {
                action: AuditAction::KeyRotate.as_str(),
                actor,
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        failpoint("before-commit");
        tx.commit_audited()?;
        failpoint("after-commit");
        inner.keys.master_wrap = new_keys.wrap;
        inner.keys.source_kind = new.describe();
        Ok(())
    }

    /// Writes a consistent copy of the vault to `dest` (which must not exist)
    /// with `VACUUM INTO`. The copy is still encrypted and opens with the same
    /// master key. Audited as `backup` (the row is in the copy).
    ///
    /// A PostgreSQL vault is backed up the same way into a new SQLite file: its rows are
    /// copied as they are stored ([`Vault::migrate_to`], audited as `migrate`).
    pub fn backup(&self, dest: &Path, actor: &str) -> Result<()> {
        if self.path().is_none() {
            return self.migrate_to(&crate::Location::Sqlite(dest.to_path_buf()), actor).map(|_| ());
        }
        let dest_str = dest
            .to_str()
            .ok_or_else(|| Error::InvalidInput { what: "backup path", reason: "must be valid UTF-8".into() })?;
        // Created empty, 0600 and exclusively before any byte is written (`VACUUM INTO` fills
        // an empty file), so the copy is never readable by others, not even for a moment, and
        // an existing file (or a symlink planted at the path) is never overwritten.
        let mut create = std::fs::OpenOptions::new();
        create.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
        match create.open(dest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::InvalidInput {
                    what: "backup path",
                    reason: format!("{} already exists; choose a new file name", dest.display()),
                });
            }
            Err(source) => {
                return Err(Error::Io { action: "creating the backup file", path: dest.to_path_buf(), source });
            }
        }
        let inner = self.lock();
        let tx = inner.conn.begin()?;
        let detail = serde_json::json!({ "path": dest_str }).to_string();
        self.audit(
            &tx,
            &NewRow {
                action: AuditAction::Backup.as_str(),
                actor,
                detail: Some(&detail),
                success: true,
                ..Default::default()
            },
        )?;
        tx.commit_audited()?;
        if let Err(e) = inner.conn.execute("VACUUM INTO ?1", [dest_str]) {
            let _ = std::fs::remove_file(dest);
            return Err(e.into());
        }
        Ok(())
    }
}

use crate::crypto::MasterKeySource;
