//! Integration tests for the vault: crypto, lifecycle, grants, audit, crash safety.
//!
//! Tests that need a second process re-run this test binary with
//! `CHILD_ENV` set; `child_process_entry` then plays the child's part.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};
use secrecy::ExposeSecret;
use skillbox_vault::*;

mod common;
use common::{Kind, TestStore};

const KEY_A: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const CHILD_ENV: &str = "SKILLBOX_VAULT_TEST_CHILD";
const DIGEST: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn key(h: &str) -> MasterKeySource {
    MasterKeySource::Hex(h.to_string().into())
}

fn new_vault_file(dir: &Path) -> (Vault, PathBuf) {
    let path = dir.join("vault.db");
    (Vault::init(&path, &key(KEY_A), &InitOptions::default()).unwrap(), path)
}

/// A new vault (keyed by `KEY_A`) in `db`.
fn new_vault(db: &TestStore) -> Vault {
    db.init_with(&key(KEY_A))
}

fn cref(name: &str) -> CredentialRef {
    CredentialRef::new(name)
}

fn add_bearer(v: &Vault, name: &str, token: &str) -> CredentialInfo {
    let value = SecretValue::from_single(CredentialKind::Bearer, token).unwrap();
    v.add(&NewCredential::new(cref(name), CredentialKind::Bearer, "github"), &value, "tester").unwrap()
}

fn access(skill: &str, name: &str) -> Access {
    Access {
        skill: skill.into(),
        skill_digest: DIGEST.into(),
        declared_name: name.into(),
        environment: Environment::Dev,
        owner: DEFAULT_OWNER.into(),
        user: "tester".into(),
        purpose: Some("test".into()),
        one_time_approval: None,
        policy: None,
    }
}

fn token_of(v: &SecretValue) -> String {
    v.as_bearer().unwrap().access_token.expose_secret().to_string()
}

/// Bytes of the database and its -wal and -shm files.
fn file_bytes(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| {
            let p = format!("{}{s}", db.display());
            std::fs::read(&p).ok().map(|b| (p, b))
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn assert_absent(db: &Path, needle: &[u8], what: &str) {
    for (p, bytes) in file_bytes(db) {
        assert!(!contains(&bytes, needle), "{what} found in {p}");
    }
}

fn raw(db: &Path) -> Connection {
    Connection::open(db).unwrap()
}

// ---------------------------------------------------------------- values

fn round_trip_of_every_kind(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let cases: &[(CredentialKind, &str)] = &[
        (CredentialKind::ApiKey, r#"{"key":"ak_live_1","secret":"as_2"}"#),
        (
            CredentialKind::Bearer,
            r#"{"access_token":"tok_3","refresh_token":"rt_4","token_endpoint":"https://auth.example.com/token","expires_at":"2031-01-01T00:00:00Z","scopes":["a","b"]}"#,
        ),
        (CredentialKind::OAuth2, r#"{"access_token":"tok_5","scopes":["repo"]}"#),
        (CredentialKind::Basic, r#"{"username":"alice","password":"pw_6"}"#),
        (
            CredentialKind::Database,
            r#"{"driver":"postgres","host":"db.example.com","database":"app","user":"svc","password":"pw_7","ssl":true}"#,
        ),
        (CredentialKind::Database, r#"{"driver":"sqlite","path":"/var/lib/app.db"}"#),
        (CredentialKind::HmacKey, r#"{"key":"hk_8"}"#),
        (CredentialKind::Custom, r#"{"nested":{"token":"c_9"},"list":["c_10"],"n":3}"#),
    ];
    for (i, (kind, json)) in cases.iter().enumerate() {
        let name = format!("cred{i}");
        let value = SecretValue::from_json(*kind, json).unwrap();
        let mut new = NewCredential::new(cref(&name), *kind, "svc");
        new.scopes = vec!["read".into()];
        v.add(&new, &value, "tester").unwrap();
        v.grant(&NewGrant::new("skill", cref(&name)), "tester").unwrap();
        let got = v.resolve(&access("skill", &name)).unwrap().value;
        assert_eq!(got.kind(), *kind);
        // The canonical encoding round-trips exactly.
        let want: serde_json::Value = serde_json::from_str(json).unwrap();
        let back = v.reveal(&cref(&name), "tester", None).unwrap();
        assert_eq!(encode(&back), encode(&value));
        let _ = want;
        assert_eq!(got.secret_fields(), value.secret_fields());
    }
    // Spot-check typed accessors and defaults.
    let db = v.reveal(&cref("cred4"), "t", None).unwrap();
    let Some(Database::Postgres(pg)) = db.as_database() else { panic!("postgres") };
    assert_eq!((pg.host.as_str(), pg.port, pg.ssl), ("db.example.com", 5432, true));
    assert_eq!(pg.password.as_ref().unwrap().expose_secret(), "pw_7");
    let basic = v.reveal(&cref("cred3"), "t", None).unwrap();
    assert_eq!(basic.as_basic().unwrap().username, "alice");
    assert_eq!(basic.secret_fields(), vec![b"pw_6".as_slice()], "user names are not secret fields");
    let api = v.reveal(&cref("cred0"), "t", None).unwrap();
    assert_eq!(api.secret_fields(), vec![b"ak_live_1".as_slice(), b"as_2".as_slice()]);
    let custom = v.reveal(&cref("cred7"), "t", None).unwrap();
    let mut leaves = custom.secret_fields();
    leaves.sort();
    assert_eq!(leaves, vec![b"c_10".as_slice(), b"c_9".as_slice()]);
}

/// Field-by-field comparison through the public accessors.
fn encode(v: &SecretValue) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = v.secret_fields().into_iter().map(|s| s.to_vec()).collect();
    out.push(format!("{:?}", v.kind()).into_bytes());
    if let Some(b) = v.as_basic() {
        out.push(b.username.clone().into_bytes());
    }
    if let Some(t) = v.as_bearer() {
        out.push(format!("{:?}{:?}{:?}", t.token_endpoint, t.expires_at, t.scopes).into_bytes());
    }
    if let Some(Database::Sqlite { path }) = v.as_database() {
        out.push(path.clone().into_bytes());
    }
    out
}

#[test]
fn single_secret_kinds_and_validation_never_echo_values() {
    assert!(SecretValue::from_single(CredentialKind::ApiKey, "k").is_ok());
    assert!(SecretValue::from_single(CredentialKind::HmacKey, "k").is_ok());
    let e = SecretValue::from_single(CredentialKind::Basic, "hunter2-secret").unwrap_err().to_string();
    assert!(e.contains("JSON object") && !e.contains("hunter2"), "{e}");
    let e = SecretValue::from_single(CredentialKind::Bearer, "tok\nInjected: 1").unwrap_err().to_string();
    assert!(e.contains("access_token") && !e.contains("Injected"), "{e}");
    let cases = [
        (
            CredentialKind::Database,
            r#"{"driver":"postgres","host":"h","database":"d","user":"u","port":"s3cr3t-port"}"#,
            "port",
        ),
        (CredentialKind::Basic, r#"{"username":"u"}"#, "password"),
        (CredentialKind::Basic, r#"{"username":"u","password":"s3cr3t-pw","extra":"s3cr3t-x"}"#, "extra"),
        (CredentialKind::ApiKey, r#"{"key":""}"#, "key"),
        (CredentialKind::Bearer, r#"{"access_token":"s3cr3t","token_endpoint":"ftp://s3cr3t"}"#, "token_endpoint"),
        (CredentialKind::Database, r#"{"driver":"mysql"}"#, "driver"),
        (CredentialKind::Custom, r#"["s3cr3t"]"#, "(document)"),
        (CredentialKind::HmacKey, r#"{"key": "s3cr3t" "#, "(document)"),
    ];
    for (kind, json, field) in cases {
        let e = SecretValue::from_json(kind, json).unwrap_err().to_string();
        assert!(e.contains(field), "{e} should name {field}");
        assert!(!e.contains("s3cr3t"), "{e} echoes a value");
    }
}

fn list_show_and_debug_never_print_a_value(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let canary = "CANARY-list-show-4f9a";
    add_bearer(&v, "gh", canary);
    let value = SecretValue::from_single(CredentialKind::Bearer, canary).unwrap();
    let listed = v.list(&ListFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    let shown = v.show(&cref("gh")).unwrap();
    for text in [
        format!("{listed:?}"),
        serde_json::to_string(&listed).unwrap(),
        format!("{shown:?}"),
        serde_json::to_string(&shown).unwrap(),
        format!("{value:?}"),
        format!("{:?}", key(KEY_A)),
        format!("{v:?}"),
    ] {
        assert!(!text.contains(canary), "value printed: {text}");
        assert!(!text.contains(KEY_A), "master key printed: {text}");
    }
    assert!(shown.info.fingerprint.starts_with('…') && shown.info.fingerprint.chars().count() == 5);
}

// ---------------------------------------------------------------- tampering

fn flip_all(db: &Path, table: &str, col: &str, where_: &str, mut check: impl FnMut(usize)) {
    let c = raw(db);
    let orig: Vec<u8> = c.query_row(&format!("SELECT {col} FROM {table} WHERE {where_}"), [], |r| r.get(0)).unwrap();
    assert!(orig.len() >= 12 + 16);
    for i in 0..orig.len() {
        let mut bad = orig.clone();
        bad[i] ^= 0x01;
        c.execute(&format!("UPDATE {table} SET {col} = ?1 WHERE {where_}"), [&bad]).unwrap();
        check(i);
    }
    c.execute(&format!("UPDATE {table} SET {col} = ?1 WHERE {where_}"), [&orig]).unwrap();
}

#[test]
fn flipping_any_byte_of_nonce_ciphertext_tag_or_wrapped_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    let info = add_bearer(&v, "gh", "tok-flip");
    let w = format!("credential_id = '{}' AND version = 1", info.id);
    for col in ["ciphertext", "wrapped_dek"] {
        flip_all(&db, "versions", col, &w, |i| {
            let e = v.reveal(&cref("gh"), "t", None).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{col} byte {i}: {e}");
        });
    }
    // KEKs are cached once unwrapped, so check each flip with a fresh open.
    let kek: String = raw(&db).query_row("SELECT id FROM keys", [], |r| r.get(0)).unwrap();
    flip_all(&db, "keys", "wrapped", &format!("id = '{kek}'"), |i| {
        let v2 = Vault::open(&db, &key(KEY_A)).unwrap();
        let e = v2.reveal(&cref("gh"), "t", None).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "kek byte {i}: {e}");
    });
    // The wrapped vault secret.
    flip_all(&db, "meta", "value", "key = 'vault_secret'", |i| {
        let e = Vault::open(&db, &key(KEY_A)).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "vault secret byte {i}: {e}");
    });
    // Everything restored: it opens again.
    assert_eq!(token_of(&Vault::open(&db, &key(KEY_A)).unwrap().reveal(&cref("gh"), "t", None).unwrap()), "tok-flip");
}

#[test]
fn ciphertext_moved_to_another_credential_version_or_vault_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    let a = add_bearer(&v, "a", "tok-a");
    let b = add_bearer(&v, "b", "tok-b");
    let c = raw(&db);
    let copy = |from_id: &str, from_ver: u32, to_id: &str, to_ver: u32| {
        c.execute(
            "UPDATE versions SET (wrapped_dek, ciphertext, key_id) = \
             (SELECT wrapped_dek, ciphertext, key_id FROM versions WHERE credential_id = ?1 AND version = ?2) \
             WHERE credential_id = ?3 AND version = ?4",
            params![from_id, from_ver, to_id, to_ver],
        )
        .unwrap();
    };
    // Another credential.
    copy(&a.id, 1, &b.id, 1);
    assert!(matches!(v.reveal(&cref("b"), "t", None), Err(Error::Corrupt { .. })));
    // Another version of the same credential.
    v.rotate(&cref("a"), &SecretValue::from_single(CredentialKind::Bearer, "tok-a2").unwrap(), "t").unwrap();
    assert_eq!(token_of(&v.reveal(&cref("a"), "t", None).unwrap()), "tok-a2");
    copy(&a.id, 1, &a.id, 2);
    assert!(matches!(v.reveal(&cref("a"), "t", None), Err(Error::Corrupt { .. })));

    // Another vault with the same master key and a credential forced to the same id.
    let db2 = dir.path().join("other.db");
    let v2 = Vault::init(&db2, &key(KEY_A), &InitOptions::default()).unwrap();
    let x = add_bearer(&v2, "x", "tok-x");
    drop(v2);
    let c2 = raw(&db2);
    c2.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let (wd, ct): (Vec<u8>, Vec<u8>) = c
        .query_row(
            "SELECT wrapped_dek, ciphertext FROM versions WHERE credential_id = ?1 AND version = 2",
            [&a.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Even with the KEK row copied too, the vault id in the associated data differs.
    let (kid, kw): (String, Vec<u8>) =
        c.query_row("SELECT id, wrapped FROM keys", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    c2.execute("UPDATE credentials SET id = ?1 WHERE id = ?2", params![a.id, x.id]).unwrap();
    c2.execute(
        "INSERT OR REPLACE INTO keys (id, wrapped, status, created_at) VALUES (?1, ?2, 'retired', 0)",
        params![kid, kw],
    )
    .unwrap();
    c2.execute(
        "UPDATE versions SET credential_id = ?1, wrapped_dek = ?2, ciphertext = ?3, key_id = ?4 WHERE credential_id = ?5",
        params![a.id, wd, ct, kid, x.id],
    )
    .unwrap();
    let v2 = Vault::open(&db2, &key(KEY_A)).unwrap();
    // The rewritten records now fail their MACs first (schema 3); the AEAD would refuse them too.
    assert!(matches!(v2.reveal(&cref("x"), "t", None), Err(Error::Tampered { .. } | Error::Corrupt { .. })));
}

#[test]
fn wrong_master_key_or_passphrase_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    add_bearer(&v, "gh", "tok");
    drop(v);
    let before = file_bytes(&db);
    let e = Vault::open(&db, &key(KEY_B)).unwrap_err();
    assert!(matches!(e, Error::WrongMasterKey { .. }), "{e}");
    let msg = e.to_string();
    for src in ["SKILLBOX_MASTER_KEY", "SKILLBOX_KEY_FILE", "SKILLBOX_PASSPHRASE", "Nothing was changed"] {
        assert!(msg.contains(src), "{msg} should mention {src}");
    }
    assert!(!msg.contains(KEY_B) && !msg.contains(KEY_A));
    let e = Vault::open(&db, &MasterKeySource::Passphrase("guess".to_string().into())).unwrap_err();
    assert!(e.to_string().contains("raw key"), "{e}");
    assert_eq!(file_bytes(&db), before, "a wrong key changed the files");

    // A passphrase vault (full PBKDF2 cost: a weaker vault does not open).
    let pdb = dir.path().join("p.db");
    let opts = InitOptions::default();
    let pass = MasterKeySource::Passphrase("correct horse".to_string().into());
    let pv = Vault::init(&pdb, &pass, &opts).unwrap();
    add_bearer(&pv, "gh", "tok-p");
    drop(pv);
    let before = file_bytes(&pdb);
    let e = Vault::open(&pdb, &MasterKeySource::Passphrase("wrong horse".to_string().into())).unwrap_err();
    assert!(matches!(e, Error::WrongMasterKey { .. }) && e.to_string().contains("a passphrase"), "{e}");
    let e = Vault::open(&pdb, &key(KEY_A)).unwrap_err();
    assert!(e.to_string().contains("created with a passphrase"), "{e}");
    assert_eq!(file_bytes(&pdb), before);
    let pv = Vault::open(&pdb, &pass).unwrap();
    assert_eq!(token_of(&pv.reveal(&cref("gh"), "t", None).unwrap()), "tok-p");
}

#[test]
fn default_kdf_is_pbkdf2_with_at_least_600k_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let pass = MasterKeySource::Passphrase("a passphrase".to_string().into());
    drop(Vault::init(&db, &pass, &InitOptions::default()).unwrap());
    let c = raw(&db);
    let get = |k: &str| -> Vec<u8> { c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0)).unwrap() };
    assert_eq!(get("kdf"), b"pbkdf2-hmac-sha256");
    assert!(String::from_utf8(get("kdf_iterations")).unwrap().parse::<u32>().unwrap() >= 600_000);
    assert!(get("kdf_salt").len() >= 16);
}

fn set_meta(db: &Path, key: &str, value: &[u8]) {
    raw(db).execute("UPDATE meta SET value = ?2 WHERE key = ?1", params![key, value]).unwrap();
}

#[test]
fn kdf_parameters_below_the_floor_are_refused_at_open_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let pass = MasterKeySource::Passphrase("a passphrase".to_string().into());
    let v = Vault::init(&db, &pass, &InitOptions::default()).unwrap();
    add_bearer(&v, "gh", "tok-kdf");
    drop(v);
    let check = |e: Error| {
        assert!(matches!(e, Error::KdfWeakened { found: 1, minimum: 600_000, .. }), "{e}");
        let m = e.to_string();
        for part in ["key-derivation parameters were weakened", "editing the vault file", "skillbox audit verify"] {
            assert!(m.contains(part), "{m} should say {part}");
        }
        assert!(!m.contains("a passphrase\""));
    };

    // Open: the stored iteration count is checked before PBKDF2 runs; nothing changes.
    set_meta(&db, "kdf_iterations", b"1");
    let before = file_bytes(&db);
    check(Vault::open(&db, &pass).unwrap_err());
    assert_eq!(file_bytes(&db), before);
    set_meta(&db, "kdf_iterations", b"600000");
    let v = Vault::open(&db, &pass).unwrap();

    // Rotate: the iteration count for the new passphrase, and the current one, are checked too.
    let new = MasterKeySource::Passphrase("another passphrase".to_string().into());
    set_meta(&db, "pbkdf2_iterations", b"1");
    check(v.rotate_master_key(&new, "t").unwrap_err());
    check(v.rotate_master_key(&key(KEY_B), "t").unwrap_err());
    set_meta(&db, "pbkdf2_iterations", b"600000");
    set_meta(&db, "kdf_iterations", b"1");
    check(v.rotate_master_key(&key(KEY_B), "t").unwrap_err());
    set_meta(&db, "kdf_iterations", b"600000");
    assert_eq!(audit_count(&v, AuditAction::KeyRotate), 0);
    v.rotate_master_key(&new, "t").unwrap();
    drop(v);
    let v = Vault::open(&db, &new).unwrap();
    assert_eq!(token_of(&v.reveal(&cref("gh"), "t", None).unwrap()), "tok-kdf");

    // The test-only knob makes a vault that does not open either.
    let weak = dir.path().join("weak.db");
    drop(Vault::init(&weak, &pass, &InitOptions::default().insecure_pbkdf2_iterations_for_tests(1)).unwrap());
    check(Vault::open(&weak, &pass).unwrap_err());
}

#[test]
fn a_new_passphrase_shorter_than_the_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = MasterKeySource::Passphrase("elevenchars".to_string().into());
    let e = Vault::init(&dir.path().join("s.db"), &short, &InitOptions::default()).unwrap_err();
    assert!(e.to_string().contains("use a passphrase of at least 12 characters"), "{e}");
    assert!(!e.to_string().contains("elevenchars"));
    assert!(!dir.path().join("s.db").exists());
    let (v, _) = new_vault_file(dir.path());
    let e = v.rotate_master_key(&short, "t").unwrap_err();
    assert!(e.to_string().contains("use a passphrase of at least 12 characters"), "{e}");
    assert!(check_new_passphrase("twelve chars").is_ok());
}

#[cfg(unix)]
#[test]
fn key_file_must_be_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kf = dir.path().join("master.key");
    generate_key_file(&kf).unwrap();
    assert_eq!(std::fs::metadata(&kf).unwrap().permissions().mode() & 0o777, 0o600);
    let db = dir.path().join("v.db");
    drop(Vault::init(&db, &MasterKeySource::KeyFile(kf.clone()), &InitOptions::default()).unwrap());
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Vault::open(&db, &MasterKeySource::KeyFile(kf.clone())).unwrap_err();
    assert!(matches!(e, Error::KeyFilePermissions { .. }) && e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o400)).unwrap();
    Vault::open(&db, &MasterKeySource::KeyFile(kf)).unwrap();
}

#[test]
fn canary_and_master_key_never_reach_the_files_and_delete_erases_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    let canary = "CANARY-7c1e0b5d9f3a-secret";
    let canary2 = "CANARY-2b8d4e6f0a1c-rotated";
    let key_bytes = hex::decode(KEY_A).unwrap();
    let check = |stage: &str| {
        for (needle, what) in [
            (canary.as_bytes(), "canary"),
            (canary2.as_bytes(), "rotated canary"),
            (&key_bytes[..], "master key bytes"),
            (KEY_A.as_bytes(), "master key hex"),
        ] {
            assert_absent(&db, needle, &format!("{what} after {stage}"));
        }
    };
    let info = add_bearer(&v, "canary", canary);
    v.grant(&NewGrant::new("skill", cref("canary")), "t").unwrap();
    assert_eq!(token_of(&v.resolve(&access("skill", "canary")).unwrap().value), canary);
    check("add");
    v.rotate(&cref("canary"), &SecretValue::from_single(CredentialKind::Bearer, canary2).unwrap(), "t").unwrap();
    check("rotate");
    v.revoke(&cref("canary"), "leaked in a test", "t").unwrap();
    check("revoke");
    let blobs: Vec<Vec<u8>> = {
        let c = raw(&db);
        let mut s = c.prepare("SELECT ciphertext FROM versions WHERE credential_id = ?1").unwrap();
        s.query_map([&info.id], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(blobs.len(), 2);
    v.delete(&cref("canary"), "t").unwrap();
    check("delete");
    for (i, ct) in blobs.iter().enumerate() {
        // Skip the 12-byte nonce: look for the ciphertext body itself.
        assert_absent(&db, &ct[12..], &format!("ciphertext of version {} after delete", i + 1));
    }
    // The audit log never holds a value either.
    let mut out = Vec::new();
    v.audit_export(&AuditQuery::default(), &mut out).unwrap();
    assert!(!contains(&out, canary.as_bytes()) && !contains(&out, canary2.as_bytes()));
}

// ---------------------------------------------------------------- lifecycle

fn rotation_keeps_history_to_the_configured_depth(kind: Kind) {
    let db = TestStore::new(kind);
    let v = Vault::init_at(&db.location, &key(KEY_A), &InitOptions::default().with_history_depth(3)).unwrap();
    add_bearer(&v, "gh", "tok-1");
    for i in 2..=6 {
        let info = v
            .rotate(&cref("gh"), &SecretValue::from_single(CredentialKind::Bearer, &format!("tok-{i}")).unwrap(), "t")
            .unwrap();
        assert_eq!(info.version, i);
    }
    let d = v.show(&cref("gh")).unwrap();
    let vers: Vec<(u32, Status)> = d.versions.iter().map(|x| (x.version, x.status)).collect();
    assert_eq!(vers, vec![(6, Status::Active), (5, Status::Rotated), (4, Status::Rotated)]);
    assert!(d.info.last_rotated_at.is_some());
    assert_eq!(token_of(&v.reveal(&cref("gh"), "t", None).unwrap()), "tok-6");
    assert_eq!(db.i64("SELECT count(*) FROM versions"), 3, "old ciphertext is hard-deleted");
}

fn identity_is_owner_environment_name_and_filters_work(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let val = SecretValue::from_single(CredentialKind::ApiKey, "k").unwrap();
    for (owner, env) in
        [("default", Environment::Dev), ("default", Environment::Production), ("acme", Environment::Dev)]
    {
        let r = cref("stripe").owner(owner).env(env);
        v.add(&NewCredential::new(r, CredentialKind::ApiKey, "stripe"), &val, "t").unwrap();
    }
    let e = v.add(&NewCredential::new(cref("stripe"), CredentialKind::ApiKey, "stripe"), &val, "t").unwrap_err();
    assert!(matches!(e, Error::CredentialExists { .. }), "{e}");
    let f = |f: ListFilter| v.list(&f).unwrap().len();
    assert_eq!(f(ListFilter::default()), 3);
    assert_eq!(f(ListFilter { environment: Some(Environment::Production), ..Default::default() }), 1);
    assert_eq!(f(ListFilter { owner: Some("acme".into()), ..Default::default() }), 1);
    assert_eq!(f(ListFilter { kind: Some(CredentialKind::Bearer), ..Default::default() }), 0);
    v.revoke(&cref("stripe").owner("acme"), "gone", "t").unwrap();
    assert_eq!(f(ListFilter { status: Some(Status::Revoked), ..Default::default() }), 1);
    assert_eq!(f(ListFilter { service: Some("stripe".into()), ..Default::default() }), 3);
}

// ---------------------------------------------------------------- grants and resolve

fn resolve_enforces_grants_expiry_revocation_and_digest_pinning_and_audits_every_outcome(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh");

    // Default deny, with the exact command in the message.
    let e = v.resolve(&access("triage", "gh")).unwrap_err();
    assert!(matches!(e, Error::NotGranted { .. }) && e.is_denied());
    assert!(e.to_string().contains("skillbox grant triage gh --env dev"), "{e}");

    // Grant: first use pins the digest (audited), then the same digest works.
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    let r = v.resolve(&access("triage", "gh")).unwrap();
    assert_eq!(token_of(&r.value), "tok-gh");
    assert_eq!(r.grant.as_ref().unwrap().skill_digest.as_deref(), Some(DIGEST));
    v.resolve(&access("triage", "gh")).unwrap();

    // A changed component is refused and both digests are shown.
    let other = "2222222222222222222222222222222222222222222222222222222222222222";
    let mut a = access("triage", "gh");
    a.skill_digest = other.into();
    let e = v.resolve(&a).unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(e, Error::DigestMismatch { .. })
            && m.contains(DIGEST)
            && m.contains(other)
            && m.contains("skillbox grant")
    );
    // any_digest grants do not pin.
    let mut g = NewGrant::new("triage", cref("gh"));
    g.any_digest = true;
    v.grant(&g, "admin").unwrap();
    v.resolve(&a).unwrap();

    // Alias: the skill's declared name differs from the credential's.
    let mut g = NewGrant::new("other", cref("gh"));
    g.alias = Some("github".into());
    g.hosts = Some(vec!["api.github.com".into()]);
    g.access = AccessLevel::Read;
    v.grant(&g, "admin").unwrap();
    let r = v.resolve(&access("other", "github")).unwrap();
    assert_eq!(r.grant.unwrap().hosts, Some(vec!["api.github.com".to_string()]));
    assert!(matches!(v.resolve(&access("other", "gh")), Err(Error::NotGranted { .. })));

    // Expired grant.
    let mut g = NewGrant::new("late", cref("gh"));
    g.expires_at = Some(SystemTime::now() - Duration::from_secs(60));
    v.grant(&g, "admin").unwrap();
    assert!(matches!(v.resolve(&access("late", "gh")), Err(Error::GrantExpired { .. })));

    // Expired credential.
    let mut n = NewCredential::new(cref("old"), CredentialKind::Bearer, "svc");
    n.expires_at = Some(SystemTime::now() - Duration::from_secs(1));
    v.add(&n, &SecretValue::from_single(CredentialKind::Bearer, "tok-old").unwrap(), "t").unwrap();
    v.grant(&NewGrant::new("triage", cref("old")), "admin").unwrap();
    assert!(matches!(v.resolve(&access("triage", "old")), Err(Error::Expired { .. })));

    // Revoked: immediate.
    v.revoke(&cref("gh"), "leaked", "admin").unwrap();
    let e = v.resolve(&access("triage", "gh")).unwrap_err();
    assert!(matches!(e, Error::Revoked { .. }) && e.to_string().contains("leaked"));
    // Rotating a revoked credential puts it back in service.
    v.rotate(&cref("gh"), &SecretValue::from_single(CredentialKind::Bearer, "tok-new").unwrap(), "admin").unwrap();
    assert_eq!(token_of(&v.resolve(&access("triage", "gh")).unwrap().value), "tok-new");

    // One-time approval skips the grant check and says so in the audit row.
    add_bearer(&v, "ungranted", "tok-u");
    let mut a = access("nobody", "ungranted");
    a.one_time_approval = Some("carol".into());
    assert!(v.resolve(&a).unwrap().grant.is_none());
    a.declared_name = "missing".into();
    assert!(matches!(v.resolve(&a), Err(Error::NotFound { .. })));

    // Ungrant.
    v.ungrant("other", "github", Environment::Dev, DEFAULT_OWNER, "admin").unwrap();
    assert!(matches!(v.resolve(&access("other", "github")), Err(Error::NotGranted { .. })));
    assert!(matches!(
        v.ungrant("other", "github", Environment::Dev, DEFAULT_OWNER, "admin"),
        Err(Error::GrantNotFound { .. })
    ));

    // Every outcome above is in the log, successes and denials alike.
    let rows = v.audit_list(&AuditQuery::default()).unwrap();
    let count = |action: AuditAction, ok: bool| rows.iter().filter(|r| r.action == action && r.success == ok).count();
    assert_eq!(count(AuditAction::Pin, true), 2, "triage/gh and other/github were pinned");
    assert_eq!(count(AuditAction::Read, true), 6);
    assert_eq!(count(AuditAction::Denied, false), 8);
    let once = rows.iter().find(|r| r.detail.get("approved_once_by") == Some(&serde_json::json!("carol"))).unwrap();
    assert_eq!(once.action, AuditAction::Read);
    let denied = rows.iter().find(|r| r.action == AuditAction::Denied && r.skill.as_deref() == Some("late")).unwrap();
    assert!(denied.error.as_deref().unwrap().contains("expired"));
    assert!(v.audit_verify().unwrap().is_ok());
    let s = v.audit_summary(&AuditQuery::default()).unwrap();
    assert_eq!(s.total as usize, rows.len());
    assert_eq!(s.failures as usize, rows.iter().filter(|r| !r.success).count());
    assert_eq!(s.by_action["denied"], 8);
    assert!(s.by_skill["triage"] > 0 && s.by_credential["gh"] > 0);
}

fn record_appends_host_side_events(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok");
    let mut ev = AuditEvent::new(AuditAction::Use, "alice");
    ev.skill = Some("triage".into());
    ev.credential = Some(cref("gh"));
    ev.detail = serde_json::json!({ "operation": "http", "target": "api.github.com", "duration_ms": 12 });
    v.record(&ev).unwrap();
    let mut ev = AuditEvent::new(AuditAction::Denied, "alice");
    ev.success = false;
    ev.error = Some("host evil.example not allowed".into());
    v.record(&ev).unwrap();
    assert!(matches!(v.record(&AuditEvent::new(AuditAction::Grant, "x")), Err(Error::InvalidInput { .. })));
    let uses = v.audit_list(&AuditQuery { action: Some(AuditAction::Use), ..Default::default() }).unwrap();
    assert_eq!(uses.len(), 1);
    assert!(uses[0].credential_id.is_some());
    assert_eq!(uses[0].detail["target"], "api.github.com");
    let by_skill = v.audit_list(&AuditQuery { skill: Some("triage".into()), ..Default::default() }).unwrap();
    assert_eq!(by_skill.len(), 1);
    let last = v.audit_list(&AuditQuery { limit: Some(1), ..Default::default() }).unwrap();
    assert_eq!(last[0].action, AuditAction::Denied);
    let future =
        v.audit_list(&AuditQuery { since: Some(SystemTime::now() + Duration::from_secs(60)), ..Default::default() });
    assert!(future.unwrap().is_empty());
    assert!(v.audit_verify().unwrap().is_ok());
}

#[test]
fn audit_write_failure_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    add_bearer(&v, "gh", "tok-fail-closed");
    v.grant(&NewGrant::new("triage", cref("gh")), "t").unwrap();
    raw(&db)
        .execute_batch(
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;",
        )
        .unwrap();
    let e = v.resolve(&access("triage", "gh")).unwrap_err();
    assert!(matches!(e, Error::Audit { .. }), "{e}");
    assert!(e.to_string().contains("no secret was released"));
    assert!(matches!(v.reveal(&cref("gh"), "t", None), Err(Error::Audit { .. })));
    // The digest pin attempted in the failed transaction was rolled back too.
    assert!(v.grants(&GrantFilter::default()).unwrap()[0].skill_digest.is_none());
    raw(&db).execute_batch("DROP TRIGGER no_audit").unwrap();
    assert_eq!(token_of(&v.resolve(&access("triage", "gh")).unwrap().value), "tok-fail-closed");
    assert!(v.audit_verify().unwrap().is_ok());
}

// ---------------------------------------------------------------- tripwires and suspension

const OTHER_DIGEST: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A tripwire as the runtime reports it: component `digest` of `skill` tried to
/// return the credential `cred` in its output.
fn tripwire(skill: &str, digest: &str, cred: CredentialRef) -> AuditEvent {
    let mut ev = AuditEvent::new(AuditAction::Tripwire, "tester");
    ev.skill = Some(skill.into());
    ev.credential = Some(cred);
    ev.detail = serde_json::json!({ "digest": digest, "channel": "output", "view": "raw", "rule": "exact" });
    ev.success = false;
    ev.error = Some("the skill tried to return a secret; the invocation was ended".into());
    ev
}

fn pinned_grant(skill: &str, cred: CredentialRef, digest: &str) -> NewGrant {
    let mut g = NewGrant::new(skill, cred);
    g.skill_digest = Some(digest.into());
    g
}

fn audit_count(v: &Vault, action: AuditAction) -> usize {
    v.audit_list(&AuditQuery { action: Some(action), ..Default::default() }).unwrap().len()
}

fn tripwires_suspend_the_skills_grants_at_the_threshold(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh-tripwire");
    let prod = cref("db").env(Environment::Production).owner("acme");
    v.add(
        &NewCredential::new(prod.clone(), CredentialKind::ApiKey, "db"),
        &SecretValue::from_single(CredentialKind::ApiKey, "key-db-tripwire").unwrap(),
        "t",
    )
    .unwrap();
    add_bearer(&v, "pinned-elsewhere", "tok-elsewhere");
    add_bearer(&v, "unpinned", "tok-unpinned");
    // The component that misbehaves can use: gh (pinned to it), db in another
    // environment and owner (any digest), unpinned (pinned on first use).
    v.grant(&pinned_grant("triage", cref("gh"), DIGEST), "admin").unwrap();
    let mut any = NewGrant::new("triage", prod.clone());
    any.any_digest = true;
    v.grant(&any, "admin").unwrap();
    v.grant(&NewGrant::new("triage", cref("unpinned")), "admin").unwrap();
    // It cannot use these: another component's pin, another skill.
    v.grant(&pinned_grant("triage", cref("pinned-elsewhere"), OTHER_DIGEST), "admin").unwrap();
    v.grant(&pinned_grant("other", cref("gh"), DIGEST), "admin").unwrap();

    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 3, DAY).unwrap();
    assert_eq!((out.count, out.suspended.len()), (1, 0));
    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 3, DAY).unwrap();
    assert_eq!((out.count, out.suspended.len()), (2, 0));
    // Another component of the same skill, and another skill with the same
    // digest, count on their own.
    let out = v.record_tripwire(&tripwire("triage", OTHER_DIGEST, cref("gh")), 3, DAY).unwrap();
    assert_eq!((out.count, out.suspended.len()), (1, 0));
    let out = v.record_tripwire(&tripwire("other", DIGEST, cref("gh")), 3, DAY).unwrap();
    assert_eq!((out.count, out.suspended.len()), (1, 0));
    // A tripwire appended without the threshold check still counts.
    v.record(&tripwire("triage", DIGEST, cref("gh"))).unwrap();
    assert!(v.grants(&GrantFilter::default()).unwrap().iter().all(|g| g.status == GrantStatus::Active));

    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 3, DAY).unwrap();
    assert_eq!(out.count, 4);
    let mut names: Vec<&str> = out.suspended.iter().map(|g| g.credential_name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["db", "gh", "unpinned"]);
    for g in &out.suspended {
        assert_eq!(g.status, GrantStatus::Suspended);
        assert!(g.suspended_at.is_some());
        assert_eq!(g.suspended_reason.as_deref(), Some("4 tripwires within 24h by component 111111111111"));
    }
    let suspended = v.grants(&GrantFilter { status: Some(GrantStatus::Suspended), ..Default::default() }).unwrap();
    assert_eq!(suspended.len(), 3);
    assert!(suspended.iter().all(|g| g.skill == "triage"));
    let active = v.grants(&GrantFilter { status: Some(GrantStatus::Active), ..Default::default() }).unwrap();
    let mut active: Vec<(&str, &str)> = active.iter().map(|g| (g.skill.as_str(), g.alias.as_str())).collect();
    active.sort();
    assert_eq!(active, [("other", "gh"), ("triage", "pinned-elsewhere")]);

    // One `suspend` row per grant, about that grant's credential; a later
    // tripwire does not suspend (or audit) them again.
    let rows = v.audit_list(&AuditQuery { action: Some(AuditAction::Suspend), ..Default::default() }).unwrap();
    assert_eq!(rows.len(), 3);
    let db_row = rows.iter().find(|r| r.credential_name.as_deref() == Some("db")).unwrap();
    assert_eq!(db_row.environment, Some(Environment::Production));
    assert_eq!(db_row.owner.as_deref(), Some("acme"));
    assert!(db_row.credential_id.is_some());
    assert_eq!(db_row.detail["digest"], DIGEST);
    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 3, DAY).unwrap();
    assert_eq!((out.count, out.suspended.len()), (5, 0));
    assert_eq!(audit_count(&v, AuditAction::Suspend), 3);
    assert_eq!(audit_count(&v, AuditAction::Tripwire), 7);
    let trip = v.audit_list(&AuditQuery { action: Some(AuditAction::Tripwire), limit: Some(1), ..Default::default() });
    let trip = &trip.unwrap()[0];
    assert_eq!((trip.credential_name.as_deref(), trip.success), (Some("gh"), false));
    assert!(trip.credential_id.is_some());
    assert_eq!(trip.detail["channel"], "output");
    assert!(v.audit_verify().unwrap().is_ok());

    // Malformed events are refused and write nothing.
    let before = v.audit_verify().unwrap().rows;
    let mut wrong = tripwire("triage", DIGEST, cref("gh"));
    wrong.action = AuditAction::Use;
    assert!(matches!(v.record_tripwire(&wrong, 3, DAY), Err(Error::InvalidInput { .. })));
    let mut no_digest = tripwire("triage", DIGEST, cref("gh"));
    no_digest.detail = serde_json::json!({ "channel": "log" });
    let e = v.record_tripwire(&no_digest, 3, DAY).unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }) && e.to_string().contains("digest"), "{e}");
    let mut no_skill = tripwire("triage", DIGEST, cref("gh"));
    no_skill.skill = None;
    assert!(matches!(v.record_tripwire(&no_skill, 3, DAY), Err(Error::InvalidInput { .. })));
    assert!(matches!(v.record_tripwire(&tripwire("t", "abc", cref("gh")), 3, DAY), Err(Error::InvalidInput { .. })));
    assert!(matches!(
        v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 0, DAY),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(v.audit_verify().unwrap().rows, before);
}

fn tripwires_outside_the_window_do_not_count(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh-window");
    v.grant(&pinned_grant("triage", cref("gh"), DIGEST), "admin").unwrap();
    let window = Duration::from_millis(400);
    assert_eq!(v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 2, window).unwrap().count, 1);
    std::thread::sleep(Duration::from_millis(600));
    // Other rows in between do not stop the scan early.
    add_bearer(&v, "noise", "tok-noise");
    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 2, window).unwrap();
    assert_eq!((out.count, out.suspended.len()), (1, 0), "the first tripwire is outside the window");
    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 2, window).unwrap();
    assert_eq!((out.count, out.suspended.len()), (2, 1));
    assert_eq!(
        out.suspended[0].suspended_reason.as_deref(),
        Some("2 tripwires within 400ms by component 111111111111")
    );
    assert!(v.audit_verify().unwrap().is_ok());
}

fn a_suspended_grant_is_refused_and_audited_and_granting_again_re_enables_it(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh-suspended");
    let prod = cref("gh").env(Environment::Production);
    add_bearer_in(&v, prod.clone(), "tok-gh-prod-suspended");
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    let mut aliased = NewGrant::new("triage", prod.clone());
    aliased.alias = Some("github".into());
    v.grant(&aliased, "admin").unwrap();
    v.resolve(&access("triage", "gh")).unwrap();

    let out = v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 1, DAY).unwrap();
    assert_eq!(out.suspended.len(), 2);

    let e = v.resolve(&access("triage", "gh")).unwrap_err();
    assert!(matches!(e, Error::Suspended { .. }) && e.is_denied(), "{e}");
    let m = e.to_string();
    assert!(m.contains("1 tripwire within 24h by component 111111111111"), "{m}");
    assert!(m.contains("`skillbox grant triage gh`"), "{m}");
    let mut a = access("triage", "github");
    a.environment = Environment::Production;
    let m = v.resolve(&a).unwrap_err().to_string();
    assert!(m.contains("`skillbox grant triage gh --env production --as github`"), "{m}");
    // The command keeps the grant's options, so re-enabling does not widen it.
    let mut narrow = NewGrant::new("narrow", prod.clone());
    narrow.hosts = Some(vec!["api.github.com".into(), "uploads.github.com".into()]);
    narrow.response = Some(ResponseMode::Headers);
    narrow.any_digest = true;
    narrow.access = AccessLevel::Read;
    v.grant(&narrow, "admin").unwrap();
    v.record_tripwire(&tripwire("narrow", DIGEST, prod.clone()), 1, DAY).unwrap();
    let mut b = access("narrow", "gh");
    b.environment = Environment::Production;
    let e = v.resolve(&b).unwrap_err();
    let want = "skillbox grant narrow gh --env production --access read --hosts api.github.com,uploads.github.com \
                --any-digest --response headers";
    assert!(matches!(&e, Error::Suspended { command, .. } if command == want), "{e}");
    assert!(!m.contains("tok-gh"), "{m}");
    let denied = v.audit_list(&AuditQuery { action: Some(AuditAction::Denied), ..Default::default() }).unwrap();
    assert_eq!(denied.len(), 3);
    assert!(denied.iter().all(|r| !r.success && r.error.as_deref().unwrap().contains("suspended")));
    assert!(denied.iter().all(|r| r.credential_id.is_some()));

    // Granting again re-enables it: a `grant` row, then a `resume` row.
    let g = v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    assert_eq!((g.status, g.suspended_at, g.suspended_reason.as_deref()), (GrantStatus::Active, None, None));
    let last = v.audit_list(&AuditQuery { limit: Some(2), ..Default::default() }).unwrap();
    assert_eq!((last[0].action, last[1].action), (AuditAction::Grant, AuditAction::Resume));
    assert_eq!(last[1].detail["grant_id"], g.id.as_str());
    assert!(last[1].detail["suspended_reason"].as_str().unwrap().contains("tripwire"));
    assert_eq!(token_of(&v.resolve(&access("triage", "gh")).unwrap().value), "tok-gh-suspended");
    // The other grant stays suspended; granting an active grant writes no `resume`.
    assert!(matches!(v.resolve(&a), Err(Error::Suspended { .. })));
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    assert_eq!(audit_count(&v, AuditAction::Resume), 1);
    assert!(v.audit_verify().unwrap().is_ok());
}

fn add_bearer_in(v: &Vault, r: CredentialRef, token: &str) -> CredentialInfo {
    let value = SecretValue::from_single(CredentialKind::Bearer, token).unwrap();
    v.add(&NewCredential::new(r, CredentialKind::Bearer, "github"), &value, "tester").unwrap()
}

fn record_takes_leak_and_tripwire_events_but_not_the_vaults_own_state_changes(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let mut ev = AuditEvent::new(AuditAction::Leak, "alice");
    ev.skill = Some("triage".into());
    ev.detail = serde_json::json!({ "channel": "http.response", "view": "base64", "rule": "foreign-token" });
    ev.success = false;
    v.record(&ev).unwrap();
    let leak = &v.audit_list(&AuditQuery { action: Some(AuditAction::Leak), ..Default::default() }).unwrap()[0];
    assert_eq!(leak.detail["view"], "base64");
    for action in [AuditAction::Suspend, AuditAction::Resume] {
        let e = v.record(&AuditEvent::new(action, "alice")).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
    }
    for (a, s) in [
        (AuditAction::Tripwire, "tripwire"),
        (AuditAction::Suspend, "suspend"),
        (AuditAction::Leak, "leak"),
        (AuditAction::Resume, "resume"),
    ] {
        assert_eq!((a.as_str(), s.parse::<AuditAction>().unwrap()), (s, a));
    }
    assert!(v.audit_verify().unwrap().is_ok());
}

fn response_mode_parses_orders_and_round_trips_through_a_grant(kind: Kind) {
    for (m, s) in [(ResponseMode::Full, "full"), (ResponseMode::Headers, "headers"), (ResponseMode::Status, "status")] {
        assert_eq!((m.as_str(), m.to_string(), s.parse::<ResponseMode>().unwrap()), (s, s.to_string(), m));
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<ResponseMode>(&format!("\"{s}\"")).unwrap(), m);
    }
    let e = "body".parse::<ResponseMode>().unwrap_err().to_string();
    assert!(e.contains("full, headers") || e.contains("status, headers, full"), "{e}");
    assert!(serde_json::from_str::<ResponseMode>("\"FULL\"").is_err());
    use ResponseMode::*;
    assert_eq!(Full.narrowest(Headers), Headers);
    assert_eq!(Headers.narrowest(Full), Headers);
    assert_eq!(Status.narrowest(Full), Status);
    assert_eq!(Headers.narrowest(Status), Status);
    assert_eq!(Full.narrowest(Full), Full);

    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh-response");
    let mut g = NewGrant::new("triage", cref("gh"));
    g.response = Some(ResponseMode::Status);
    let info = v.grant(&g, "admin").unwrap();
    assert_eq!(info.response, Some(Status));
    assert_eq!(info.grant_command(), "skillbox grant triage gh --response status");
    let r = v.resolve(&access("triage", "gh")).unwrap();
    assert_eq!(r.grant.unwrap().response, Some(Status));
    let listed = v.grants(&GrantFilter::default()).unwrap();
    let json = serde_json::to_value(&listed).unwrap();
    assert_eq!(json[0]["response"], "status");
    assert_eq!(json[0]["status"], "active");
    assert_eq!(json[0]["suspended_at"], serde_json::Value::Null);
    let granted = v.audit_list(&AuditQuery { action: Some(AuditAction::Grant), ..Default::default() }).unwrap();
    assert_eq!(granted[0].detail["response"], "status");
    // Re-granting without it widens back to the manifest's.
    assert_eq!(v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap().response, None);
    // An expired grant lists as expired.
    let mut late = NewGrant::new("late", cref("gh"));
    late.expires_at = Some(SystemTime::now() - Duration::from_secs(1));
    assert_eq!(v.grant(&late, "admin").unwrap().status, GrantStatus::Expired);
    let expired = v.grants(&GrantFilter { status: Some(GrantStatus::Expired), ..Default::default() }).unwrap();
    assert_eq!(expired.len(), 1);
}

#[test]
fn a_version_1_vault_is_migrated_after_the_key_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    add_bearer(&v, "gh", "tok-gh-migrate");
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    v.resolve(&access("triage", "gh")).unwrap();
    drop(v);
    // Turn it back into a version-1 file.
    let c = raw(&db);
    c.execute_batch(
        "DROP TABLE api_keys; ALTER TABLE grants DROP COLUMN policy; \
         ALTER TABLE credentials DROP COLUMN rotate_every; ALTER TABLE credentials DROP COLUMN needs_reauth; \
         ALTER TABLE credentials DROP COLUMN test_url; ALTER TABLE grants DROP COLUMN response; ALTER TABLE grants DROP COLUMN suspended_reason; \
         ALTER TABLE grants DROP COLUMN suspended_at; ALTER TABLE grants DROP COLUMN mac; \
         ALTER TABLE credentials DROP COLUMN mac; ALTER TABLE versions DROP COLUMN mac; DROP TABLE leases; PRAGMA user_version = 1;",
    )
    .unwrap();
    let columns = |c: &Connection| -> Vec<String> {
        let mut s = c.prepare("SELECT name FROM pragma_table_info('grants')").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    };
    assert!(!columns(&c).contains(&"suspended_at".to_string()));
    let version = |c: &Connection| -> i64 { c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap() };
    drop(c);

    // A wrong key changes nothing.
    assert!(matches!(Vault::open(&db, &key(KEY_B)), Err(Error::WrongMasterKey { .. })));
    assert_eq!(version(&raw(&db)), 1);

    let v = Vault::open(&db, &key(KEY_A)).unwrap();
    let c = raw(&db);
    assert_eq!(version(&c), skillbox_vault::SCHEMA_VERSION);
    for col in ["suspended_at", "suspended_reason", "response", "policy"] {
        assert!(columns(&c).contains(&col.to_string()), "{col} was not added");
    }
    let g = &v.grants(&GrantFilter::default()).unwrap()[0];
    assert_eq!((g.status, g.response, g.skill_digest.as_deref()), (GrantStatus::Active, None, Some(DIGEST)));
    assert_eq!(token_of(&v.resolve(&access("triage", "gh")).unwrap().value), "tok-gh-migrate");
    let mut g = NewGrant::new("triage", cref("gh"));
    g.response = Some(ResponseMode::Headers);
    v.grant(&g, "admin").unwrap();
    v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 1, DAY).unwrap();
    assert!(matches!(v.resolve(&access("triage", "gh")), Err(Error::Suspended { .. })));
    assert!(v.audit_verify().unwrap().is_ok());
    drop(v);
    // Opening again is a no-op.
    let v = Vault::open(&db, &key(KEY_A)).unwrap();
    assert_eq!(version(&raw(&db)), skillbox_vault::SCHEMA_VERSION);
    assert_eq!(v.grants(&GrantFilter::default()).unwrap()[0].status, GrantStatus::Suspended);
}

#[test]
fn short_secrets_are_named_by_field_and_never_echoed() {
    assert_eq!(MIN_SECRET_LEN, 8);
    let short = "q7Z";
    let cases: &[(CredentialKind, String, &str)] = &[
        (CredentialKind::Bearer, format!(r#"{{"access_token":"{short}"}}"#), "access_token"),
        (
            CredentialKind::Bearer,
            format!(r#"{{"access_token":"long-enough","refresh_token":"{short}"}}"#),
            "refresh_token",
        ),
        (CredentialKind::OAuth2, format!(r#"{{"access_token":"{short}"}}"#), "access_token"),
        (CredentialKind::ApiKey, format!(r#"{{"key":"{short}"}}"#), "key"),
        (CredentialKind::ApiKey, format!(r#"{{"key":"long-enough","secret":"{short}"}}"#), "secret"),
        (CredentialKind::Basic, format!(r#"{{"username":"al","password":"{short}"}}"#), "password"),
        (CredentialKind::HmacKey, format!(r#"{{"key":"{short}"}}"#), "key"),
        (
            CredentialKind::Database,
            format!(r#"{{"driver":"postgres","host":"h","database":"d","user":"u","password":"{short}"}}"#),
            "password",
        ),
        (
            CredentialKind::Custom,
            format!(r#"{{"a":"long-enough","b":{{"list":["long-enough","{short}"]}}}}"#),
            "b.list[1]",
        ),
    ];
    for (kind, json, field) in cases {
        let value = SecretValue::from_json(*kind, json).unwrap();
        let e = value.check_secret_length().unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::InvalidValue { .. }), "{m}");
        assert!(m.contains(&format!("field '{field}'")), "{m} should name {field}");
        assert!(m.contains("--allow-short-secret") && m.contains("false alarms"), "{m}");
        assert!(!m.contains(short), "{m} echoes the value");
    }
    let fine: &[(CredentialKind, &str)] = &[
        (CredentialKind::Bearer, r#"{"access_token":"12345678"}"#),
        (CredentialKind::Basic, r#"{"username":"al","password":"long-enough"}"#),
        (CredentialKind::Database, r#"{"driver":"postgres","host":"h","database":"d","user":"u"}"#),
        (CredentialKind::Database, r#"{"driver":"sqlite","path":"a.db"}"#),
        (CredentialKind::Custom, r#"{"n":3,"token":"long-enough","empty":""}"#),
    ];
    for (kind, json) in fine {
        SecretValue::from_json(*kind, json).unwrap().check_secret_length().unwrap();
    }
    let single = SecretValue::from_single(CredentialKind::Bearer, short).unwrap();
    assert!(single.check_secret_length().is_err());
}

// ---------------------------------------------------------------- record MACs

/// Before the forgery: nothing, or one legitimate change made through the API.
#[derive(Clone, Copy)]
enum Pre {
    None,
    Revoke,
    Rotate,
    Suspend,
}

fn a_forged_credential_or_grant_field_is_refused_by_resolve_and_reported_by_verify(kind: Kind) {
    let cases: &[(&str, Pre, &str)] = &[
        ("credential owner", Pre::None, "UPDATE credentials SET owner = 'mallory' WHERE id = :dev"),
        ("credential environment", Pre::None, "UPDATE credentials SET environment = 'staging' WHERE id = :dev"),
        (
            "credential status (un-revoke)",
            Pre::Revoke,
            "UPDATE credentials SET status = 'active', revoked_reason = NULL WHERE id = :dev",
        ),
        ("credential expires_at", Pre::None, "UPDATE credentials SET expires_at = 4102444800000 WHERE id = :dev"),
        (
            "credential current_version (roll back)",
            Pre::Rotate,
            "UPDATE credentials SET current_version = 1 WHERE id = :dev",
        ),
        ("grant hosts", Pre::None, "UPDATE grants SET hosts = '[\"gh.attacker.example\"]'"),
        ("grant any_digest", Pre::None, "UPDATE grants SET any_digest = 1"),
        (
            "grant credential_id (dev grant → production credential)",
            Pre::None,
            "UPDATE grants SET credential_id = :prod",
        ),
        ("grant skill_digest", Pre::None, "UPDATE grants SET skill_digest = NULL"),
        ("grant expires_at", Pre::None, "UPDATE grants SET expires_at = 4102444800000"),
        (
            "grant suspended_at (un-suspend)",
            Pre::Suspend,
            "UPDATE grants SET suspended_at = NULL, suspended_reason = NULL",
        ),
        ("grant response", Pre::None, "UPDATE grants SET response = 'full'"),
        ("grant policy (widened)", Pre::None, "UPDATE grants SET policy = '{\"hosts\":[\"gh.attacker.example\"]}'"),
        ("grant policy (cleared)", Pre::None, "UPDATE grants SET policy = NULL"),
    ];
    for &(field, pre, sql) in cases {
        let db = TestStore::new(kind);
        let v = new_vault(&db);
        let dev = add_bearer(&v, "gh", "tok-dev");
        let prod = add_bearer_in(&v, cref("gh").env(Environment::Production), "tok-prod");
        v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
        v.resolve(&with_policy(access("triage", "gh"), POLICY)).unwrap(); // pins the digest and policy
        match pre {
            Pre::None => {}
            Pre::Revoke => v.revoke(&cref("gh"), "leaked", "t").unwrap(),
            Pre::Rotate => {
                v.rotate(&cref("gh"), &SecretValue::from_single(CredentialKind::Bearer, "tok-dev-2").unwrap(), "t")
                    .unwrap();
            }
            Pre::Suspend => {
                v.record_tripwire(&tripwire("triage", DIGEST, cref("gh")), 1, DAY).unwrap();
            }
        }
        assert!(v.audit_verify().unwrap().is_ok(), "{field}: before the forgery");
        let sql = sql.replace(":dev", &format!("'{}'", dev.id)).replace(":prod", &format!("'{}'", prod.id));
        assert_eq!(db.exec(&sql), 1, "{field}: {sql}");

        let e = v.resolve(&access("triage", "gh")).unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{field}: {e}");
        let m = e.to_string();
        assert!(m.contains("modified outside skillbox") && m.contains("skillbox audit verify"), "{field}: {m}");
        assert!(!m.contains("tok-"), "{field}: {m}");
        let p = v.audit_verify().unwrap().problem.expect(field);
        assert_eq!(p.kind, TamperKind::RecordForged, "{field}: {}", p.message);
        assert!(p.message.contains("modified outside skillbox"), "{field}: {}", p.message);
        // Listings refuse it too.
        let listed = if field.starts_with("credential") {
            v.list(&ListFilter::default()).map(|_| ())
        } else {
            v.grants(&GrantFilter::default()).map(|_| ())
        };
        assert!(matches!(listed, Err(Error::Tampered { .. })), "{field}: {listed:?}");
    }
}

fn a_forged_version_row_or_a_missing_mac_is_refused(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-v");
    v.rotate(&cref("gh"), &SecretValue::from_single(CredentialKind::Bearer, "tok-v2").unwrap(), "t").unwrap();
    // Make the old version look current.
    db.exec("UPDATE versions SET status = 'active' WHERE version = 1");
    assert!(matches!(v.reveal(&cref("gh"), "t", None), Ok(_)), "the current version is untouched");
    assert!(matches!(v.show(&cref("gh")), Err(Error::Tampered { .. })));
    assert_eq!(v.audit_verify().unwrap().problem.unwrap().kind, TamperKind::RecordForged);
    db.exec("UPDATE versions SET status = 'rotated' WHERE version = 1");
    assert!(v.audit_verify().unwrap().is_ok());
    // Removing a MAC is no way around it.
    db.exec("UPDATE credentials SET mac = NULL");
    assert!(matches!(v.reveal(&cref("gh"), "t", None), Err(Error::Tampered { .. })));
}

// ---------------------------------------------------------------- audit chain

fn audited_vault_file(dir: &Path) -> (Vault, PathBuf) {
    let (v, db) = new_vault_file(dir);
    for i in 0..4 {
        add_bearer(&v, &format!("c{i}"), "tok");
    }
    (v, db)
}

fn audited_vault(db: &TestStore) -> Vault {
    let v = new_vault(db);
    for i in 0..4 {
        add_bearer(&v, &format!("c{i}"), "tok");
    }
    v
}

fn audit_verify_detects_an_edited_row(kind: Kind) {
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    assert_eq!(v.audit_verify().unwrap().rows, 4);
    db.exec("UPDATE audit SET actor = 'mallory' WHERE id = 2");
    let p = v.audit_verify().unwrap().problem.unwrap();
    assert_eq!((p.kind, p.row), (TamperKind::Edited, 2), "{}", p.message);
}

fn audit_verify_detects_a_deleted_row(kind: Kind) {
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    db.exec("DELETE FROM audit WHERE id = 2");
    let p = v.audit_verify().unwrap().problem.unwrap();
    assert_eq!((p.kind, p.row), (TamperKind::Deleted, 3), "{}", p.message);
}

fn audit_verify_detects_deletion_of_the_last_row(kind: Kind) {
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    db.exec("DELETE FROM audit WHERE id = 4");
    let p = v.audit_verify().unwrap().problem.unwrap();
    assert_eq!(p.kind, TamperKind::Deleted, "{}", p.message);
    assert!(p.message.contains("newest"), "{}", p.message);
}

fn audit_verify_detects_an_inserted_row(kind: Kind) {
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    // Shift rows 3.. up by one and slip a forged row in at 3, copying row 2's link.
    db.exec("UPDATE audit SET id = id + 100 WHERE id >= 3");
    db.exec("UPDATE audit SET id = id - 99 WHERE id >= 103");
    db.exec(
        "INSERT INTO audit SELECT 3, ts, 'read', 'mallory', skill, credential_id, credential_name, environment, owner, \
         purpose, detail, 1, NULL, prev_hash, mac FROM audit WHERE id = 2",
    );
    let p = v.audit_verify().unwrap().problem.unwrap();
    assert_eq!((p.kind, p.row), (TamperKind::Inserted, 3), "{}", p.message);

    // Appending a forged row at the end is caught as well.
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    db.exec(
        "INSERT INTO audit SELECT 5, ts, action, actor, skill, credential_id, credential_name, environment, owner, \
             purpose, detail, success, error, prev_hash, mac FROM audit WHERE id = 4",
    );
    let p = v.audit_verify().unwrap().problem.unwrap();
    assert_eq!((p.kind, p.row), (TamperKind::Inserted, 5), "{}", p.message);
}

fn audit_max_id(db: &TestStore) -> i64 {
    db.i64("SELECT max(id) FROM audit")
}

fn truncating_the_newest_rows_and_corrupting_the_head_stops_appends_until_an_audited_repair(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh");
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    for _ in 0..4 {
        v.resolve(&access("triage", "gh")).unwrap();
    }
    // Nothing to repair while the head is intact: nothing is written.
    let r = v.audit_repair("op").unwrap();
    assert!(!r.repaired && r.head_problem.is_none(), "{r:?}");
    assert_eq!(audit_count(&v, AuditAction::Repair), 0);

    // Delete the newest 3 rows (the last reads) and spoil the head.
    let max = audit_max_id(&db);
    db.exec(&format!("DELETE FROM audit WHERE id > {}", max - 3));
    // Any other 80... bytes will do: the vault id is stored there too.
    db.exec("UPDATE meta SET value = (SELECT value FROM meta WHERE key = 'vault_id') WHERE key = 'audit_head'");
    let left = (max - 3) as u64;

    // The next resolve fails closed, naming the fix; so does any other write.
    let e = v.resolve(&access("triage", "gh")).unwrap_err();
    assert!(matches!(e, Error::AuditHeadDamaged { .. }), "{e}");
    let m = e.to_string();
    for part in ["no secret was released", "skillbox audit verify", "skillbox audit repair"] {
        assert!(m.contains(part), "{m} should say {part}");
    }
    let value = SecretValue::from_single(CredentialKind::Bearer, "tok-other").unwrap();
    let e = v.add(&NewCredential::new(cref("other"), CredentialKind::Bearer, "x"), &value, "t").unwrap_err();
    assert!(matches!(e, Error::AuditHeadDamaged { .. }), "{e}");
    assert!(matches!(v.revoke(&cref("gh"), "r", "t").unwrap_err(), Error::AuditHeadDamaged { .. }));
    assert_eq!(audit_max_id(&db), max - 3, "nothing was appended");
    assert!(v.list(&ListFilter::default()).unwrap().iter().all(|c| c.name == "gh"));

    // verify reports it.
    let p = v.audit_verify().unwrap().problem.unwrap();
    assert_eq!(p.kind, TamperKind::HeadAltered, "{}", p.message);
    assert!(p.message.contains("skillbox audit repair"), "{}", p.message);

    // repair rebuilds the head from what is left and says so in a `repair` row.
    let r = v.audit_repair("op").unwrap();
    assert!(r.repaired, "{r:?}");
    assert_eq!((r.rows, r.verified_rows, r.row_problem.as_deref()), (left, left, None));
    let rows = v.audit_list(&AuditQuery::default()).unwrap();
    let last = rows.last().unwrap();
    assert_eq!((last.action, last.actor.as_str()), (AuditAction::Repair, "op"));
    assert_eq!(last.detail["rows"], left);
    assert!(last.detail["head_problem"].as_str().unwrap().contains("MAC"), "{}", last.detail);
    let report = v.audit_verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.rows, left + 1);
    v.resolve(&access("triage", "gh")).unwrap();
    assert!(v.audit_verify().unwrap().is_ok());
}

fn deleting_the_newest_rows_under_an_intact_head_also_stops_appends(kind: Kind) {
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    db.exec("DELETE FROM audit WHERE id = 4");
    let e = v.record(&AuditEvent::new(AuditAction::Use, "rt")).unwrap_err();
    assert!(matches!(&e, Error::AuditHeadDamaged { reason } if reason.contains("row 4")), "{e}");
    // An edited newest row too.
    let db = TestStore::new(kind);
    let v = audited_vault(&db);
    db.exec("UPDATE audit SET actor = 'mallory' WHERE id = 4");
    let e = v.record(&AuditEvent::new(AuditAction::Use, "rt")).unwrap_err();
    assert!(matches!(&e, Error::AuditHeadDamaged { .. }), "{e}");
    let r = v.audit_repair("op").unwrap();
    assert!(r.repaired && r.row_problem.as_deref().unwrap().contains("row 4 was edited"), "{r:?}");
    // Repair does not hide the edited row.
    assert_eq!(v.audit_verify().unwrap().problem.unwrap().kind, TamperKind::Edited);
}

#[test]
fn an_anchor_proves_the_log_extends_it_and_catches_truncation_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = audited_vault_file(dir.path());
    let old = dir.path().join("old.db");
    v.backup(&old, "t").unwrap(); // the copy holds rows 1..=5 (the backup row too)
    let a5 = v.audit_anchor().unwrap();
    assert_eq!((a5.count, a5.last_id), (5, 5));
    let parsed = AuditAnchor::from_json(&a5.to_json()).unwrap();
    assert_eq!(parsed, a5);
    add_bearer(&v, "c9", "tok");
    add_bearer(&v, "c10", "tok");
    let a7 = v.audit_anchor().unwrap();
    assert_eq!(a7.count, 7);

    // The extended log passes against both anchors.
    assert!(v.audit_verify_anchor(&a5).unwrap().is_ok());
    assert!(v.audit_verify_anchor(&a7).unwrap().is_ok());

    // The older copy (a whole-file rollback) verifies on its own but not against the newer anchor.
    let vo = Vault::open(&old, &key(KEY_A)).unwrap();
    assert!(vo.audit_verify().unwrap().is_ok());
    assert!(vo.audit_verify_anchor(&a5).unwrap().is_ok());
    let p = vo.audit_verify_anchor(&a7).unwrap().problem.unwrap();
    assert_eq!(p.kind, TamperKind::RolledBack, "{}", p.message);
    assert!(p.message.contains("older copy"), "{}", p.message);

    // Truncation with a consistent (older, authentic) head copied back in.
    let old_head: Vec<u8> =
        raw(&old).query_row("SELECT value FROM meta WHERE key = 'audit_head'", [], |r| r.get(0)).unwrap();
    let c = raw(&db);
    c.execute("DELETE FROM audit WHERE id > 5", []).unwrap();
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'audit_head'", [&old_head]).unwrap();
    assert!(v.audit_verify().unwrap().is_ok(), "no file can see this about itself");
    assert_eq!(v.audit_verify_anchor(&a7).unwrap().problem.unwrap().kind, TamperKind::RolledBack);

    // A rewritten log (same length, other rows) is caught at the anchor's position.
    add_bearer(&v, "c11", "tok");
    add_bearer(&v, "c12", "tok");
    let p = v.audit_verify_anchor(&a7).unwrap().problem.unwrap();
    assert_eq!((p.kind, p.row), (TamperKind::RolledBack, 7), "{}", p.message);

    // A forged anchor, or one from another vault, is refused.
    let mut forged = a7.clone();
    forged.count = 2;
    assert!(matches!(v.audit_verify_anchor(&forged), Err(Error::InvalidInput { .. })));
    let (other, _) = new_vault_file(&dir.path().join("x").tap_mkdir());
    let e = other.audit_verify_anchor(&a7).unwrap_err();
    assert!(e.to_string().contains("another vault"), "{e}");
    assert!(AuditAnchor::from_json("{}").is_err());
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn the_anchor_file_follows_every_append_and_must_be_outside_the_vault_directory() {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vault").tap_mkdir();
    let outside = dir.path().join("anchors").tap_mkdir();
    let (v, db) = new_vault_file(&vdir);
    let sub = vdir.join("sub").tap_mkdir();
    for inside in [vdir.join("anchor.json"), sub.join("anchor.json"), vdir.join("../vault/a.json")] {
        let e = v.set_audit_anchor_file(Some(&inside), "op").unwrap_err();
        assert!(e.to_string().contains("inside the vault's directory"), "{e}");
    }
    let file = outside.join("anchor.json");
    v.set_audit_anchor_file(Some(&file), "op").unwrap();
    assert_eq!(v.audit_anchor_file().unwrap().unwrap(), file.canonicalize().unwrap());
    let read = || AuditAnchor::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(read(), v.audit_anchor().unwrap());
    assert_eq!(read().count, 1);
    add_bearer(&v, "gh", "tok");
    assert_eq!(read(), v.audit_anchor().unwrap());
    assert_eq!(read().count, 2);
    assert!(v.audit_verify_anchor(&read()).unwrap().is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

    // The setting is MACed: pointing it elsewhere by editing the file stops appends.
    let victim = outside.join("victim");
    let c = raw(&db);
    let v_bytes: Vec<u8> =
        c.query_row("SELECT value FROM meta WHERE key = 'audit_anchor_file'", [], |r| r.get(0)).unwrap();
    let mut forged = victim.to_str().unwrap().as_bytes().to_vec();
    forged.extend_from_slice(&v_bytes[v_bytes.len() - 32..]);
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'audit_anchor_file'", [&forged]).unwrap();
    let e = v.record(&AuditEvent::new(AuditAction::Use, "rt")).unwrap_err();
    assert!(matches!(e, Error::Tampered { .. }) && e.to_string().contains("skillbox audit verify"), "{e}");
    assert!(!victim.exists());
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'audit_anchor_file'", [&v_bytes]).unwrap();

    // Removing it stops the updates (and is audited).
    v.set_audit_anchor_file(None, "op").unwrap();
    assert!(v.audit_anchor_file().unwrap().is_none());
    add_bearer(&v, "gh2", "tok");
    assert_eq!(read().count, 2);
    assert_eq!(audit_count(&v, AuditAction::Anchor), 2);
}

// ---------------------------------------------------------------- master key, backup

fn master_key_rotation_rewraps_without_touching_payloads(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-rot");
    let payload = |db: &TestStore| {
        (
            db.blobs("SELECT wrapped_dek FROM versions ORDER BY credential_id"),
            db.blobs("SELECT ciphertext FROM versions ORDER BY credential_id"),
        )
    };
    let before = payload(&db);
    v.rotate_master_key(&key(KEY_B), "admin").unwrap();
    assert_eq!(payload(&db), before, "credential payloads were re-encrypted");
    assert_eq!(token_of(&v.reveal(&cref("gh"), "t", None).unwrap()), "tok-rot");
    drop(v);
    assert!(matches!(Vault::open_at(&db.location, &key(KEY_A)), Err(Error::WrongMasterKey { .. })));
    let v = Vault::open_at(&db.location, &key(KEY_B)).unwrap();
    assert_eq!(token_of(&v.reveal(&cref("gh"), "t", None).unwrap()), "tok-rot");
    assert!(v.audit_verify().unwrap().is_ok(), "the audit key survives master rotation");
    let rows = v.audit_list(&AuditQuery { action: Some(AuditAction::KeyRotate), ..Default::default() }).unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn backup_is_a_consistent_encrypted_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = new_vault_file(dir.path());
    add_bearer(&v, "gh", "tok-backup-canary");
    let dest = dir.path().join("backup.db");
    v.backup(&dest, "admin").unwrap();
    assert!(v.backup(&dest, "admin").is_err(), "refuses to overwrite");
    assert!(!contains(&std::fs::read(&dest).unwrap(), b"tok-backup-canary"));
    assert!(matches!(Vault::open(&dest, &key(KEY_B)), Err(Error::WrongMasterKey { .. })));
    let b = Vault::open(&dest, &key(KEY_A)).unwrap();
    assert_eq!(token_of(&b.reveal(&cref("gh"), "t", None).unwrap()), "tok-backup-canary");
    assert!(b.audit_verify().unwrap().is_ok());
}

#[cfg(unix)]
#[test]
fn backup_is_created_0600_and_never_through_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = new_vault_file(dir.path());
    add_bearer(&v, "gh", "tok-backup-canary");
    let dest = dir.path().join("backup.db");
    v.backup(&dest, "admin").unwrap();
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
    // A dangling symlink at the path (someone wants the copy somewhere they can read it):
    // `exists()` says no, but the backup must not follow it.
    let elsewhere = dir.path().join("elsewhere.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    assert!(v.backup(&link, "admin").is_err(), "refuses a path that is a symlink");
    assert!(!elsewhere.exists(), "nothing was written through the symlink");
}

fn vault_is_send_and_sync_and_threads_share_it(kind: Kind) {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vault>();
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok");
    v.grant(&NewGrant::new("s", cref("gh")), "t").unwrap();
    let v = std::sync::Arc::new(v);
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            std::thread::spawn(move || (0..25).for_each(|_| drop(v.resolve(&access("s", "gh")).unwrap())))
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(v.audit_list(&AuditQuery { action: Some(AuditAction::Read), ..Default::default() }).unwrap().len(), 100);
    assert!(v.audit_verify().unwrap().is_ok());
}

// ---------------------------------------------------------------- other processes

fn child(role: &str, db: &Path, extra: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_process_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env("CHILD_DB", db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

/// Not a test of its own: the body a child process runs (see `child`).
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else { return };
    let db = PathBuf::from(std::env::var("CHILD_DB").unwrap());
    match role.as_str() {
        "writer" => {
            let tag = std::env::var("CHILD_TAG").unwrap();
            let v = Vault::open(&db, &key(KEY_A)).unwrap();
            for i in 0..40 {
                let name = format!("{tag}-{i}");
                add_bearer(&v, &name, &format!("tok-{name}"));
                v.grant(&NewGrant::new("s", cref(&name)), "t").unwrap();
                v.resolve(&access("s", &name)).unwrap();
            }
        }
        "rotate" => {
            let v = Vault::open(&db, &key(KEY_A)).unwrap();
            v.rotate_master_key(&key(KEY_B), "admin").unwrap();
            eprintln!("ROTATED");
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn two_processes_writing_at_once_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    drop(v);
    let kids: Vec<_> =
        ["p1", "p2"].iter().map(|t| child("writer", &db, &[("CHILD_TAG", t)]).spawn().unwrap()).collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v = Vault::open(&db, &key(KEY_A)).unwrap();
    assert_eq!(v.list(&ListFilter::default()).unwrap().len(), 80);
    for t in ["p1", "p2"] {
        for i in 0..40 {
            let name = format!("{t}-{i}");
            assert_eq!(token_of(&v.reveal(&cref(&name), "t", None).unwrap()), format!("tok-{name}"));
        }
    }
    let r = v.audit_verify().unwrap();
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!(r.rows, 80 * 4 + 80, "create, grant, pin and read per credential, plus the reveals");
    let integrity: String = raw(&db).query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn sigkill_at_each_master_key_rotation_step_leaves_a_usable_vault() {
    for step in ["before-begin", "after-first-rewrap", "before-commit", "after-commit"] {
        let dir = tempfile::tempdir().unwrap();
        let (v, db) = new_vault_file(dir.path());
        for i in 0..3 {
            add_bearer(&v, &format!("c{i}"), &format!("tok-{i}"));
        }
        drop(v);
        let fp = format!("key-rotate:{step}");
        let mut kid = child("rotate", &db, &[(FAILPOINT_ENV, &fp)]).spawn().unwrap();
        let mut lines = BufReader::new(kid.stderr.take().unwrap()).lines();
        let reached = lines.by_ref().map_while(Result::ok).any(|l| l.trim() == format!("FAILPOINT {step}"));
        assert!(reached, "child never reached {step}");
        kid.kill().unwrap();
        kid.wait().unwrap();

        let (v, which) = match Vault::open(&db, &key(KEY_A)) {
            Ok(v) => (v, "old"),
            Err(Error::WrongMasterKey { .. }) => (Vault::open(&db, &key(KEY_B)).expect("neither key opens"), "new"),
            Err(e) => panic!("after kill at {step}: {e}"),
        };
        let expected = if step == "after-commit" { "new" } else { "old" };
        assert_eq!(which, expected, "kill at {step}");
        for i in 0..3 {
            assert_eq!(token_of(&v.reveal(&cref(&format!("c{i}")), "t", None).unwrap()), format!("tok-{i}"), "{step}");
        }
        assert!(v.audit_verify().unwrap().is_ok(), "{step}");
    }
}

// ---------------------------------------------------------------- pinned policies

const POLICY: &str = r#"{"hosts":["api.github.com"],"http":"bearer","kind":"bearer","sql.write":false}"#;

fn with_policy(mut a: Access, policy: &str) -> Access {
    a.policy = Some(policy.into());
    a
}

fn the_policy_is_pinned_on_first_use_and_a_changed_one_is_refused_with_a_diff(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh-policy");
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    assert_eq!(v.grants(&GrantFilter::default()).unwrap()[0].policy, None);

    v.resolve(&with_policy(access("triage", "gh"), POLICY)).unwrap();
    let g = &v.grants(&GrantFilter::default()).unwrap()[0];
    assert_eq!(g.policy.as_deref(), Some(POLICY));
    assert_eq!(g.pinned_hosts().unwrap(), ["api.github.com"]);
    assert_eq!(g.policy_digest().unwrap().len(), 64);
    let pin = v.audit_list(&AuditQuery { action: Some(AuditAction::Pin), ..Default::default() }).unwrap();
    assert_eq!(pin.len(), 1);
    assert_eq!(pin[0].detail["pinned"], serde_json::json!(["component", "policy"]));
    assert_eq!(pin[0].detail["policy_digest"].as_str(), g.policy_digest().as_deref());

    // The same policy again: used. A manifest-only change of hosts: refused, naming the change.
    v.resolve(&with_policy(access("triage", "gh"), POLICY)).unwrap();
    let widened = POLICY.replace(r#"["api.github.com"]"#, r#"["api.github.com","gh.attacker.example"]"#);
    let e = v.resolve(&with_policy(access("triage", "gh"), &widened)).unwrap_err();
    assert!(matches!(e, Error::PolicyChanged { .. }) && e.is_denied(), "{e}");
    let m = e.to_string();
    assert!(
        m.contains(r#"hosts: ["api.github.com"] -> ["api.github.com","gh.attacker.example"]"#),
        "names what changed: {m}"
    );
    assert!(m.contains("`skillbox grant triage gh`"), "names the command: {m}");
    assert!(!m.contains("tok-gh"), "{m}");
    assert!(v.recheck(&with_policy(access("triage", "gh"), &widened)).is_err(), "recheck refuses too");
    assert!(v.recheck(&with_policy(access("triage", "gh"), POLICY)).is_ok());
    let denied = v.audit_list(&AuditQuery { action: Some(AuditAction::Denied), ..Default::default() }).unwrap();
    assert_eq!(denied.len(), 1);
    assert!(denied[0].error.as_deref().unwrap().contains("policy"), "{:?}", denied[0].error);

    // Granting again with the new policy approves it (pinned at once, not on first use).
    let mut g = NewGrant::new("triage", cref("gh"));
    g.policy = Some(widened.clone());
    let info = v.grant(&g, "admin").unwrap();
    assert_eq!(info.policy.as_deref(), Some(widened.as_str()));
    v.resolve(&with_policy(access("triage", "gh"), &widened)).unwrap();
    assert!(v.resolve(&with_policy(access("triage", "gh"), POLICY)).is_err(), "the old policy is now the change");
    assert!(v.audit_verify().unwrap().is_ok());
}

fn a_policy_to_pin_must_be_a_bounded_json_object(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    add_bearer(&v, "gh", "tok-gh-policy");
    for bad in ["not json".to_string(), "[1]".to_string(), format!(r#"{{"hosts":["{}"]}}"#, "a".repeat(70_000))] {
        let mut g = NewGrant::new("triage", cref("gh"));
        g.policy = Some(bad);
        let e = v.grant(&g, "admin").unwrap_err();
        assert!(matches!(e, Error::InvalidInput { what: "skill policy", .. }), "{e}");
    }
}

#[test]
fn a_version_3_vault_keeps_its_record_macs_when_the_policy_column_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    add_bearer(&v, "gh", "tok-gh-v3");
    v.grant(&NewGrant::new("triage", cref("gh")), "admin").unwrap();
    v.resolve(&access("triage", "gh")).unwrap();
    drop(v);
    raw(&db)
        .execute_batch(
            "DROP TABLE api_keys; ALTER TABLE grants DROP COLUMN policy; ALTER TABLE credentials DROP COLUMN rotate_every; \
             ALTER TABLE credentials DROP COLUMN needs_reauth; ALTER TABLE credentials DROP COLUMN test_url; \
             DROP TABLE leases; PRAGMA user_version = 3;",
        )
        .unwrap();

    let v = Vault::open(&db, &key(KEY_A)).unwrap();
    assert_eq!(
        raw(&db).query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(),
        skillbox_vault::SCHEMA_VERSION
    );
    assert!(v.audit_verify().unwrap().is_ok(), "rows sealed at schema 3 still check");
    v.resolve(&with_policy(access("triage", "gh"), POLICY)).unwrap();
    assert_eq!(v.grants(&GrantFilter::default()).unwrap()[0].policy.as_deref(), Some(POLICY));
    assert!(v.audit_verify().unwrap().is_ok());
}

on_both!(
    round_trip_of_every_kind,
    list_show_and_debug_never_print_a_value,
    rotation_keeps_history_to_the_configured_depth,
    identity_is_owner_environment_name_and_filters_work,
    resolve_enforces_grants_expiry_revocation_and_digest_pinning_and_audits_every_outcome,
    record_appends_host_side_events,
    tripwires_suspend_the_skills_grants_at_the_threshold,
    tripwires_outside_the_window_do_not_count,
    a_suspended_grant_is_refused_and_audited_and_granting_again_re_enables_it,
    record_takes_leak_and_tripwire_events_but_not_the_vaults_own_state_changes,
    response_mode_parses_orders_and_round_trips_through_a_grant,
    a_forged_credential_or_grant_field_is_refused_by_resolve_and_reported_by_verify,
    a_forged_version_row_or_a_missing_mac_is_refused,
    audit_verify_detects_an_edited_row,
    audit_verify_detects_a_deleted_row,
    audit_verify_detects_deletion_of_the_last_row,
    audit_verify_detects_an_inserted_row,
    truncating_the_newest_rows_and_corrupting_the_head_stops_appends_until_an_audited_repair,
    deleting_the_newest_rows_under_an_intact_head_also_stops_appends,
    master_key_rotation_rewraps_without_touching_payloads,
    vault_is_send_and_sync_and_threads_share_it,
    the_policy_is_pinned_on_first_use_and_a_changed_one_is_refused_with_a_diff,
    a_policy_to_pin_must_be_a_bounded_json_object,
);
