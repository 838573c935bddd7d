//! API keys for `skillbox serve` clients: creation, verification, revocation, what is stored,
//! and what editing the vault file can and cannot do to them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use secrecy::{ExposeSecret, SecretString};
use skillbox_vault::*;

mod common;
use common::{Kind, TestStore};

const KEY_A: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
const HOUR: Duration = Duration::from_secs(3600);

fn new_vault(db: &TestStore) -> Vault {
    db.init_with(&MasterKeySource::Hex(KEY_A.to_string().into()))
}

fn new_vault_file(dir: &Path) -> (Vault, PathBuf) {
    let path = dir.join("vault.db");
    (Vault::init(&path, &MasterKeySource::Hex(KEY_A.to_string().into()), &InitOptions::default()).unwrap(), path)
}

fn reopen(path: &Path) -> Vault {
    Vault::open(path, &MasterKeySource::Hex(KEY_A.to_string().into())).unwrap()
}

fn raw(db: &Path) -> Connection {
    Connection::open(db).unwrap()
}

fn new_key(name: &str, owner: &str, environment: Environment, skills: Option<&[&str]>) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        owner: owner.into(),
        environment,
        skills: skills.map(|s| s.iter().map(|x| x.to_string()).collect()),
        expires_at: None,
    }
}

fn create(v: &Vault, new: &NewApiKey) -> (ApiKeyInfo, String) {
    let (info, key) = v.apikey_create(new, "op").unwrap();
    (info, key.expose_secret().to_string())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The refusal every bad key gets: one variant, one message, nothing about the key or why.
fn assert_refused(r: Result<ApiKeyInfo>, key: &str, what: &str) {
    let e = r.expect_err(what);
    assert!(matches!(e, Error::ApiKeyRefused), "{what}: {e:?}");
    assert_eq!(e.to_string(), "API key refused", "{what}");
    assert!(e.is_denied(), "{what}");
    assert!(!key.is_empty() && !format!("{e:?}").contains(key), "{what}");
}

fn a_created_key_verifies_and_fixes_user_environment_and_skills(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let (info, key) =
        create(&v, &new_key("ci-a", "tenant-a", Environment::Production, Some(&["report", "deploy", "report"])));
    assert!(key.starts_with(API_KEY_PREFIX) && key.len() >= 4 + 43, "{}", key.len());
    assert!(key[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(info.status, ApiKeyStatus::Active);
    assert_eq!(info.created_by, "op");
    assert!(info.fingerprint.starts_with("sbx_…") && info.fingerprint.chars().count() == 11, "{}", info.fingerprint);
    assert!(!key.ends_with(&info.fingerprint[info.fingerprint.len() - 6..]), "not the key's own tail");

    let got = v.apikey_verify(&key).unwrap();
    assert_eq!((got.name.as_str(), got.owner.as_str(), got.environment), ("ci-a", "tenant-a", Environment::Production));
    assert_eq!(got.skills, Some(vec!["deploy".to_string(), "report".to_string()]), "sorted, no duplicates");
    assert_eq!(got.fingerprint, info.fingerprint);
    assert!(got.allows_skill("report") && got.allows_skill("deploy") && !got.allows_skill("other"));

    // Another tenant's key gets its own tenant and environment, and every skill.
    let (_, key_b) = create(&v, &new_key("ci-b", "tenant-b", Environment::Dev, None));
    let b = v.apikey_verify(&key_b).unwrap();
    assert_eq!((b.owner.as_str(), b.environment, b.skills.as_ref()), ("tenant-b", Environment::Dev, None));
    assert!(b.allows_skill("anything"));
    assert_eq!(v.apikey_verify(&key).unwrap().owner, "tenant-a");

    let listed = v.apikey_list().unwrap();
    assert_eq!(listed.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["ci-a", "ci-b"]);
    assert_ne!(listed[0].fingerprint, listed[1].fingerprint);
    assert!(v.audit_verify().unwrap().is_ok());
}

fn wrong_altered_expired_and_revoked_keys_are_refused_without_detail(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let (_, key) = create(&v, &new_key("good", DEFAULT_OWNER, Environment::Dev, None));

    // A key from another vault, and keys one character away from the real one.
    let other_db = TestStore::new(kind);
    let other = new_vault(&other_db);
    let (_, foreign) = create(&other, &new_key("good", DEFAULT_OWNER, Environment::Dev, None));
    assert_refused(v.apikey_verify(&foreign), &foreign, "a key from another vault");
    let flip = |s: &str, i: usize| -> String {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    for i in [0, 3, 4, key.len() / 2, key.len() - 1] {
        assert_refused(v.apikey_verify(&flip(&key, i)), &key, &format!("character {i} changed"));
    }
    let longer = format!("{key}x");
    let cases = [
        ("shorter", &key[..key.len() - 1]),
        ("longer", longer.as_str()),
        ("without the prefix", &key[4..]),
        ("empty", ""),
        ("the prefix alone", "sbx_"),
    ];
    for (what, k) in cases {
        assert_refused(v.apikey_verify(k), &key, what);
    }
    assert_refused(v.apikey_verify(&"sbx_a".repeat(1000)), &key, "very long");

    // Expired: made with an expiry already past (no waiting).
    let mut expired = new_key("expired", DEFAULT_OWNER, Environment::Dev, None);
    expired.expires_at = Some(SystemTime::now() - HOUR);
    let (info, expired_key) = create(&v, &expired);
    assert_eq!(info.status, ApiKeyStatus::Expired);
    assert_refused(v.apikey_verify(&expired_key), &expired_key, "expired");
    let mut later = new_key("later", DEFAULT_OWNER, Environment::Dev, None);
    later.expires_at = Some(SystemTime::now() + HOUR);
    let (_, later_key) = create(&v, &later);
    v.apikey_verify(&later_key).unwrap();

    // Revoked: accepted, then refused.
    v.apikey_verify(&key).unwrap();
    v.apikey_revoke("good", "op").unwrap();
    assert_refused(v.apikey_verify(&key), &key, "revoked");
    let listed = v.apikey_list().unwrap();
    let good = listed.iter().find(|k| k.name == "good").unwrap();
    assert_eq!(good.status, ApiKeyStatus::Revoked);
    assert!(good.revoked_at.is_some());
    // Revoking again changes and records nothing.
    v.apikey_revoke("good", "op").unwrap();
    let revokes = v.audit_list(&AuditQuery { action: Some(AuditAction::ApikeyRevoke), ..Default::default() }).unwrap();
    assert_eq!(revokes.len(), 1);
    assert_refused(v.apikey_verify(&key), &key, "revoked, twice");
}

fn names_are_checked_unique_and_an_unknown_name_points_at_the_list(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    create(&v, &new_key("ci", DEFAULT_OWNER, Environment::Dev, None));
    let e = v.apikey_create(&new_key("ci", "someone-else", Environment::Staging, None), "op").unwrap_err();
    assert!(matches!(e, Error::ApiKeyExists { .. }) && e.to_string().contains("skillbox apikey list"), "{e}");
    v.apikey_revoke("ci", "op").unwrap();
    let e = v.apikey_create(&new_key("ci", DEFAULT_OWNER, Environment::Dev, None), "op").unwrap_err();
    assert!(matches!(e, Error::ApiKeyExists { .. }), "a revoked key keeps its name: {e}");

    let e = v.apikey_revoke("nope", "op").unwrap_err();
    assert!(matches!(e, Error::ApiKeyNotFound { .. }), "{e}");
    assert!(e.to_string().contains("'nope'") && e.to_string().contains("skillbox apikey list"), "{e}");

    for bad in [
        new_key("has space", DEFAULT_OWNER, Environment::Dev, None),
        new_key("", DEFAULT_OWNER, Environment::Dev, None),
        new_key("ok", "bad owner", Environment::Dev, None),
        new_key("ok", DEFAULT_OWNER, Environment::Dev, Some(&[])),
        new_key("ok", DEFAULT_OWNER, Environment::Dev, Some(&["fine", "not fine"])),
    ] {
        let e = v.apikey_create(&bad, "op").unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{bad:?}: {e}");
    }
    assert_eq!(v.apikey_list().unwrap().len(), 1);
}

#[test]
fn the_key_is_never_stored_audited_or_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    let mut keys = Vec::new();
    for (name, env) in [("one", Environment::Dev), ("two", Environment::Production)] {
        let (info, secret) = v.apikey_create(&new_key(name, "tenant", env, Some(&["s"])), "op").unwrap();
        let debug = format!("{info:?} {secret:?} {:?}", v.apikey_verify(secret.expose_secret()).unwrap());
        let key = secret.expose_secret().to_string();
        assert!(!debug.contains(&key[4..]), "Debug shows no key: {debug}");
        assert!(!serde_json::to_string(&info).unwrap().contains(&key[4..]));
        keys.push((key, info.fingerprint));
    }
    v.apikey_revoke("one", "op").unwrap();
    // The stored hash is keyed: not a plain SHA-256 of the key that a guess could be checked against.
    let stored: Vec<u8> =
        raw(&db).query_row("SELECT key_hash FROM api_keys WHERE name = 'one'", [], |r| r.get(0)).unwrap();
    use sha2::Digest;
    assert_eq!(stored.len(), 32);
    assert_ne!(stored[..], sha2::Sha256::digest(keys[0].0.as_bytes())[..]);

    let mut export = Vec::new();
    v.audit_export(&AuditQuery::default(), &mut export).unwrap();
    let rows = v.audit_list(&AuditQuery::default()).unwrap();
    let created: Vec<_> = rows.iter().filter(|r| r.action == AuditAction::ApikeyCreate).collect();
    assert_eq!(created.len(), 2);
    assert_eq!(created[1].detail["fingerprint"], keys[1].1.as_str());
    assert_eq!(created[1].detail["user"], "tenant");
    assert_eq!(created[1].detail["environment"], "production");
    assert_eq!(created[1].detail["skills"], serde_json::json!(["s"]));
    assert_eq!((created[1].owner.as_deref(), created[1].environment), (Some("tenant"), Some(Environment::Production)));
    assert!(
        rows.iter().any(|r| r.action == AuditAction::ApikeyRevoke && r.detail["fingerprint"] == keys[0].1.as_str())
    );
    drop(v);
    let mut files = vec![export];
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(format!("{}{suffix}", db.display())) {
            files.push(b);
        }
    }
    for (key, _) in &keys {
        let random = &key[4..];
        // The key, and no piece of it either.
        for piece in [random, &random[..16], &random[14..30], &random[random.len() - 16..]] {
            for bytes in &files {
                assert!(!contains(bytes, piece.as_bytes()), "(a piece of) the key is stored");
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Pre {
    None,
    Expire,
    Revoke,
}

fn editing_a_keys_row_is_refused_and_reported_by_verify(kind: Kind) {
    let cases: &[(&str, Pre, &str)] = &[
        ("owner (another tenant)", Pre::None, "UPDATE api_keys SET owner = 'tenant-b' WHERE name = 'dev'"),
        (
            "environment (into production)",
            Pre::None,
            "UPDATE api_keys SET environment = 'production' WHERE name = 'dev'",
        ),
        ("skills (every skill)", Pre::None, "UPDATE api_keys SET skills = NULL WHERE name = 'dev'"),
        ("skills (one more)", Pre::None, "UPDATE api_keys SET skills = '[\"admin\",\"report\"]' WHERE name = 'dev'"),
        ("expires_at (un-expired)", Pre::Expire, "UPDATE api_keys SET expires_at = NULL WHERE name = 'dev'"),
        ("revoked_at (un-revoked)", Pre::Revoke, "UPDATE api_keys SET revoked_at = NULL WHERE name = 'dev'"),
        (
            "key_hash (the dev key moved onto the production key's row)",
            Pre::None,
            "CREATE TEMP TABLE dev_hash AS SELECT key_hash FROM api_keys WHERE name = 'dev'; \
             UPDATE api_keys SET key_hash = mac WHERE name = 'dev'; \
             UPDATE api_keys SET key_hash = (SELECT key_hash FROM dev_hash) WHERE name = 'prod';",
        ),
        ("mac removed", Pre::None, "UPDATE api_keys SET mac = NULL WHERE name = 'dev'"),
    ];
    for &(field, pre, sql) in cases {
        let db = TestStore::new(kind);
        let v = new_vault(&db);
        let mut dev = new_key("dev", "tenant-a", Environment::Dev, Some(&["report"]));
        if let Pre::Expire = pre {
            dev.expires_at = Some(SystemTime::now() - HOUR);
        }
        let (_, key) = create(&v, &dev);
        create(&v, &new_key("prod", "tenant-a", Environment::Production, None));
        if let Pre::Revoke = pre {
            v.apikey_revoke("dev", "op").unwrap();
        }
        assert!(v.audit_verify().unwrap().is_ok(), "{field}: before the forgery");
        db.batch(sql);

        let e = v.apikey_verify(&key).unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{field}: {e:?}");
        let m = e.to_string();
        assert!(m.contains("API key") && m.contains("skillbox audit verify"), "{field}: {m}");
        assert!(!m.contains(&key[4..]), "{field}: {m}");
        let p = v.audit_verify().unwrap().problem.expect(field);
        assert_eq!(p.kind, TamperKind::RecordForged, "{field}: {}", p.message);
        assert!(p.message.contains("API key"), "{field}: {}", p.message);
        assert!(matches!(v.apikey_list(), Err(Error::Tampered { .. })), "{field}: list");
        // Revoking the forged row re-checks it first: a write never blesses a forgery.
        let target = if field.starts_with("key_hash") { "prod" } else { "dev" };
        assert!(matches!(v.apikey_revoke(target, "op"), Err(Error::Tampered { .. })), "{field}: revoke");
    }
}

#[test]
fn last_used_at_is_not_covered_and_is_written_at_most_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    let (info, key) = create(&v, &new_key("ci", DEFAULT_OWNER, Environment::Dev, None));
    assert_eq!(info.last_used_at, None);
    let stored = || -> Option<i64> {
        raw(&db).query_row("SELECT last_used_at FROM api_keys WHERE name = 'ci'", [], |r| r.get(0)).unwrap()
    };
    let audit_rows = v.audit_list(&AuditQuery::default()).unwrap().len();

    let first = v.apikey_verify(&key).unwrap().last_used_at.expect("set on first use");
    let written = stored().expect("written on first use");
    assert_eq!(v.apikey_list().unwrap()[0].last_used_at, Some(first));
    // Used again at once: not written again.
    for _ in 0..5 {
        v.apikey_verify(&key).unwrap();
    }
    assert_eq!(stored(), Some(written));
    // Two minutes old: written on the next use. Editing it is not tampering.
    raw(&db).execute("UPDATE api_keys SET last_used_at = ?1", [written - 120_000]).unwrap();
    assert!(v.audit_verify().unwrap().is_ok(), "last_used_at is outside the MAC");
    v.apikey_verify(&key).unwrap();
    assert!(stored().unwrap() >= written, "rewritten");
    // Verification writes no audit rows.
    assert_eq!(v.audit_list(&AuditQuery::default()).unwrap().len(), audit_rows);
}

#[test]
fn a_schema_4_vault_gets_the_api_keys_table_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (v, db) = new_vault_file(dir.path());
    let value = SecretValue::from_single(CredentialKind::Bearer, "tok-schema-4").unwrap();
    v.add(&NewCredential::new(CredentialRef::new("gh"), CredentialKind::Bearer, "github"), &value, "op").unwrap();
    v.grant(&NewGrant::new("triage", CredentialRef::new("gh")), "op").unwrap();
    drop(v);
    raw(&db)
        .execute_batch(
            "DROP TABLE api_keys; ALTER TABLE credentials DROP COLUMN rotate_every; \
             ALTER TABLE credentials DROP COLUMN needs_reauth; ALTER TABLE credentials DROP COLUMN test_url; \
             DROP TABLE leases; PRAGMA user_version = 4;",
        )
        .unwrap();
    let version = || -> i64 { raw(&db).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap() };
    assert_eq!(version(), 4);

    let v = reopen(&db);
    assert_eq!(version(), skillbox_vault::SCHEMA_VERSION);
    assert!(v.audit_verify().unwrap().is_ok(), "rows sealed at schema 4 still check");
    assert!(v.apikey_list().unwrap().is_empty());
    let (_, key) = create(&v, &new_key("ci", DEFAULT_OWNER, Environment::Staging, None));
    assert_eq!(v.apikey_verify(&key).unwrap().environment, Environment::Staging);
    assert!(v.audit_verify().unwrap().is_ok());
    drop(v);
    // Opening again is a no-op, and the key still works.
    let v = reopen(&db);
    assert_eq!(version(), skillbox_vault::SCHEMA_VERSION);
    assert_eq!(v.apikey_verify(&key).unwrap().name, "ci");
}

fn keys_survive_master_key_rotation(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let (_, key) = create(&v, &new_key("ci", "tenant", Environment::Production, None));
    let key_b = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    v.rotate_master_key(&MasterKeySource::Hex(key_b.to_string().into()), "op").unwrap();
    drop(v);
    let v = Vault::open_at(&db.location, &MasterKeySource::Hex(key_b.to_string().into())).unwrap();
    assert_eq!(v.apikey_verify(&key).unwrap().owner, "tenant");
    assert!(v.audit_verify().unwrap().is_ok());
}

fn a_key_is_returned_as_a_secret_string(kind: Kind) {
    let db = TestStore::new(kind);
    let v = new_vault(&db);
    let (_, key): (ApiKeyInfo, SecretString) = v.apikey_create(&NewApiKey::new("plain"), "op").unwrap();
    let info = v.apikey_verify(key.expose_secret()).unwrap();
    assert_eq!((info.owner.as_str(), info.environment, info.skills), (DEFAULT_OWNER, Environment::Dev, None));
}

on_both!(
    a_created_key_verifies_and_fixes_user_environment_and_skills,
    wrong_altered_expired_and_revoked_keys_are_refused_without_detail,
    names_are_checked_unique_and_an_unknown_name_points_at_the_list,
    editing_a_keys_row_is_refused_and_reported_by_verify,
    keys_survive_master_key_rotation,
    a_key_is_returned_as_a_secret_string,
);
