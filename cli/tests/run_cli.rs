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
