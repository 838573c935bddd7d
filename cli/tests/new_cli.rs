//! `skillbox new`: each template is created, built with its own `[build] command` by
//! `skillbox build`, and run; and what `new` refuses.
//!
//! The Rust build compiles wit-bindgen and serde for wasm32-wasip2. The skill is created
//! under the repository's `target/` (inside the workspace, which the template's own
//! `[workspace]` table must cope with), and its `target` directory is a link to one kept in
//! `target/new-cli-rust/`, so only the first run pays for the dependencies; the manifest
//! and the build command are the template's, unchanged. The Python build needs
//! componentize-py in `target/componentize-py/` (`sample-skills/build-python.sh`, run by
//! the README's set-up), found the way a user's `skillbox build` finds it: next to the
//! `skillbox` executable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const SKILLBOX: &str = env!("CARGO_BIN_EXE_skillbox");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The directory holding the binary under test (`target/release`), whose parent holds
/// `componentize-py/` after the set-up.
fn target_dir() -> PathBuf {
    Path::new(SKILLBOX).parent().unwrap().parent().unwrap().to_owned()
}

/// PATH without any directory that holds a componentize-py, so the tests see only the one
/// `skillbox build` adds.
fn path_without_componentize_py() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).filter(|d| !d.join("componentize-py").exists());
    std::env::join_paths(dirs).unwrap()
}

fn skillbox(cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(SKILLBOX);
    cmd.current_dir(cwd)
        .env("SKILLBOX_CACHE_DIR", cache)
        .env("PATH", path_without_componentize_py())
        .env_remove("SKILLBOX_COMPONENTIZE_PY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

/// `new`, then `build`, then `run` with `{}` and with input.json, as a user types them.
fn new_build_run(lang: &str, expect_wasm: &str, prepare: impl FnOnce(&Path)) {
    let work = tempfile::tempdir_in(target_dir()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cwd = work.path();

    let out = skillbox(cwd, cache.path()).args(["new", "demo-skill", "--lang", lang]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stdout).contains("skillbox build demo-skill"), "{}", show(&out));
    let dir = cwd.join("demo-skill");
    prepare(&dir);

    let started = Instant::now();
    // A user's own CARGO_TARGET_DIR does not send the component elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = skillbox(cwd, cache.path())
        .args(["build", "demo-skill"])
        .env("CARGO_TARGET_DIR", elsewhere.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    eprintln!("{lang}: skillbox build took {:.1?}", started.elapsed());
    assert!(dir.join(expect_wasm).is_file(), "no {expect_wasm}: {}", show(&out));

    let started = Instant::now();
    let out = skillbox(cwd, cache.path()).args(["run", "demo-skill", "--input", "{}"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    eprintln!("{lang}: first skillbox run (compiles the component) took {:.1?}", started.elapsed());
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("JSON on stdout");
    assert_eq!(json, serde_json::json!({ "greeting": "Hello, world!" }));
    assert!(text(&out.stderr).contains("greeting world"), "the log line: {}", show(&out));

    let out = skillbox(cwd, cache.path())
        .args(["run", "demo-skill", "--input-file", "demo-skill/input.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["greeting"], "Hello, Ada!");

    // The skill checks its input itself (`skillbox run` does not apply `[input.schema]`; MCP
    // and the HTTP API do); both failures are the skill's, exit 1.
    let out = skillbox(cwd, cache.path()).args(["run", "demo-skill", "--input", r#"{"name": 7}"#]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("invalid input"), "{}", show(&out));
    let out = skillbox(cwd, cache.path()).args(["run", "demo-skill", "--input", r#"{"name": ""}"#]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("there is nobody to greet"), "{}", show(&out));
}

#[test]
fn rust_template_builds_and_runs() {
    new_build_run("rust", "target/wasm32-wasip2/release/demo_skill.wasm", |dir| {
        let shared = target_dir().join("new-cli-rust");
        std::fs::create_dir_all(&shared).unwrap();
        std::os::unix::fs::symlink(&shared, dir.join("target")).unwrap();
    });
}

#[test]
fn python_template_builds_and_runs() {
    let bin = target_dir().join("componentize-py/bin/componentize-py");
    assert!(
        bin.is_file(),
        "{} is missing: run sample-skills/build-python.sh (the README's set-up does) to install componentize-py",
        bin.display()
    );
    // The template's pin is the set-up's.
    let script = std::fs::read_to_string(repo().join("sample-skills/build-python.sh")).unwrap();
    assert!(script.contains("COMPONENTIZE_PY_VERSION=0.25.1\n"), "sample-skills/build-python.sh pins another version");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "componentize-py 0.25.1");
    new_build_run("python", "demo-skill.wasm", |_| {});
}

#[test]
fn new_writes_the_repository_wit_a_valid_manifest_and_the_files_of_each_language() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let wit = repo().join("wit");
    for (lang, files) in [
        ("rust", &["skill.toml", "Cargo.toml", "src/lib.rs", "input.json", "README.md", ".gitignore"][..]),
        ("python", &["skill.toml", "app.py", "input.json", "README.md", ".gitignore"][..]),
    ] {
        // --dir: an existing empty directory is fine.
        let dir = work.path().join(format!("{lang}-skill"));
        std::fs::create_dir(&dir).unwrap();
        let out = skillbox(work.path(), cache.path())
            .args(["new", "my-skill", "--lang", lang, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        for file in files {
            let content = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{lang}: {file}: {e}"));
            for placeholder in ["{{name}}", "{{crate}}", "{{componentize_py_version}}"] {
                assert!(!content.contains(placeholder), "{lang}: {file} still has {placeholder}:\n{content}");
            }
        }

        // The embedded WIT is the repository's wit/, file for file.
        let mut expected: Vec<_> = std::fs::read_dir(&wit).unwrap().map(|e| e.unwrap().file_name()).collect();
        let mut written: Vec<_> = std::fs::read_dir(dir.join("wit")).unwrap().map(|e| e.unwrap().file_name()).collect();
        expected.sort();
        written.sort();
        assert_eq!(written, expected, "{lang}: cli/src/new.rs's WIT list differs from wit/");
        for name in expected {
            assert_eq!(
                std::fs::read(dir.join("wit").join(&name)).unwrap(),
                std::fs::read(wit.join(&name)).unwrap(),
                "{lang}: wit/{name:?} differs"
            );
        }

        let manifest = skillbox_runtime::Manifest::load(&dir).unwrap();
        assert_eq!(manifest.skill.name, "my-skill");
        let schema = manifest.input_schema().unwrap();
        schema.check(&serde_json::json!({})).unwrap();
        schema.check(&serde_json::json!({ "name": "Ada" })).unwrap();
        schema.check(&serde_json::json!({ "name": 1 })).unwrap_err();
        let input: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("input.json")).unwrap()).unwrap();
        schema.check(&input).unwrap();
        assert!(manifest.output_schema().unwrap().is_some());
        assert!(manifest.build.is_some());
        let component = manifest.skill.component.to_string_lossy().into_owned();
        match lang {
            "rust" => assert_eq!(component, "target/wasm32-wasip2/release/my_skill.wasm"),
            _ => assert_eq!(component, "my-skill.wasm"),
        }
    }
}

#[test]
fn new_refuses_a_non_empty_directory_a_bad_name_and_an_unknown_language() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| skillbox(work.path(), cache.path()).args(args).output().unwrap();

    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/notes.txt"), "mine").unwrap();
    let out = run(&["new", "taken", "--lang", "rust"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("already exists and is not empty"), "{}", show(&out));
    assert_eq!(std::fs::read_dir(work.path().join("taken")).unwrap().count(), 1, "nothing written");
    assert_eq!(std::fs::read_to_string(work.path().join("taken/notes.txt")).unwrap(), "mine");

    std::fs::write(work.path().join("a-file"), "").unwrap();
    let out = run(&["new", "ok-name", "--dir", "a-file"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("not a directory"), "{}", show(&out));

    for bad in ["Hello", "my_skill", "1skill", "-x", &"a".repeat(65)] {
        let out = run(&["new", "--lang", "python", "--", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", show(&out));
        assert!(text(&out.stderr).contains("is not valid"), "{bad}: {}", show(&out));
        assert!(!work.path().join(bad).exists(), "{bad}: nothing created");
    }

    let out = run(&["new", "fine", "--lang", "go"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("possible values: rust, python"), "{}", show(&out));
    assert!(!work.path().join("fine").exists());
}

/// `skillbox build` appends componentize-py's directory to PATH: a componentize-py already on
/// PATH wins over $SKILLBOX_COMPONENTIZE_PY, which is used when there is none; with neither,
/// the error says what to install.
#[test]
fn build_finds_componentize_py_on_path_then_from_the_environment_and_says_what_to_install() {
    use std::os::unix::fs::PermissionsExt;

    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = skillbox(work.path(), cache.path()).args(["new", "py", "--lang", "python"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));

    // Two fake componentize-py scripts, each recording which one ran.
    let fake = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let script = dir.join("componentize-py");
        std::fs::write(&script, format!("#!/bin/sh\necho {name} > ran-by\nexit 1\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    };
    let on_path = fake("on-path");
    let from_env = fake("from-env");
    let ran_by = work.path().join("py/ran-by");
    let mut path = std::env::split_paths(&path_without_componentize_py()).collect::<Vec<_>>();

    path.insert(0, on_path.parent().unwrap().to_owned());
    let out = skillbox(work.path(), cache.path())
        .args(["build", "py"])
        .env("PATH", std::env::join_paths(&path).unwrap())
        .env("SKILLBOX_COMPONENTIZE_PY", &from_env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&ran_by).unwrap().trim(), "on-path");

    path.remove(0);
    let out = skillbox(work.path(), cache.path())
        .args(["build", "py"])
        .env("SKILLBOX_COMPONENTIZE_PY", &from_env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&ran_by).unwrap().trim(), "from-env");

    let out = skillbox(work.path(), cache.path())
        .args(["build", "py"])
        .env("SKILLBOX_COMPONENTIZE_PY", work.path().join("nowhere/componentize-py"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("componentize-py is not installed")
            && stderr.contains("componentize-py==0.25.1")
            && stderr.contains("sample-skills/build-python.sh"),
        "{}",
        show(&out)
    );
}
