//! Credential resolution cost: `Vault::resolve` (grant check + envelope
//! decrypt + audit append committed to SQLite) against seed 001's literal
//! scheme (PBKDF2-HMAC-SHA256 with 100,000 iterations + AES-256-GCM on every
//! decrypt) in the same run, plus the bare AES-256-GCM encrypt/decrypt the
//! vault builds on.
//!
//! Run with `cargo bench -p skillbox-benches --bench vault`. Target: resolve
//! median ≤ 20 µs and ≥ 1000× faster than the literal scheme.

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::Sha256;
use skillbox_vault::{
    Access, CredentialKind, CredentialRef, DEFAULT_OWNER, Environment, InitOptions, MasterKeySource, NewCredential,
    NewGrant, SecretValue, Vault,
};

const PLAINTEXT: &[u8] = br#"{"access_token":"ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"}"#;

fn resolve(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKeySource::Hex("ab".repeat(32).into());
    let vault = Vault::init(&dir.path().join("vault.db"), &key, &InitOptions::default()).unwrap();
    let id = CredentialRef::new("github");
    let value = SecretValue::from_single(CredentialKind::Bearer, "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB").unwrap();
    vault.add(&NewCredential::new(id.clone(), CredentialKind::Bearer, "github"), &value, "bench").unwrap();
    vault.grant(&NewGrant::new("triage", id.clone()), "bench").unwrap();
    let access = Access {
        skill: "triage".into(),
        skill_digest: "ab".repeat(32),
        declared_name: "github".into(),
        environment: Environment::Dev,
        owner: DEFAULT_OWNER.into(),
        user: "bench".into(),
        purpose: None,
        one_time_approval: None,
        // What the runtime pins for a typical HTTP credential (compared on every resolve).
        policy: Some(
            r#"{"hosts":["api.github.com"],"http":"bearer","kind":"bearer","limits.fuel":null,"limits.memory":67108864,"limits.timeout_ms":5000,"network.allow":[],"response":"full","sql.write":false}"#
                .into(),
        ),
    };
    vault.resolve(&access).unwrap();
    let mut g = c.benchmark_group("vault");
    g.bench_function("resolve (grant check + decrypt + audit append)", |b| {
        b.iter(|| black_box(vault.resolve(black_box(&access)).unwrap()))
    });
    g.bench_function("reveal (operator read + audit append)", |b| {
        b.iter(|| black_box(vault.reveal(black_box(&id), "bench", None).unwrap()))
    });
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let key = [7u8; 32];
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let nonce = Nonce::from([9u8; 12]);
    let aad = b"vault/credential/version/key";
    let sealed = cipher.encrypt(&nonce, Payload { msg: PLAINTEXT, aad }).unwrap();
    let mut g = c.benchmark_group("aes-256-gcm");
    g.bench_function("encrypt (key schedule + seal, 64 B)", |b| {
        b.iter(|| {
            let c = Aes256Gcm::new_from_slice(black_box(&key)).unwrap();
            black_box(c.encrypt(&nonce, Payload { msg: black_box(PLAINTEXT), aad }).unwrap())
        })
    });
    g.bench_function("decrypt (key schedule + open, 64 B)", |b| {
        b.iter(|| {
            let c = Aes256Gcm::new_from_slice(black_box(&key)).unwrap();
            black_box(c.decrypt(&nonce, Payload { msg: black_box(&sealed), aad }).unwrap())
        })
    });
    g.finish();
}

/// Seed 001's `decryptCredential`: PBKDF2(master, salt, 100,000) then AES-256-GCM, per call.
fn seed_001_literal(c: &mut Criterion) {
    let master = [3u8; 32];
    let salt = [5u8; 16];
    let mut derived = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(&master, &salt, 100_000, &mut derived);
    let nonce = Nonce::from([9u8; 12]);
    let sealed = Aes256Gcm::new_from_slice(&derived).unwrap().encrypt(&nonce, PLAINTEXT).unwrap();
    let mut g = c.benchmark_group("seed-001");
    g.sample_size(10);
    g.bench_function("decrypt (PBKDF2 100k + AES-256-GCM)", |b| {
        b.iter(|| {
            let mut k = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(black_box(&master), &salt, 100_000, &mut k);
            black_box(Aes256Gcm::new_from_slice(&k).unwrap().decrypt(&nonce, black_box(sealed.as_slice())).unwrap())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = resolve, crypto, seed_001_literal
}
criterion_main!(benches);
