//! `skillbox run`, `inspect` and `build` as a user types them: real binary,
//! real components, exit codes and stderr checked.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn skillbox(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillbox"));
    cmd.env("SKILLBOX_CACHE_DIR", cache).env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn run_hello_prints_the_greeting_as_json() {
    let cache = tempfile::tempdir().unwrap();
    let out =
        skillbox(cache.path()).args(["run", skillbox_tests::HELLO, "--input", r#"{"name":"Ada"}"#]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(json["greeting"], "Hello, Ada!");
    // The skill's log line goes to stderr, tagged with the skill's name.
    assert!(stderr(&out).contains("greeting Ada") && stderr(&out).contains("hello"), "{}", stderr(&out));
}

#[test]
fn run_reads_input_from_a_file_and_from_stdin() {
    let cache = tempfile::tempdir().unwrap();
    let file = cache.path().join("input.json");
    std::fs::write(&file, r#"{"name":"File"}"#).unwrap();
    let out = skillbox(cache.path()).args(["run", skillbox_tests::HELLO, "--input-file"]).arg(&file).output().unwrap();
    assert!(stdout(&out).contains("Hello, File!"), "{}", stderr(&out));

    let mut child = skillbox(cache.path())
        .args(["run", &format!("{}/skill.toml", skillbox_tests::HELLO)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(br#"{"name":"Stdin"}"#).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(stdout(&out).contains("Hello, Stdin!"), "{}", stderr(&out));
}

#[test]
fn spin_forever_exits_3_within_twice_its_timeout() {
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = skillbox(cache.path()).args(["run", skillbox_tests::SPIN_FOREVER, "--input", "{}"]).output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("time limit of 1s"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(2), "took {took:?} for a 1s limit");
    assert!(stdout(&out).is_empty());
}

#[test]
fn memory_hog_exits_3_naming_the_memory_limit() {
    let cache = tempfile::tempdir().unwrap();
    let out = skillbox(cache.path()).args(["run", skillbox_tests::MEMORY_HOG, "--input", "{}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory limit of 16.0 MiB"), "{}", stderr(&out));
}

#[test]
fn a_failing_skill_exits_1() {
    let cache = tempfile::tempdir().unwrap();
    let out = skillbox(cache.path())
        .args(["run", skillbox_tests::MISBEHAVE, "--input", r#"{"do":"error"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("upstream said no"), "{}", stderr(&out));
}

#[test]
fn bad_usage_exits_2() {
    let cache = tempfile::tempdir().unwrap();
    let bad_json = skillbox(cache.path()).args(["run", skillbox_tests::HELLO, "--input", "{oops"]).output().unwrap();
    assert_eq!(bad_json.status.code(), Some(2), "{}", stderr(&bad_json));
    assert!(stderr(&bad_json).contains("not valid JSON"), "{}", stderr(&bad_json));

    let no_skill = skillbox(cache.path()).args(["run", "/nonexistent/skill", "--input", "{}"]).output().unwrap();
    assert_eq!(no_skill.status.code(), Some(2), "{}", stderr(&no_skill));
    assert!(stderr(&no_skill).contains("skill.toml"), "{}", stderr(&no_skill));

    let not_a_skill =
        skillbox(cache.path()).args(["run", skillbox_tests::NOT_A_SKILL, "--input", "{}"]).output().unwrap();
    assert_eq!(not_a_skill.status.code(), Some(2), "{}", stderr(&not_a_skill));
    assert!(stderr(&not_a_skill).contains("not a skillbox skill"), "{}", stderr(&not_a_skill));

    let no_args = skillbox(cache.path()).arg("run").output().unwrap();
    assert_eq!(no_args.status.code(), Some(2));
}

#[test]
fn inspect_shows_manifest_imports_and_exports() {
    let cache = tempfile::tempdir().unwrap();
    let out = skillbox(cache.path()).args(["inspect", skillbox_tests::HELLO]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in ["hello 0.1.0", "memory 16.0 MiB", "timeout 5s", "skillbox:skill/log@0.1.0", "run"] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let out = skillbox(cache.path()).args(["inspect", "--json", skillbox_tests::HELLO]).output().unwrap();
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["manifest"]["skill"]["name"], "hello");
    assert_eq!(json["component"]["sha256"].as_str().unwrap().len(), 64);
    let exports = json["component"]["exports"].as_array().unwrap();
    assert!(exports.iter().any(|e| e["name"] == "run" && e["kind"] == "func"), "{json}");
    let imports = json["component"]["imports"].as_array().unwrap();
    assert!(imports.iter().any(|i| i["name"].as_str().unwrap().starts_with("wasi:cli/")), "{json}");
}

#[test]
fn inspect_works_on_a_component_that_is_not_a_skill() {
    let cache = tempfile::tempdir().unwrap();
    let out = skillbox(cache.path()).args(["inspect", "--json", skillbox_tests::NOT_A_SKILL]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("wasi:cli/run"), "{}", stdout(&out));
}

#[test]
fn build_runs_the_manifest_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("skill.toml"),
        "[skill]\nname = \"copy\"\nversion = \"0.1.0\"\ncomponent = \"out.wasm\"\n[build]\ncommand = \"cp \\\"$SRC\\\" out.wasm\"\n",
    )
    .unwrap();
    let out = skillbox(dir.path())
        .args(["build"])
        .arg(dir.path())
        .env("SRC", skillbox_tests::HELLO_COMPONENT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("out.wasm").is_file());

    let out =
        skillbox(dir.path()).args(["run"]).arg(dir.path()).args(["--input", r#"{"name":"Built"}"#]).output().unwrap();
    assert!(stdout(&out).contains("Hello, Built!"), "{}", stderr(&out));
}

#[test]
fn build_without_a_build_section_explains() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("skill.toml"),
        "[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"x.wasm\"\n",
    )
    .unwrap();
    let out = skillbox(dir.path()).args(["build"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("[build]"), "{}", stderr(&out));
}

/// A high-entropy base62 string made afresh for each run (no token is committed).
fn random_base62(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let state = std::collections::hash_map::RandomState::new();
    (0..len)
        .map(|i| {
            let mut h = state.build_hasher();
            h.write_usize(i);
            ALNUM[(h.finish() % 62) as usize] as char
        })
        .collect()
}

fn run_hello_with(cache: &Path, name: &str, config: Option<&Path>) -> Output {
    let input = serde_json::json!({ "name": name }).to_string();
    let mut cmd = skillbox(cache);
    cmd.args(["run", skillbox_tests::HELLO, "--input", &input]).env_remove("SKILLBOX_CONFIG");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.output().unwrap()
}

#[test]
fn a_foreign_token_in_output_and_logs_is_redacted_by_default() {
    let cache = tempfile::tempdir().unwrap();
    let token = format!("ghp_{}", random_base62(36));
    let out = run_hello_with(cache.path(), &token, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Hello, [REDACTED:github-pat]!"), "{}", stdout(&out));
    assert!(!stdout(&out).contains(&token) && !stderr(&out).contains(&token), "{}", stderr(&out));
}

#[test]
fn the_config_file_sets_the_foreign_token_policy_and_adds_rules() {
    let cache = tempfile::tempdir().unwrap();
    let config = cache.path().join("skillbox.toml");

    std::fs::write(&config, "[scan]\nforeign = \"block\"\n").unwrap();
    let token = format!("ghp_{}", random_base62(36));
    let out = run_hello_with(cache.path(), &token, Some(&config));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("github-pat"), "{}", stderr(&out));
    assert!(!stdout(&out).contains(&token) && !stderr(&out).contains(&token));

    std::fs::write(
        &config,
        "[[scan.rule]]\nid = \"acme-key\"\ndescription = \"ACME key\"\nkeywords = [\"acme_\"]\n\
         regex = \"acme_[A-Za-z0-9]{32}\"\nmin_entropy = 3.0\n",
    )
    .unwrap();
    let key = format!("acme_{}", random_base62(32));
    let out = run_hello_with(cache.path(), &key, Some(&config));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("[REDACTED:acme-key]"), "{}", stdout(&out));

    std::fs::write(&config, "[scan]\nforeing = \"block\"\n").unwrap();
    let out = run_hello_with(cache.path(), "Ada", Some(&config));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("skillbox.toml") && stderr(&out).contains("foreing"), "{}", stderr(&out));
}

/// A skill directory whose skill.toml uses sample `component` (a path) plus `rest`.
fn skill_dir(component: &str, rest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let toml_str = |s: &str| serde_json::to_string(s).unwrap();
    std::fs::write(
        dir.path().join("skill.toml"),
        format!("[skill]\nname = \"greedy\"\nversion = \"0.1.0\"\ncomponent = {}\n{rest}", toml_str(component)),
    )
    .unwrap();
    dir
}

const GREEDY: &str = "[limits]\nmemory = \"4GiB\"\ntimeout = \"1h\"\n";

#[test]
fn operator_caps_on_the_command_line_bound_a_greedy_manifest() {
    let cache = tempfile::tempdir().unwrap();
    let caps = ["--max-memory", "64MiB", "--max-timeout", "2s"];

    let hello = skill_dir(skillbox_tests::HELLO_COMPONENT, GREEDY);
    let out = skillbox(cache.path())
        .arg("run")
        .arg(hello.path())
        .args(caps)
        .args(["--input", r#"{"name":"Cap"}"#])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("Hello, Cap!"), "{}", stderr(&out));
    // The warning names the skill, what it asked for and the cap.
    for expected in ["greedy", "limits.timeout 1h", "cap of 2s", "limits.memory 4.0 GiB", "cap of 64.0 MiB"] {
        assert!(stderr(&out).contains(expected), "missing {expected:?} in {}", stderr(&out));
    }

    let spin = skill_dir(skillbox_tests::SPIN_FOREVER_COMPONENT, GREEDY);
    let started = Instant::now();
    let out = skillbox(cache.path()).arg("run").arg(spin.path()).args(caps).args(["--input", "{}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("time limit of 2s") && stderr(&out).contains("--max-timeout"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());

    let hog = skill_dir(skillbox_tests::MEMORY_HOG_COMPONENT, GREEDY);
    let out = skillbox(cache.path()).arg("run").arg(hog.path()).args(caps).args(["--input", "{}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("memory limit of 64.0 MiB") && stderr(&out).contains("--max-memory"),
        "{}",
        stderr(&out)
    );

    let out = skillbox(cache.path())
        .args(["run", skillbox_tests::HELLO, "--fuel", "1000", "--input", r#"{"name":"Ada"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("fuel limit of 1000"), "{}", stderr(&out));

    for (flag, value) in [("--max-memory", "lots"), ("--max-memory", "8GiB"), ("--max-timeout", "2h"), ("--fuel", "0")]
    {
        let out =
            skillbox(cache.path()).args(["run", skillbox_tests::HELLO, flag, value, "--input", "{}"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{flag} {value}: {}", stderr(&out));
    }
}

#[test]
fn operator_caps_in_the_config_file_bound_a_greedy_manifest() {
    let cache = tempfile::tempdir().unwrap();
    let config = cache.path().join("skillbox.toml");
    std::fs::write(&config, "[limits]\nmax_memory = \"32MiB\"\nmax_timeout = \"1s\"\n").unwrap();
    let run = |dir: &Path, input: &str| {
        skillbox(cache.path())
            .arg("run")
            .arg(dir)
            .arg("--config")
            .arg(&config)
            .args(["--input", input])
            .output()
            .unwrap()
    };

    let hog = skill_dir(skillbox_tests::MEMORY_HOG_COMPONENT, GREEDY);
    let out = run(hog.path(), "{}");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory limit of 32.0 MiB"), "{}", stderr(&out));

    let spin = skill_dir(skillbox_tests::SPIN_FOREVER_COMPONENT, GREEDY);
    let out = run(spin.path(), "{}");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("time limit of 1s"), "{}", stderr(&out));

    // The command line overrides the file.
    let out = skillbox(cache.path())
        .arg("run")
        .arg(spin.path())
        .arg("--config")
        .arg(&config)
        .args(["--max-timeout", "300ms", "--input", "{}"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("time limit of 300ms"), "{}", stderr(&out));

    // inspect shows the effective limits.
    let out = skillbox(cache.path()).arg("inspect").arg(hog.path()).arg("--config").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("effective  memory 32.0 MiB, timeout 1s"), "{}", stdout(&out));

    std::fs::write(&config, "[limits]\nmax_timeout = \"forever\"\n").unwrap();
    let out = run(hog.path(), "{}");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[limits] max_timeout") && stderr(&out).contains("skillbox.toml"),
        "{}",
        stderr(&out)
    );
}

/// Text a hostile skill or manifest would like to reach the operator's terminal raw.
const HOSTILE: &str = "ok\u{1b}[2J\r\nERROR forged line \u{202e}moc.live\u{9b}";

fn assert_escaped(text: &str) {
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{202e}') && !text.contains('\u{9b}'),
        "raw control characters in:\n{text:?}"
    );
    assert!(!text.lines().any(|l| l.starts_with("ERROR forged")), "a forged line in:\n{text}");
}

#[test]
fn inspect_and_manifest_errors_escape_hostile_manifest_text() {
    let cache = tempfile::tempdir().unwrap();
    let s = |t: &str| serde_json::to_string(t).unwrap();
    let dir = skill_dir(skillbox_tests::HELLO_COMPONENT, "");
    std::fs::write(
        dir.path().join("skill.toml"),
        format!(
            "[skill]\nname = \"hostile\"\nversion = \"0.1.0\"\ndescription = {}\ncomponent = {}\n\
             [[credentials]]\nname = \"token\"\nkind = \"bearer\"\nhosts = [\"api.example.com\"]\npurpose = {}\n",
            s(HOSTILE),
            s(skillbox_tests::HELLO_COMPONENT),
            s(HOSTILE)
        ),
    )
    .unwrap();
    let out = skillbox(cache.path()).arg("inspect").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_escaped(&stdout(&out));
    assert!(stdout(&out).contains("ok\\x1b[2J\\r\\nERROR forged line \\u{202e}moc.live\\u{9b}"), "{}", stdout(&out));
    let out = skillbox(cache.path()).arg("inspect").arg("--json").arg(dir.path()).output().unwrap();
    assert_escaped(&stdout(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["manifest"]["skill"]["description"], HOSTILE);

    // A manifest error quotes the bad value: escaped.
    std::fs::write(
        dir.path().join("skill.toml"),
        format!(
            "[skill]\nname = \"hostile\"\nversion = \"0.1.0\"\ncomponent = {}\n\
             [[credentials]]\nname = \"token\"\nkind = \"bearer\"\nhosts = [{}]\n",
            s(skillbox_tests::HELLO_COMPONENT),
            s(HOSTILE)
        ),
    )
    .unwrap();
    let out = skillbox(cache.path()).arg("run").arg(dir.path()).args(["--input", "{}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\\x1b[2J"), "{}", stderr(&out));
    assert_escaped(&stderr(&out));
}

#[test]
fn skill_stdio_errors_and_results_are_escaped() {
    let cache = tempfile::tempdir().unwrap();
    let dir = skill_dir(skillbox_tests::REFLECT_PROBE_COMPONENT, "");
    let input = serde_json::json!({ "stdout": HOSTILE, "stderr": HOSTILE, "fail": HOSTILE }).to_string();
    let out = skillbox(cache.path()).arg("run").arg(dir.path()).args(["--input", &input]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_escaped(&stderr(&out));
    // Both stdio lines and the error are there, escaped.
    assert!(stderr(&out).matches("ok\\x1b[2J").count() >= 3, "{}", stderr(&out));

    let input = serde_json::json!({ "result": HOSTILE }).to_string();
    let out = skillbox(cache.path()).arg("run").arg(dir.path()).args(["--input", &input]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_escaped(&stdout(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(json["result"], HOSTILE, "the JSON means the same");
}

#[test]
fn build_does_not_pass_skillbox_variables_to_the_build_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("skill.toml"),
        "[skill]\nname = \"envdump\"\nversion = \"0.1.0\"\ncomponent = \"out.wasm\"\n\
         [build]\ncommand = \"env > env.txt; cp \\\"$SRC\\\" out.wasm\"\n",
    )
    .unwrap();
    let out = skillbox(dir.path())
        .arg("build")
        .arg(dir.path())
        .env("SRC", skillbox_tests::HELLO_COMPONENT)
        .env("SKILLBOX_MASTER_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
        .env("SKILLBOX_PASSPHRASE", "correct horse battery staple")
        .env("SKILLBOX_VAULT", "/tmp/some/vault.db")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    assert!(env.contains("SRC="), "{env}");
    assert!(!env.contains("SKILLBOX_") && !env.contains("correct horse") && !env.contains("00112233"), "{env}");
}

#[test]
fn audit_list_escapes_a_hostile_credential_name_and_error() {
    let cache = tempfile::tempdir().unwrap();
    let vault = cache.path().join("vault.db");
    let key = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
    let cli = |args: &[&str]| {
        skillbox(cache.path())
            .args(args)
            .env("SKILLBOX_VAULT", &vault)
            .env("SKILLBOX_MASTER_KEY", key)
            .output()
            .unwrap()
    };
    let out = cli(&["vault", "init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A declared credential makes `run` open the vault; the guest then opens a name of its own.
    let dir = skill_dir(
        skillbox_tests::REFLECT_PROBE_COMPONENT,
        "[[credentials]]\nname = \"token\"\nkind = \"bearer\"\nhosts = [\"api.example.com\"]\n",
    );
    let input = serde_json::json!({ "open": [HOSTILE] }).to_string();
    let out = cli(&["run", dir.path().to_str().unwrap(), "--input", &input]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The host's warning about the denial quotes the name: escaped too.
    assert!(stderr(&out).contains("does not declare a credential named `ok\\x1b[2J"), "{}", stderr(&out));
    assert_escaped(&stderr(&out));
    let out = cli(&["audit", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cred=ok\\x1b[2J\\r\\nERROR forged line"), "{}", stdout(&out));
    assert_escaped(&stdout(&out));
}
