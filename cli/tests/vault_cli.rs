//! End-to-end tests of the vault commands, run against the real `skillbox` binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const KEY_A: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    vault: PathBuf,
    key: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let env = Env { vault: root.join("data/vault.db"), root, _dir: dir, key: KEY_A.into() };
        env.ok(&["vault", "init"], None);
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skillbox"));
        c.args(args)
            .env_remove("SKILLBOX_KEY_FILE")
            .env_remove("SKILLBOX_PASSPHRASE")
            .env_remove("SKILLBOX_NEW_MASTER_KEY")
            .env("SKILLBOX_VAULT", &self.vault)
            .env("SKILLBOX_MASTER_KEY", &self.key)
            .env("USER", "tester")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run_with(&self, mut c: Command, stdin: Option<&str>) -> Output {
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(self.cmd(args), stdin)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_secret_in_argv_is_refused_with_the_safe_ways() {
    let env = Env::new();
    for flag in ["--value", "--secret", "--password", "--token"] {
        let secret = "sk_live_ARGV_CANARY";
        let out = env.run(&["cred", "add", "gh", "--type", "bearer", "--service", "github", flag, secret], None);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = stderr(&out);
        assert!(err.contains("refusing to take a secret from the command line"), "{err}");
        for way in ["prompt", "--value-stdin", "--value-file"] {
            assert!(err.contains(way), "{flag}: message should explain {way}: {err}");
        }
        assert!(!err.contains(secret), "the refused secret was echoed");
        // `--flag=value` form, and rotate, too.
        let eq = format!("{flag}={secret}");
        let out = env.run(&["cred", "rotate", "gh", &eq], None);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("refusing") && !stderr(&out).contains(secret));
    }
    // Nothing was stored.
    assert!(!env.ok(&["cred", "list"], None).contains("gh"));
}

#[test]
fn lifecycle_through_the_cli_never_prints_a_value() {
    let env = Env::new();
    let canary = "ghp_CLI_CANARY_5e2f";
    env.ok(
        &[
            "cred",
            "add",
            "gh",
            "--type",
            "bearer",
            "--service",
            "github",
            "--env",
            "production",
            "--value-stdin",
            "--scopes",
            "repo,read:org",
            "--expires",
            "30d",
        ],
        Some(&format!("{canary}\n")),
    );
    let file = env.root.join("pg.json");
    std::fs::write(
        &file,
        r#"{"driver":"postgres","host":"db","database":"app","user":"svc","password":"PG_CANARY_77"}"#,
    )
    .unwrap();
    env.ok(
        &["cred", "add", "pg", "--type", "database", "--service", "postgres", "--value-file", file.to_str().unwrap()],
        None,
    );

    let list = env.ok(&["cred", "list"], None);
    let list_json = env.ok(&["cred", "list", "--json"], None);
    let show = env.ok(&["cred", "show", "gh", "--env", "production"], None);
    let show_json = env.ok(&["cred", "show", "gh", "--env", "production", "--json"], None);
    for out in [&list, &list_json, &show, &show_json] {
        assert!(!out.contains(canary) && !out.contains("PG_CANARY_77"), "value printed:\n{out}");
    }
    assert!(list.contains("gh") && list.contains("pg") && list.contains("production"));
    let v: serde_json::Value = serde_json::from_str(&show_json).unwrap();
    assert_eq!(v["kind"], "bearer");
    assert_eq!(v["scopes"], serde_json::json!(["repo", "read:org"]));
    assert!(v["fingerprint"].as_str().unwrap().starts_with('…'));
    let filtered: serde_json::Value =
        serde_json::from_str(&env.ok(&["cred", "list", "--json", "--type", "database"], None)).unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    // Rotate, grant, revoke, delete.
    env.ok(&["cred", "rotate", "gh", "--env", "production", "--value-stdin"], Some("ghp_ROTATED_9"));
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["cred", "show", "gh", "--env", "production", "--json"], None)).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    env.ok(
        &[
            "grant",
            "triage",
            "gh",
            "--env",
            "production",
            "--reason",
            "triage bot",
            "--expires",
            "7d",
            "--as",
            "github",
            "--hosts",
            "api.github.com",
        ],
        None,
    );
    let grants: serde_json::Value = serde_json::from_str(&env.ok(&["grants", "--json"], None)).unwrap();
    assert_eq!(grants[0]["alias"], "github");
    assert_eq!(grants[0]["hosts"], serde_json::json!(["api.github.com"]));
    env.ok(&["ungrant", "triage", "gh", "--env", "production", "--as", "github"], None);
    env.ok(&["cred", "revoke", "pg", "--reason", "rotating the db password"], None);
    let out = env.run(&["cred", "delete", "pg"], None);
    assert_eq!(out.status.code(), Some(2), "delete without --yes off a terminal must refuse");
    env.ok(&["cred", "delete", "pg", "--yes"], None);
    let out = env.run(&["cred", "show", "pg"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no credential 'pg'"));

    // Audit: list, summary, export, verify; no value anywhere.
    let audit = env.ok(&["audit", "list", "--json"], None);
    let rows: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let actions: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "create", "rotate", "grant", "ungrant", "revoke", "delete"]);
    // The actor is the process's OS account, whatever $USER says.
    let account = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert!(rows.as_array().unwrap().iter().all(|r| r["actor"] == account.trim()), "{rows}");
    let summary: serde_json::Value = serde_json::from_str(&env.ok(&["audit", "summary", "--json"], None)).unwrap();
    assert_eq!(summary["total"], 7);
    let export = env.root.join("audit.jsonl");
    env.ok(&["audit", "export", export.to_str().unwrap()], None);
    let lines = std::fs::read_to_string(&export).unwrap();
    assert_eq!(lines.lines().count(), 7);
    for text in [&audit, &lines] {
        assert!(!text.contains(canary) && !text.contains("PG_CANARY_77") && !text.contains("ghp_ROTATED_9"));
    }
    assert!(env.ok(&["audit", "verify"], None).contains("intact"));
    let creates = env.ok(&["audit", "list", "--action", "create", "--credential", "gh"], None);
    assert_eq!(creates.lines().count(), 1);
}

#[test]
fn audit_verify_exits_nonzero_naming_the_tampered_row() {
    let env = Env::new();
    for name in ["a", "b", "c"] {
        env.ok(&["cred", "add", name, "--type", "api_key", "--service", "s", "--value-stdin"], Some("k-0123456789"));
    }
    let c = rusqlite::Connection::open(&env.vault).unwrap();
    c.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2", []).unwrap();
    drop(c);
    let out = env.run(&["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("audit row 2 was edited"), "{}", stderr(&out));
}

#[test]
fn master_key_sources_wrong_key_and_key_rotation() {
    let mut env = Env::new();
    env.ok(&["cred", "add", "k", "--type", "hmac_key", "--service", "s", "--value-stdin"], Some("hmac-secret"));
    // No key at all, no terminal: the three ways are listed.
    let out = env.run_with(
        {
            let mut c = env.cmd(&["cred", "list"]);
            c.env_remove("SKILLBOX_MASTER_KEY");
            c
        },
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for way in ["SKILLBOX_MASTER_KEY", "--key-file", "SKILLBOX_PASSPHRASE"] {
        assert!(err.contains(way), "{err}");
    }
    // Wrong key: clear message, and the vault file is unchanged.
    let before = std::fs::read(&env.vault).unwrap();
    env.key = KEY_B.into();
    let out = env.run(&["cred", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not open the vault"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&env.vault).unwrap(), before);

    // Rotate to a key file.
    env.key = KEY_A.into();
    let kf = env.root.join("new.key");
    let mut c = env.cmd(&["key", "rotate", "--new-key-file", kf.to_str().unwrap()]);
    c.env_remove("SKILLBOX_NEW_MASTER_KEY");
    std::fs::write(&kf, format!("{KEY_B}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = env.run_with(c, None);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    env.ok(&["key", "rotate", "--new-key-file", kf.to_str().unwrap()], None);
    assert_eq!(env.run(&["cred", "list"], None).status.code(), Some(2), "the old key no longer opens it");
    let mut c = env.cmd(&["cred", "show", "k", "--json"]);
    c.env_remove("SKILLBOX_MASTER_KEY").args(["--key-file", kf.to_str().unwrap()]);
    let out = env.run_with(c, None);
    assert!(out.status.success(), "{}", stderr(&out));

    // Backup opens with the same (new) key.
    env.key = KEY_B.into();
    let backup = env.root.join("backup.db");
    env.ok(&["vault", "backup", backup.to_str().unwrap()], None);
    let mut c = env.cmd(&["cred", "list", "--json"]);
    c.env("SKILLBOX_VAULT", &backup);
    let out = env.run_with(c, None);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"k\""));
}

#[test]
fn grant_with_a_skill_path_pins_the_component_digest() {
    let env = Env::new();
    env.ok(&["cred", "add", "gh", "--type", "bearer", "--service", "github", "--value-stdin"], Some("tok-0123456789"));
    let skill = env.root.join("skill");
    std::fs::create_dir(&skill).unwrap();
    std::fs::write(
        skill.join("skill.toml"),
        "[skill]\nname = \"triage\"\nversion = \"0.1.0\"\ncomponent = \"c.wasm\"\n\
         [[credentials]]\nname = \"gh\"\nkind = \"bearer\"\nhosts = [\"api.github.com\"]\n",
    )
    .unwrap();
    std::fs::write(skill.join("c.wasm"), b"not really wasm").unwrap();
    let out = env.ok(&["grant", skill.to_str().unwrap(), "gh", "--json"], None);
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["skill"], "triage");
    // ...and its policy for the credential, as the operator sees it now.
    let policy: serde_json::Value = serde_json::from_str(g["policy"].as_str().unwrap()).unwrap();
    assert_eq!(policy["hosts"], serde_json::json!(["api.github.com"]));
    assert_eq!(policy["kind"], "bearer");
    // sha256("not really wasm")
    assert_eq!(g["skill_digest"].as_str().unwrap().len(), 64);
    let expected = sha256_hex(&skill.join("c.wasm"));
    assert_eq!(g["skill_digest"], expected.as_str());
    let out = env.run(&["grant", "triage", "nope"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("skillbox cred add nope"), "{}", stderr(&out));
}

fn sha256_hex(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn concurrent_cli_writers_lose_nothing() {
    let env = Env::new();
    let kids: Vec<_> = (0..8)
        .map(|i| {
            let name = format!("c{i}");
            let mut c = env.cmd(&["cred", "add", &name, "--type", "api_key", "--service", "s", "--value-stdin"]);
            let mut child = c.spawn().unwrap();
            child.stdin.take().unwrap().write_all(format!("key-{i}-0123456789").as_bytes()).unwrap();
            child
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["cred", "list", "--json"], None)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 8);
    assert!(env.ok(&["audit", "verify"], None).contains("8 rows"));
}

#[test]
fn grant_response_narrowing_and_status_show_in_grants() {
    let env = Env::new();
    env.ok(&["cred", "add", "gh", "--type", "bearer", "--service", "github", "--value-stdin"], Some("ghp_0123456789"));
    let out = env.run(&["grant", "triage", "gh", "--response", "status"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("responses narrowed to status"), "{}", stderr(&out));
    let grants: serde_json::Value = serde_json::from_str(&env.ok(&["grants", "--json"], None)).unwrap();
    assert_eq!(grants[0]["response"], "status");
    assert_eq!(grants[0]["status"], "active");
    assert_eq!(grants[0]["suspended_at"], serde_json::Value::Null);
    assert_eq!(grants[0]["suspended_reason"], serde_json::Value::Null);
    let table = env.ok(&["grants"], None);
    assert!(table.contains("STATUS") && table.contains("RESPONSE") && table.contains("active"), "{table}");
    let filtered: serde_json::Value =
        serde_json::from_str(&env.ok(&["grants", "--json", "--status", "suspended"], None)).unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 0);
    let out = env.run(&["grant", "triage", "gh", "--response", "body"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("full, headers") || stderr(&out).contains("status, headers, full"),
        "{}",
        stderr(&out)
    );
    // Granting again without --response widens back to the manifest's.
    env.ok(&["grant", "triage", "gh"], None);
    let grants: serde_json::Value = serde_json::from_str(&env.ok(&["grants", "--json"], None)).unwrap();
    assert_eq!(grants[0]["response"], serde_json::Value::Null);
}

#[test]
fn a_suspended_grant_shows_in_grants_and_granting_again_re_enables_it() {
    let env = Env::new();
    env.ok(&["cred", "add", "gh", "--type", "bearer", "--service", "github", "--value-stdin"], Some("ghp_0123456789"));
    env.ok(&["grant", "triage", "gh", "--any-digest"], None);
    // Suspend it the way the runtime does: through the library.
    {
        let vault = open_lib_vault(&env);
        let mut ev = skillbox_vault::AuditEvent::new(skillbox_vault::AuditAction::Tripwire, "tester");
        ev.skill = Some("triage".into());
        ev.credential = Some(skillbox_vault::CredentialRef::new("gh"));
        ev.detail = serde_json::json!({ "digest": "ab".repeat(32), "channel": "log" });
        ev.success = false;
        let out = vault.record_tripwire(&ev, 1, std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(out.suspended.len(), 1);
    }
    let grants: serde_json::Value = serde_json::from_str(&env.ok(&["grants", "--json"], None)).unwrap();
    assert_eq!(grants[0]["status"], "suspended");
    assert!(grants[0]["suspended_at"].is_string());
    assert!(grants[0]["suspended_reason"].as_str().unwrap().contains("1 tripwire within 1h by component abababababab"));
    let table = env.ok(&["grants"], None);
    assert!(
        table.contains("suspended") && table.contains("re-enable with `skillbox grant triage gh --any-digest`"),
        "{table}"
    );
    let out = env.run(&["grant", "triage", "gh", "--any-digest"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("re-enabled the suspended grant"), "{}", stderr(&out));
    let grants: serde_json::Value = serde_json::from_str(&env.ok(&["grants", "--json"], None)).unwrap();
    assert_eq!(grants[0]["status"], "active");
    let resumes = env.ok(&["audit", "list", "--action", "resume"], None);
    assert_eq!(resumes.lines().count(), 1, "{resumes}");
    assert!(env.ok(&["audit", "verify"], None).contains("intact"));
}

fn open_lib_vault(env: &Env) -> skillbox_vault::Vault {
    let key = skillbox_vault::MasterKeySource::Hex(env.key.clone().into());
    skillbox_vault::Vault::open(&env.vault, &key).unwrap()
}

#[test]
fn a_short_secret_is_refused_unless_allowed() {
    let env = Env::new();
    let short = "q7Z";
    for args in [
        &["cred", "add", "k", "--type", "api_key", "--service", "s", "--value-stdin"][..],
        &["cred", "add", "b", "--type", "basic", "--service", "s", "--value-stdin"][..],
    ] {
        let value = if args[4] == "basic" {
            format!(r#"{{"username":"alice","password":"{short}"}}"#)
        } else {
            short.to_string()
        };
        let out = env.run(args, Some(&value));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--allow-short-secret") && err.contains("shorter than 8 bytes"), "{err}");
        assert!(!err.contains(short), "the value was echoed: {err}");
    }
    assert!(!env.ok(&["cred", "list"], None).contains("api_key"), "nothing was stored");
    let mut with_flag = vec!["cred", "add", "k", "--type", "api_key", "--service", "s", "--value-stdin"];
    with_flag.push("--allow-short-secret");
    env.ok(&with_flag, Some(short));
    // Rotate applies the same floor.
    let out = env.run(&["cred", "rotate", "k", "--value-stdin"], Some("x2"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--allow-short-secret"), "{}", stderr(&out));
    env.ok(&["cred", "rotate", "k", "--value-stdin"], Some("long-enough-now"));
    env.ok(&["cred", "rotate", "k", "--value-stdin", "--allow-short-secret"], Some("x2"));
    let show: serde_json::Value = serde_json::from_str(&env.ok(&["cred", "show", "k", "--json"], None)).unwrap();
    assert_eq!(show["version"], 3);
}

#[test]
fn a_short_skillbox_passphrase_is_refused_like_the_prompt_and_a_weakened_kdf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { vault: dir.path().join("v.db"), root: dir.path().to_path_buf(), _dir: dir, key: KEY_A.into() };
    let with_pass = |args: &[&str], pass: &str| {
        let mut c = env.cmd(args);
        c.env_remove("SKILLBOX_MASTER_KEY").env("SKILLBOX_PASSPHRASE", pass);
        env.run_with(c, None)
    };
    let out = with_pass(&["vault", "init", "--passphrase"], "elevenchars");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The same words as the prompt's check (both call one function).
    assert!(stderr(&out).contains("use a passphrase of at least 12 characters"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("elevenchars"));
    assert!(!env.vault.exists());

    let pass = "a long enough passphrase";
    let out = with_pass(&["vault", "init", "--passphrase"], pass);
    assert!(out.status.success(), "{}", stderr(&out));
    rusqlite::Connection::open(&env.vault)
        .unwrap()
        .execute("UPDATE meta SET value = CAST('1' AS BLOB) WHERE key = 'kdf_iterations'", [])
        .unwrap();
    let out = with_pass(&["cred", "list"], pass);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("key-derivation parameters were weakened"), "{err}");
    assert!(err.contains("skillbox audit verify"), "{err}");
}

#[test]
fn a_damaged_audit_head_stops_writes_until_audit_repair_and_anchors_catch_rollback() {
    let env = Env::new();
    let add = |name: &str| {
        env.run(&["cred", "add", name, "--type", "bearer", "--service", "s", "--value-stdin"], Some("tok-anchor-1234"))
    };
    for n in ["a", "b"] {
        assert!(add(n).status.success());
    }
    let a1 = env.root.join("a1.json");
    env.ok(&["audit", "anchor", "--out", a1.to_str().unwrap()], None);
    let anchor: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&a1).unwrap()).unwrap();
    assert_eq!(anchor["count"], 2);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&env.ok(&["audit", "anchor"], None)).unwrap(), anchor);
    assert!(add("c").status.success());
    let old = env.root.join("old.db");
    std::fs::copy(&env.vault, &old).unwrap();
    assert!(add("d").status.success());
    let a2 = env.root.join("a2.json");
    env.ok(&["audit", "anchor", "--out", a2.to_str().unwrap()], None);
    for a in [&a1, &a2] {
        assert!(env.ok(&["audit", "verify", "--anchor", a.to_str().unwrap()], None).contains("extends the anchor"));
    }
    // The older copy of the file (a rollback) does not extend the newer anchor.
    let mut c = env.cmd(&["audit", "verify", "--anchor", a2.to_str().unwrap()]);
    c.env("SKILLBOX_VAULT", &old);
    let out = env.run_with(c, None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not extend the anchor"), "{}", stderr(&out));

    // Delete the newest 2 rows and spoil the head: writes stop, naming the fix.
    let db = rusqlite::Connection::open(&env.vault).unwrap();
    db.execute("DELETE FROM audit WHERE id > (SELECT max(id) - 2 FROM audit)", []).unwrap();
    db.execute("UPDATE meta SET value = zeroblob(80) WHERE key = 'audit_head'", []).unwrap();
    drop(db);
    let out = add("e");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for part in ["skillbox audit verify", "skillbox audit repair"] {
        assert!(stderr(&out).contains(part), "{}", stderr(&out));
    }
    let out = env.run(&["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("audit head record"), "{}", stderr(&out));
    let out = env.run(&["audit", "verify", "--anchor", a2.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not extend the anchor"), "{}", stderr(&out));

    let repaired = env.ok(&["audit", "repair"], None);
    assert!(repaired.contains("rebuilt") && repaired.contains("holds 2 rows"), "{repaired}");
    let rows: serde_json::Value =
        serde_json::from_str(&env.ok(&["audit", "list", "--action", "repair", "--json"], None)).unwrap();
    assert_eq!(rows[0]["detail"]["rows"], 2);
    assert!(env.ok(&["audit", "verify"], None).contains("intact"));
    assert!(add("e").status.success());
    assert!(env.ok(&["audit", "repair"], None).contains("nothing to repair"));

    // The automatic anchor: refused inside the vault's directory, rewritten on every append elsewhere.
    let inside = env.vault.parent().unwrap().join("anchor.json");
    let out = env.run(&["audit", "anchor", "--auto", inside.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("inside the vault's directory"), "{}", stderr(&out));
    let auto = env.root.join("auto.json");
    env.ok(&["audit", "anchor", "--auto", auto.to_str().unwrap()], None);
    assert!(add("f").status.success());
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&auto).unwrap()).unwrap();
    assert_eq!(a, serde_json::from_str::<serde_json::Value>(&env.ok(&["audit", "anchor"], None)).unwrap());
    assert!(env.ok(&["audit", "verify", "--anchor", auto.to_str().unwrap()], None).contains("extends"));
    env.ok(&["audit", "anchor", "--no-auto"], None);
}

#[test]
fn a_forged_grant_row_is_refused_and_audit_verify_reports_it() {
    let env = Env::new();
    env.ok(&["cred", "add", "gh", "--type", "bearer", "--service", "github", "--value-stdin"], Some("tok-forge-1234"));
    env.ok(&["grant", "triage", "gh", "--hosts", "api.github.com"], None);
    assert!(env.ok(&["audit", "verify"], None).contains("intact"));
    rusqlite::Connection::open(&env.vault)
        .unwrap()
        .execute("UPDATE grants SET hosts = '[\"gh.attacker.example\"]'", [])
        .unwrap();
    let out = env.run(&["grants"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("modified outside skillbox"), "{}", stderr(&out));
    assert!(stderr(&out).contains("skillbox audit verify"), "{}", stderr(&out));
    let out = env.run(&["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("vault tampered") && err.contains("grant") && err.contains("modified outside skillbox"),
        "{err}"
    );
}
