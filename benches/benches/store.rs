//! The vault's two stores, in the same run (issue 12):
//!
//! - `store/resolve`: `Vault::resolve` latency (generation check, grant check, envelope
//!   decrypt, audit append committed) on SQLite (`sqlite`) vs PostgreSQL (`postgres`), with
//!   the setup of `vault.rs`'s `resolve`: one bearer credential, one grant, a pinned policy.
//! - `store/hosts`: resolve throughput with 1, 2 and 4 concurrent hosts on one PostgreSQL
//!   store (`1`, `2`, `4`), and one host on SQLite as the baseline (`sqlite-1`). A "host" is
//!   a `Vault::open_at` of its own (its own connection pool) on an OS thread of its own; each
//!   sample times, wall clock, N resolves split evenly across the hosts (one criterion
//!   iteration = one resolve, so the reported throughput is resolves per second).
//!
//! The PostgreSQL store is a fresh schema on the server `SKILLBOX_TEST_POSTGRES_URL` names,
//! dropped at the end. Without the variable the SQLite parts run and the PostgreSQL parts
//! are reported as skipped. The closing summary gives each function's median (the median
//! of criterion's per-iteration sample times, the same as criterion's median estimate) and
//! the ratios: postgres/sqlite latency, and 2- and 4-host throughput relative to 1 host.
//!
//! Run with
//!
//! ```text
//! SKILLBOX_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p skillbox-benches --bench store
//! ```
//!
//! (about a minute: 20 samples, 1 s warm-up and 3 s measurement per function).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use skillbox_vault::{
    Access, CredentialKind, CredentialRef, DEFAULT_OWNER, Environment, InitOptions, Location, MasterKeySource,
    NewCredential, NewGrant, SecretValue, Vault,
};

const POSTGRES_ENV: &str = "SKILLBOX_TEST_POSTGRES_URL";
const SAMPLES: usize = 20;

fn key() -> MasterKeySource {
    MasterKeySource::Hex("ab".repeat(32).into())
}

fn access() -> Access {
    Access {
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
    }
}

/// A new vault at `location` with one bearer credential, one grant, and the grant pinned.
fn setup(location: &Location) -> Vault {
    let vault = Vault::init_at(location, &key(), &InitOptions::default()).unwrap();
    let id = CredentialRef::new("github");
    let value = SecretValue::from_single(CredentialKind::Bearer, "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB").unwrap();
    vault.add(&NewCredential::new(id.clone(), CredentialKind::Bearer, "github"), &value, "bench").unwrap();
    vault.grant(&NewGrant::new("triage", id), "bench").unwrap();
    vault.resolve(&access()).unwrap(); // pins the policy, as the first real use does
    vault
}

/// A PostgreSQL schema of the bench's own, dropped when this goes.
struct PgSchema {
    admin: String,
    name: String,
    url: String,
}

/// Runs `sql` on `url` (a plain connection, not the vault's).
fn batch(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
        tokio::spawn(conn);
        client.batch_execute(sql).await.expect("schema statement");
    });
}

impl PgSchema {
    fn create() -> Option<PgSchema> {
        let admin = std::env::var(POSTGRES_ENV).ok()?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("sbx_bench_{}_{nanos}", std::process::id());
        batch(&admin, &format!("CREATE SCHEMA {name}"));
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { admin, name, url })
    }

    fn location(&self) -> Location {
        Location::Postgres(self.url.clone())
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        batch(&self.admin, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// Per-iteration times (ns) of every call criterion made, per function; the last `SAMPLES`
/// of a function are its measurement (warm-up calls come first).
#[derive(Default)]
struct Recorded(BTreeMap<String, Vec<f64>>);

impl Recorded {
    fn sink(&mut self, name: &str) -> &mut Vec<f64> {
        self.0.entry(name.to_owned()).or_default()
    }

    /// The median per-iteration time in ns, if the function was measured (not filtered out,
    /// not run once in test mode).
    fn median(&self, name: &str) -> Option<f64> {
        let all = self.0.get(name)?;
        if all.len() < SAMPLES {
            return None;
        }
        let mut m = all[all.len() - SAMPLES..].to_vec();
        m.sort_by(f64::total_cmp);
        let n = m.len();
        Some(if n % 2 == 1 { m[n / 2] } else { (m[n / 2 - 1] + m[n / 2]) / 2.0 })
    }
}

fn record(sink: &mut Vec<f64>, iters: u64, elapsed: Duration) -> Duration {
    sink.push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
    elapsed
}

fn resolve(c: &mut Criterion, pg: Option<&PgSchema>, rec: &mut Recorded) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = setup(&Location::Sqlite(dir.path().join("vault.db")));
    let postgres = pg.map(|pg| setup(&pg.location()));
    let access = access();
    let mut g = c.benchmark_group("store/resolve");
    let mut run = |g: &mut criterion::BenchmarkGroup<'_, _>, name: &str, vault: &Vault| {
        let sink = rec.sink(&format!("resolve/{name}"));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(vault.resolve(black_box(&access)).unwrap());
                }
                record(sink, iters, start.elapsed())
            })
        });
    };
    run(&mut g, "sqlite", &sqlite);
    if let Some(postgres) = &postgres {
        run(&mut g, "postgres", postgres);
    }
    g.finish();
}

/// One host: its own `Vault::open_at` on its own thread, resolving as many times as it is told.
struct Host {
    work: mpsc::Sender<u64>,
    done: mpsc::Receiver<()>,
    thread: JoinHandle<()>,
}

impl Host {
    fn start(location: Location) -> Host {
        let (work, orders) = mpsc::channel::<u64>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let vault = Vault::open_at(&location, &key()).unwrap();
            let access = access();
            vault.resolve(&access).unwrap(); // connects the pool before the clock starts
            report.send(()).unwrap();
            while let Ok(n) = orders.recv() {
                for _ in 0..n {
                    black_box(vault.resolve(&access).unwrap());
                }
                report.send(()).unwrap();
            }
        });
        done.recv().expect("host failed to open the vault");
        Host { work, done, thread }
    }
}

/// `n` resolves split evenly across `hosts`, wall clock from the first order to the last report.
fn run_hosts(hosts: &[Host], n: u64) -> Duration {
    let k = hosts.len() as u64;
    let start = Instant::now();
    for (i, h) in hosts.iter().enumerate() {
        h.work.send(n / k + u64::from((i as u64) < n % k)).unwrap();
    }
    for h in hosts {
        h.done.recv().unwrap();
    }
    start.elapsed()
}

fn stop(hosts: Vec<Host>) {
    for h in hosts {
        drop(h.work);
        h.thread.join().unwrap();
    }
}

fn hosts(c: &mut Criterion, pg: Option<&PgSchema>, rec: &mut Recorded) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Location::Sqlite(dir.path().join("vault.db"));
    drop(setup(&sqlite));
    // The PostgreSQL schema already holds `resolve`'s vault; the hosts share it.
    let mut g = c.benchmark_group("store/hosts");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    let mut run = |g: &mut criterion::BenchmarkGroup<'_, _>, name: &str, location: &Location, count: usize| {
        let started: Vec<Host> = (0..count).map(|_| Host::start(location.clone())).collect();
        let sink = rec.sink(&format!("hosts/{name}"));
        g.bench_function(name, |b| b.iter_custom(|iters| record(sink, iters, run_hosts(&started, iters))));
        stop(started);
    };
    run(&mut g, "sqlite-1", &sqlite, 1);
    if let Some(pg) = pg {
        let location = pg.location();
        for count in [1, 2, 4] {
            run(&mut g, &count.to_string(), &location, count);
        }
    }
    g.finish();
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 { format!("{:.3} ms", ns / 1e6) } else { format!("{:.2} µs", ns / 1e3) }
}

fn summary(rec: &Recorded, postgres: bool) {
    eprintln!("\nstore bench summary (medians; {} CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let latency = |name: &str| rec.median(&format!("resolve/{name}"));
    let rate = |name: &str| rec.median(&format!("hosts/{name}")).map(|ns| 1e9 / ns);
    for name in ["sqlite", "postgres"] {
        if let Some(ns) = latency(name) {
            eprintln!("  store/resolve/{name}: {}", fmt_ns(ns));
        }
    }
    if let (Some(s), Some(p)) = (latency("sqlite"), latency("postgres")) {
        eprintln!("  resolve latency postgres/sqlite: {:.1}x", p / s);
    }
    for name in ["sqlite-1", "1", "2", "4"] {
        if let (Some(r), Some(ns)) = (rate(name), rec.median(&format!("hosts/{name}"))) {
            eprintln!("  store/hosts/{name}: {r:.0} resolves/s ({} per resolve, wall)", fmt_ns(ns));
        }
    }
    if let Some(one) = rate("1") {
        for name in ["2", "4"] {
            if let Some(r) = rate(name) {
                eprintln!("  postgres throughput {name} hosts / 1 host: {:.2}x", r / one);
            }
        }
        if let Some(s) = rate("sqlite-1") {
            eprintln!("  throughput 1 host sqlite / postgres: {:.1}x", s / one);
        }
    }
    if !postgres {
        eprintln!("  skipped store/resolve/postgres and store/hosts/1, 2, 4 (PostgreSQL): {POSTGRES_ENV} is not set");
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let pg = PgSchema::create();
    if pg.is_none() {
        eprintln!("skipping the PostgreSQL parts of the store bench: {POSTGRES_ENV} is not set");
    }
    let mut rec = Recorded::default();
    resolve(&mut c, pg.as_ref(), &mut rec);
    hosts(&mut c, pg.as_ref(), &mut rec);
    c.final_summary();
    summary(&rec, pg.is_some());
    drop(pg);
}
