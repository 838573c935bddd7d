//! A vault file of arbitrary bytes: opening it either fails with an error or yields a vault
//! whose `audit verify` runs to a report; never a panic. Seed the corpus with a real vault
//! (`fuzz/seeds/vault_file/`) so mutations reach past SQLite's header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use skillbox_vault::{MasterKeySource, Vault};

const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vault.db");
    std::fs::write(&path, data).expect("write");
    let source = MasterKeySource::Hex(SecretString::from(KEY.to_owned()));
    if let Ok(vault) = Vault::open(&path, &source) {
        let _ = vault.audit_verify();
        let _ = vault.list(&Default::default());
    }
});
