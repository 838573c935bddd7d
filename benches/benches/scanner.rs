//! Leak-scanner throughput on 10 MiB of mixed text and JSON (prose, JSON with escapes, base64
//! blobs, hex digests, percent-encoded URLs, a few foreign tokens), searching for 50 secrets
//! (50 opened credentials) with every built-in token rule:
//!
//! - `scanner/copy`: copying the buffer, the floor any scan is measured against;
//! - `scanner/raw`: the raw view alone (redact in place);
//! - `scanner/all-views`: raw plus every decoded view (`Redactor::scan`);
//! - `scanner/rules`: the foreign-token rules alone;
//! - `scanner/inbound`: what a response goes through (redact, views, rules);
//! - `scanner/raw-1`, `scanner/all-views-1`: the same with one secret, as a typical invocation
//!   (one opened credential) has.
//!
//! Run with `cargo bench -p skillbox-benches --bench scanner`.

use std::sync::Arc;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use skillbox_egress::{Redactor, Scanner, SecretMatcher, ViewLimits};
use skillbox_scan::rules::RuleSet;

const SIZE: usize = 10 * 1024 * 1024;

/// Deterministic generator, so every run scans the same text.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn token(&mut self, n: usize) -> String {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| ALNUM[(self.next() % 62) as usize] as char).collect()
    }
}

fn corpus(rng: &mut Rng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "repository",
        "issue",
        "request",
        "token",
        "value",
        "server",
        "response",
        "user",
        "update",
        "created",
        "status",
        "open",
        "closed",
        "label",
        "comment",
        "https://api.example.com/v1/items",
        "id",
    ];
    let mut out = String::with_capacity(SIZE + 4096);
    while out.len() < SIZE {
        match rng.next() % 6 {
            0 | 1 => {
                for _ in 0..20 {
                    out.push_str(rng.pick(WORDS));
                    out.push(' ');
                }
                out.push('\n');
            }
            2 => {
                let id = rng.next() % 100_000;
                let title = rng.pick(WORDS);
                out.push_str(&format!(
                    "{{\"id\":{id},\"title\":\"{title} caf\\u00e9\",\"url\":\"https:\\/\\/example.com\\/{id}\",\"body\":\"{} {}\"}}\n",
                    rng.pick(WORDS),
                    rng.pick(WORDS)
                ));
            }
            3 => {
                let n = 30 + (rng.next() % 150) as usize;
                let blob = rng.bytes(n);
                out.push_str(&format!("data: {}\n", base64::engine::general_purpose::STANDARD.encode(blob)));
            }
            4 => {
                let digest = rng.bytes(32);
                out.push_str(&format!("sha256={} next=%2Fpage%3D{}\n", hex_string(&digest), rng.next() % 100));
            }
            _ => {
                // An occasional foreign token for the rules to find.
                if rng.next() % 50 == 0 {
                    out.push_str(&format!("leaked ghp_{} here\n", rng.token(36)));
                }
            }
        }
    }
    out.into_bytes()
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn scanner(c: &mut Criterion) {
    let mut rng = Rng(0x5EED_1234_ABCD_0042);
    let text = corpus(&mut rng);
    let mut secrets = Redactor::empty();
    for i in 0..50 {
        let token = format!("tok{i}_{}", rng.token(36));
        secrets.push(Arc::new(SecretMatcher::new(&format!("cred{i}"), [token.as_bytes()])));
    }
    let rules = RuleSet::builtin();
    let scan = Scanner { secrets: secrets.clone(), rules: rules.clone(), ..Scanner::default() };
    let limits = ViewLimits::default();
    assert!(secrets.scan(&text, &limits).unwrap().is_none(), "the corpus holds none of the secrets");

    let mut group = c.benchmark_group("scanner");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    group.bench_function("copy", |b| b.iter(|| std::hint::black_box(text.clone())));
    group.bench_function("raw", |b| b.iter(|| std::hint::black_box(secrets.redact(&text).len())));
    group.bench_function("all-views", |b| b.iter(|| std::hint::black_box(secrets.scan(&text, &limits).unwrap())));
    group.bench_function("rules", |b| b.iter(|| std::hint::black_box(rules.find(&text).len())));
    group.bench_function("inbound", |b| b.iter(|| std::hint::black_box(scan.inbound(&text).unwrap().foreign.len())));
    let one = Redactor::empty().with(Arc::new(SecretMatcher::new("one", [format!("tok_{}", rng.token(36))])));
    group.bench_function("raw-1", |b| b.iter(|| std::hint::black_box(one.redact(&text).len())));
    group.bench_function("all-views-1", |b| b.iter(|| std::hint::black_box(one.scan(&text, &limits).unwrap())));
    group.finish();
}

criterion_group!(benches, scanner);
criterion_main!(benches);
