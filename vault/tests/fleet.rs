//! Several hosts on one PostgreSQL store: concurrent writers keep one audit chain, a host
//! killed mid-append leaves nothing half-written, a revocation on one host is refused by
//! another at its next use, `migrate_to` moves a vault both ways, and a database that goes
//! away fails credential calls closed until it comes back.
//!
//! Every test needs `SKILLBOX_TEST_POSTGRES_URL` and reports that it was skipped without it.
//! "Hosts" are separate processes (this test binary run again with `FLEET_CHILD` set, see
//! `fleet_child_entry`), each with its own connection pool.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use skillbox_vault::*;

mod common;
use common::{Kind, TestStore};

const KEY: &str = "c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0";
const DIGEST: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const CHILD: &str = "FLEET_CHILD";

fn key() -> MasterKeySource {
    MasterKeySource::Hex(KEY.to_string().into())
}

fn access(skill: &str, name: &str) -> Access {
    Access {
        skill: skill.into(),
        skill_digest: DIGEST.into(),
        declared_name: name.into(),
        environment: Environment::Dev,
        owner: DEFAULT_OWNER.into(),
        user: "fleet".into(),
        purpose: Some("fleet test".into()),
        one_time_approval: None,
        policy: None,
    }
}

fn add(v: &Vault, name: &str, token: &str) {
    let value = SecretValue::from_single(CredentialKind::Bearer, token).unwrap();
    v.add(&NewCredential::new(CredentialRef::new(name), CredentialKind::Bearer, "svc"), &value, "op").unwrap();
}

fn token(v: &SecretValue) -> String {
    v.as_bearer().unwrap().access_token.expose_secret().to_string()
}

/// A PostgreSQL store, or `None` (and a note that the test was skipped).
fn postgres(test: &str) -> Option<TestStore> {
    Kind::postgres(test).map(TestStore::new)
}

fn child(role: &str, url: &str, extra: &[(&str, String)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "fleet_child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .env("FLEET_STORE", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

/// Not a test of its own: what a child process ("another host") does.
#[test]
fn fleet_child_entry() {
    let Ok(role) = std::env::var(CHILD) else { return };
    let url = std::env::var("FLEET_STORE").unwrap();
    let v = Vault::open_at(&Location::parse(&url), &key()).unwrap();
    let mut out = std::io::stdout();
    match role.as_str() {
        // N resolves and N grants, interleaved.
        "work" => {
            let n: usize = std::env::var("FLEET_N").unwrap().parse().unwrap();
            let me = std::env::var("FLEET_ID").unwrap();
            for i in 0..n {
                assert_eq!(token(&v.resolve(&access("fleet", "shared")).unwrap().value), "tok-shared");
                v.grant(&NewGrant::new(format!("skill-{me}-{i}"), CredentialRef::new("shared")), "op").unwrap();
            }
            writeln!(out, "done").unwrap();
        }
        // Resolve forever, saying how many so far (the parent kills it).
        "forever" => {
            for i in 0.. {
                v.resolve(&access("fleet", "shared")).unwrap();
                writeln!(out, "{i}").unwrap();
                out.flush().unwrap();
            }
        }
        "revoke" => {
            v.revoke(&CredentialRef::new("shared"), "leaked", "other-host").unwrap();
            writeln!(out, "revoked").unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn shared_vault(db: &TestStore) -> Vault {
    let v = db.init_with(&key());
    add(&v, "shared", "tok-shared");
    v.grant(&NewGrant::new("fleet", CredentialRef::new("shared")), "op").unwrap();
    v
}

#[test]
fn four_hosts_resolving_and_granting_at_once_keep_one_chain() {
    let Some(db) = postgres("four_hosts_resolving_and_granting_at_once_keep_one_chain") else { return };
    let v = shared_vault(&db);
    v.resolve(&access("fleet", "shared")).unwrap(); // pins the grant (one `pin` row), so hosts do not
    let before = v.audit_verify().unwrap().rows;
    const HOSTS: usize = 4;
    const N: usize = 500;
    let children: Vec<_> = (0..HOSTS)
        .map(|i| {
            child("work", &db.url(), &[("FLEET_N", N.to_string()), ("FLEET_ID", i.to_string())])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a host failed: {:?}\n{stderr}", out.status);
        assert!(
            String::from_utf8_lossy(&out.stdout).lines().any(|l| l.ends_with("done")),
            "a host did not finish\n{stderr}"
        );
    }
    let report = v.audit_verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    // Every resolve wrote one `read` row and every grant one `grant` row; nothing else.
    assert_eq!(report.rows, before + (HOSTS * N * 2) as u64);
    assert_eq!(db.i64("SELECT count(*) FROM audit"), (before + (HOSTS * N * 2) as u64) as i64);
    assert_eq!(db.i64("SELECT count(*) FROM grants"), 1 + (HOSTS * N) as i64);
    // The ids are one gapless line.
    assert_eq!(db.i64("SELECT max(id) - min(id) + 1 FROM audit"), report.rows as i64);
}

#[test]
fn a_host_killed_mid_append_leaves_a_chain_that_verifies() {
    let Some(db) = postgres("a_host_killed_mid_append_leaves_a_chain_that_verifies") else { return };
    let v = shared_vault(&db);
    for round in 0..3 {
        let mut c = child("forever", &db.url(), &[]).spawn().unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        // Let it append for a while (a different number of rows each round), then SIGKILL it.
        let want = 20 + round * 37;
        // (Other lines are the test harness's own.)
        for line in lines.by_ref() {
            if line.unwrap().trim().parse::<usize>().is_ok_and(|n| n >= want) {
                break;
            }
        }
        c.kill().unwrap();
        c.wait().unwrap();
        let report = v.audit_verify().unwrap();
        assert!(report.is_ok(), "round {round}: {:?}", report.problem);
        // The server released the dead host's lock: this host appends at once.
        v.resolve(&access("fleet", "shared")).unwrap();
    }
    assert!(v.audit_verify().unwrap().is_ok());
}

#[test]
fn a_revocation_on_one_host_is_refused_by_another_at_its_next_use() {
    let Some(db) = postgres("a_revocation_on_one_host_is_refused_by_another_at_its_next_use") else { return };
    let v = shared_vault(&db);
    let a = access("fleet", "shared");
    let opened = v.resolve(&a).unwrap();
    assert_eq!(token(&opened.value), "tok-shared");
    let seen = v.generation().unwrap();
    assert_eq!(v.generation().unwrap(), seen, "nothing changed yet");
    v.recheck(&a).unwrap();

    let mut announced = v.watch_changes().expect("PostgreSQL announces changes");
    let out = child("revoke", &db.url(), &[]).output().unwrap();
    assert!(out.status.success());
    // The announcement of the revocation's generation arrives (best effort, but on a healthy
    // connection it does; earlier changes' announcements may arrive first).
    let target = v.generation().unwrap().counter();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), announced.wait_for(|g| *g >= target)).await.map(|r| r.is_ok())
    })
    .expect("NOTIFY reached this host");
    assert_eq!(*announced.borrow(), target, "it announces the new generation");
    // The next use on this host sees the change and refuses.
    assert_ne!(v.generation().unwrap(), seen, "the other host's revocation moved the generation");
    assert!(matches!(v.recheck(&a), Err(Error::Revoked { .. })), "{:?}", v.recheck(&a));
    assert!(matches!(v.resolve(&a), Err(Error::Revoked { .. })));
    assert!(v.audit_verify().unwrap().is_ok());
}

#[test]
fn migrate_moves_a_vault_sqlite_to_postgres_and_back() {
    let Some(pg) = postgres("migrate_moves_a_vault_sqlite_to_postgres_and_back") else { return };
    let sqlite = TestStore::new(Kind::Sqlite);
    let v = sqlite.init_with(&key());
    for i in 0..30 {
        add(&v, &format!("c{i}"), &format!("tok-{i}-value"));
        let mut g = NewGrant::new(format!("skill{}", i % 4), CredentialRef::new(format!("c{i}")));
        g.hosts = Some(vec![format!("api{i}.example.com")]);
        v.grant(&g, "op").unwrap();
    }
    v.rotate(&CredentialRef::new("c3"), &SecretValue::from_single(CredentialKind::Bearer, "tok-3-new").unwrap(), "op")
        .unwrap();
    v.revoke(&CredentialRef::new("c4"), "gone", "op").unwrap();
    let (_, api_key) = v
        .apikey_create(
            &NewApiKey {
                name: "ci".into(),
                owner: DEFAULT_OWNER.into(),
                environment: Environment::Dev,
                skills: None,
                expires_at: None,
            },
            "op",
        )
        .unwrap();
    for i in (0..10).filter(|i| *i != 4) {
        v.resolve(&access(&format!("skill{}", i % 4), &format!("c{i}"))).unwrap();
    }

    let snapshot = |v: &Vault| {
        let creds = serde_json::to_string(&v.list(&ListFilter::default()).unwrap()).unwrap();
        let grants = serde_json::to_string(&v.grants(&GrantFilter::default()).unwrap()).unwrap();
        let values: Vec<String> = (0..30)
            .filter(|i| *i != 4)
            .map(|i| token(&v.reveal(&CredentialRef::new(format!("c{i}")), "check", None).unwrap()))
            .collect();
        (creds, grants, values)
    };
    let audit = |v: &Vault| -> Vec<(i64, String, String)> {
        v.audit_list(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.action.to_string(), e.actor))
            .collect()
    };

    let report = v.migrate_to(&pg.location, "op").unwrap();
    assert_eq!(report.rows["credentials"], 30);
    assert_eq!(report.rows["grants"], 30);
    let on_pg = Vault::open_at(&pg.location, &key()).unwrap();
    assert!(on_pg.audit_verify().unwrap().is_ok());
    assert_eq!(audit(&on_pg), audit(&v), "every audit row, the migrate row included");
    let before = snapshot(&v);
    assert_eq!(snapshot(&on_pg), before);
    assert!(on_pg.apikey_verify(api_key.expose_secret()).is_ok());
    assert!(matches!(on_pg.resolve(&access("skill0", "c4")), Err(Error::Revoked { .. })));

    // A non-empty target is refused, and left as it was.
    let (source_rows, target_rows) = (audit(&v), audit(&on_pg));
    let e = v.migrate_to(&pg.location, "op").unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!((audit(&v), audit(&on_pg)), (source_rows, target_rows), "a refused migration changes neither vault");

    // And back to a new SQLite file.
    let back = TestStore::new(Kind::Sqlite);
    on_pg.migrate_to(&back.location, "op").unwrap();
    let v2 = Vault::open_at(&back.location, &key()).unwrap();
    assert!(v2.audit_verify().unwrap().is_ok());
    assert_eq!(audit(&v2), audit(&on_pg));
    assert_eq!(snapshot(&v2), before);
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");
}

/// A TCP relay to PostgreSQL that can be cut and restored: the database "going away" as a
/// host sees it.
struct Relay {
    port: u16,
    upstream: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    rt: tokio::runtime::Runtime,
}

impl Relay {
    fn start(upstream: &str) -> Relay {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut relay = Relay { port, upstream: upstream.to_owned(), stop: None, rt };
        relay.resume();
        relay
    }

    fn resume(&mut self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (port, upstream) = (self.port, self.upstream.clone());
        self.rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            tokio::spawn(async move {
                let mut stop = rx.clone();
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        Ok((mut inbound, _)) = listener.accept() => {
                            let upstream = upstream.clone();
                            let mut stop = rx.clone();
                            tokio::spawn(async move {
                                let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = stop.changed() => {}
                                }
                            });
                        }
                    }
                }
            });
        });
        self.stop = Some(tx);
    }

    /// Closes the listener and every relayed connection.
    fn cut(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        // Let the tasks see it and drop their sockets.
        self.rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

#[test]
fn the_database_going_away_fails_credential_calls_closed_until_it_returns() {
    let Some(db) = postgres("the_database_going_away_fails_credential_calls_closed_until_it_returns") else { return };
    shared_vault(&db);
    let url = db.url();
    let (host_port, rest) = {
        let after = url.split_once('@').map(|(_, r)| r).unwrap_or(url.split_once("://").unwrap().1);
        let end = after.find('/').unwrap();
        (after[..end].to_owned(), after[end..].to_owned())
    };
    let upstream = if host_port.contains(':') { host_port.clone() } else { format!("{host_port}:5432") };
    let mut relay = Relay::start(&upstream);
    let user = url.split_once("://").unwrap().1.split_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    let relayed = Location::Postgres(format!("postgres://{user}127.0.0.1:{}{rest}", relay.port));
    let v = Arc::new(Vault::open_at(&relayed, &key()).unwrap());
    let a = access("fleet", "shared");
    v.resolve(&a).unwrap();

    relay.cut();
    let started = Instant::now();
    let e = v.resolve(&a).unwrap_err();
    assert!(matches!(e, Error::Database(_)), "{e}");
    assert!(e.to_string().contains("vault database"), "{e}");
    assert!(!e.to_string().contains("tok-shared"));
    assert!(v.generation().is_err(), "the generation check fails too, so a host rechecks and refuses");
    assert!(started.elapsed() < Duration::from_secs(20), "failed closed promptly: {:?}", started.elapsed());

    relay.resume();
    let mut recovered = false;
    for _ in 0..50 {
        if v.resolve(&a).is_ok() {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "the vault works again once the database is back");
    assert!(v.audit_verify().unwrap().is_ok());
}
