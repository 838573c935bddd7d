//! The runtime end to end, on real components: round trips, limits, bad
//! manifests and files, concurrency, and the empty sandbox.

use std::time::{Duration, Instant};

use skillbox_runtime::{Error, SkillFailure};
use skillbox_tests::{json, runtime, temp_skill};

/// One test per sample skill (generated from `foreach_skill!`, so a new
/// skill cannot go unchecked): its manifest parses and its component loads
/// as a skill — except `not-a-skill`, which must be refused as one.
mod every_sample_skill {
    macro_rules! loads {
        ($name:ident) => {
            #[test]
            fn $name() {
                let name = stringify!($name).replace('_', "-");
                let dir = std::path::Path::new(skillbox_tests::HELLO).parent().unwrap().join(&name);
                match skillbox_tests::runtime().load(&dir) {
                    Ok(skill) => assert_eq!(skill.name(), name),
                    Err(err) => {
                        assert_eq!(name, "not-a-skill", "{name} does not load: {err}");
                        assert!(matches!(err, skillbox_runtime::Error::NotASkill { .. }), "{err}");
                    }
                }
            }
        };
    }
    skillbox_tests::foreach_skill!(loads);
}

#[tokio::test]
async fn hello() {
    let skill = runtime().load(skillbox_tests::HELLO).unwrap();
    let output = skill.invoke(r#"{"name":"Ada"}"#).await.unwrap();
    assert_eq!(json(&output.json), serde_json::json!({ "greeting": "Hello, Ada!" }));
    assert_eq!(skill.name(), "hello");
    assert_eq!(skill.digest().len(), 64);
}

#[tokio::test]
async fn hello_rejects_input_it_cannot_use() {
    let skill = runtime().load(skillbox_tests::HELLO).unwrap();
    let err = skill.invoke(r#"{"nom":"Ada"}"#).await.unwrap_err();
    assert!(
        matches!(&err, Error::SkillFailed { error: SkillFailure::InvalidInput(m), .. } if m.contains("name")),
        "{err}"
    );
}

#[tokio::test]
async fn input_that_is_not_json_is_refused_before_the_guest_runs() {
    let skill = runtime().load(skillbox_tests::HELLO).unwrap();
    let err = skill.invoke("{name: Ada").await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[tokio::test]
async fn spin_forever() {
    // The sample's own manifest says 1s; a test manifest makes it quicker.
    let (_dir, manifest) = temp_skill(
        "[skill]\nname = \"spin-forever\"\nversion = \"0.1.0\"\ncomponent = \"{component:spin-forever}\"\n[limits]\ntimeout = \"200ms\"\n",
    );
    let skill = runtime().load(manifest).unwrap();
    let started = Instant::now();
    let err = skill.invoke("{}").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::TimeLimit { limit, .. } if limit == Duration::from_millis(200)), "{err}");
    assert!(err.is_limit());
    assert!(err.to_string().contains("limits.timeout"), "{err}");
    assert!(took < Duration::from_secs(2), "stopped only after {took:?}");
}

#[tokio::test]
async fn memory_hog() {
    let skill = runtime().load(skillbox_tests::MEMORY_HOG).unwrap();
    let err = skill.invoke("{}").await.unwrap_err();
    assert!(matches!(err, Error::MemoryLimit { limit, .. } if limit == 16 * 1024 * 1024), "{err}");
    assert!(err.to_string().contains("16.0 MiB") && err.to_string().contains("limits.memory"), "{err}");
}

#[tokio::test]
async fn host_stays_healthy_after_limits_and_traps() {
    let rt = runtime();
    let hog = rt.load(skillbox_tests::MEMORY_HOG).unwrap();
    let misbehave = rt.load(skillbox_tests::MISBEHAVE).unwrap();
    let hello = rt.load(skillbox_tests::HELLO).unwrap();
    for _ in 0..3 {
        assert!(hog.invoke("{}").await.is_err());
        assert!(misbehave.invoke(r#"{"do":"panic"}"#).await.is_err());
        let output = hello.invoke(r#"{"name":"still here"}"#).await.unwrap();
        assert!(output.json.contains("Hello, still here!"));
    }
}

mod misbehave {
    use super::*;

    async fn run(action: &str) -> Result<skillbox_runtime::Output, Error> {
        let skill = runtime().load(skillbox_tests::MISBEHAVE).unwrap();
        skill.invoke(&serde_json::json!({ "do": action }).to_string()).await
    }

    #[tokio::test]
    async fn invalid_json_output_is_an_error() {
        let err = run("invalid-json").await.unwrap_err();
        assert!(matches!(err, Error::InvalidOutput { .. }), "{err}");
    }

    #[tokio::test]
    async fn skill_errors_are_passed_on() {
        let err = run("error").await.unwrap_err();
        assert!(
            matches!(&err, Error::SkillFailed { error: SkillFailure::Failed(m), .. } if m == "upstream said no"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_panic_is_a_trap_with_the_panic_message() {
        let err = run("panic").await.unwrap_err();
        assert!(matches!(err, Error::Trap { .. }), "{err}");
        assert!(err.to_string().contains("misbehave was asked to panic"), "{err}");
    }

    #[tokio::test]
    async fn stdout_is_captured_up_to_its_cap() {
        let output = run("flood-stdout").await.unwrap();
        assert_eq!(json(&output.json)["flooded"], "stdout");
        assert_eq!(output.stdout.len(), 64 * 1024, "capture is capped at the runtime's max_stdio_bytes");
    }

    #[tokio::test]
    async fn a_log_flood_does_not_fail_the_skill() {
        let output = run("flood-log").await.unwrap();
        assert_eq!(json(&output.json)["flooded"], "log");
    }

    #[tokio::test]
    async fn fuel_runs_out() {
        let err = run("burn").await.unwrap_err();
        assert!(matches!(err, Error::FuelLimit { limit: 50_000_000, .. }), "{err}");
    }
}

mod not_a_skill {
    use super::*;

    #[tokio::test]
    async fn a_component_without_the_skill_world_is_refused() {
        let err = runtime().load(skillbox_tests::NOT_A_SKILL).unwrap_err();
        assert!(matches!(err, Error::NotASkill { .. }), "{err}");
        assert!(err.to_string().contains("run"), "says what is missing: {err}");
    }
}

mod manifests {
    use super::*;

    #[test]
    fn unknown_key() {
        let (_d, m) = temp_skill(
            "[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"{component:hello}\"\ncolour = \"blue\"\n",
        );
        let err = runtime().load(m).unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{err}");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn missing_component() {
        let (_d, m) = temp_skill("[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"nowhere.wasm\"\n");
        let err = runtime().load(m).unwrap_err();
        assert!(matches!(err, Error::ComponentMissing { .. }), "{err}");
        assert!(err.to_string().contains("nowhere.wasm") && err.to_string().contains("skillbox build"), "{err}");
    }

    #[test]
    fn bad_unit() {
        let (_d, m) = temp_skill(
            "[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"{component:hello}\"\n[limits]\nmemory = \"64 parsecs\"\n",
        );
        let err = runtime().load(m).unwrap_err();
        assert!(err.to_string().contains("limits.memory") && err.to_string().contains("64MiB"), "{err}");
    }

    #[test]
    fn missing_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let err = runtime().load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{err}");
        assert!(err.to_string().contains("skill.toml"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_wasm() {
        let (dir, m) = temp_skill("[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"junk.wasm\"\n");
        std::fs::write(dir.path().join("junk.wasm"), b"#!/bin/sh\necho hi\n").unwrap();
        let err = runtime().load(m).unwrap_err();
        assert!(matches!(err, Error::NotAComponent { .. }), "{err}");
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let (dir, m) = temp_skill("[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"core.wasm\"\n");
        // The smallest valid core module: magic + version 1.
        std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let err = runtime().load(m).unwrap_err();
        assert!(matches!(err, Error::NotAComponent { .. }), "{err}");
        assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
    }

    #[test]
    fn a_truncated_component_fails_to_compile() {
        let (dir, m) = temp_skill("[skill]\nname = \"x\"\nversion = \"0.1.0\"\ncomponent = \"cut.wasm\"\n");
        let bytes = std::fs::read(skillbox_tests::HELLO_COMPONENT).unwrap();
        std::fs::write(dir.path().join("cut.wasm"), &bytes[..bytes.len() / 2]).unwrap();
        let err = runtime().load(m).unwrap_err();
        assert!(matches!(err, Error::Compile { .. }), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_invocations() {
    let skill = runtime().load(skillbox_tests::HELLO).unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let skill = skill.clone();
            tokio::spawn(async move {
                let output = skill.invoke(&format!(r#"{{"name":"caller {i}"}}"#)).await.unwrap();
                (i, json(&output.json))
            })
        })
        .collect();
    for task in tasks {
        let (i, output) = task.await.unwrap();
        assert_eq!(output["greeting"], format!("Hello, caller {i}!"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_guest_does_not_starve_others() {
    let rt = runtime();
    let spinner = rt.load(skillbox_tests::SPIN_FOREVER).unwrap();
    let hello = rt.load(skillbox_tests::HELLO).unwrap();
    let spinning: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn({
                let s = spinner.clone();
                async move { s.invoke("{}").await }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // With every worker thread busy spinning, hello still completes because
    // spinning guests yield at each epoch tick.
    let output = tokio::time::timeout(Duration::from_millis(900), hello.invoke(r#"{"name":"x"}"#)).await;
    assert!(output.expect("hello finished while guests were spinning").is_ok());
    for task in spinning {
        assert!(matches!(task.await.unwrap(), Err(Error::TimeLimit { .. })));
    }
}

mod probe_sandbox {
    use super::*;

    #[tokio::test]
    async fn the_guest_sees_no_environment_arguments_files_or_sockets() {
        // SAFETY: set before the runtime starts any thread that reads the environment.
        unsafe { std::env::set_var("SKILLBOX_TEST_CANARY", "host-only-value") };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let skill = runtime().load(skillbox_tests::PROBE_SANDBOX).unwrap();
        let input = serde_json::json!({ "path": "/etc/passwd", "connect": addr.to_string() }).to_string();
        let output = skill.invoke(&input).await.unwrap();
        let report = json(&output.json);
        assert_eq!(report["env"], serde_json::json!([]), "{report}");
        assert!(report["args"].as_array().unwrap().len() <= 1, "at most a program name: {report}");
        assert_eq!(report["home"], serde_json::Value::Null);
        assert!(report["read_file"]["err"].is_string(), "{report}");
        assert!(report["list_root"]["err"].is_string(), "{report}");
        assert!(report["list_cwd"]["err"].is_string(), "{report}");
        assert!(report["connect"]["err"].is_string(), "{report}");
        assert!(!output.json.contains("host-only-value"));
        // Its stdout was captured, not inherited.
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "probe-sandbox wrote this to stdout");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "no connection reached the host listener");
    }
}

mod cache {
    use skillbox_runtime::{CacheOutcome, Runtime, RuntimeConfig};

    #[tokio::test]
    async fn second_load_hits_the_cache_and_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig { cache_dir: Some(dir.path().to_owned()), ..RuntimeConfig::default() };
        let rt = Runtime::new(config.clone()).unwrap();
        let (_, first) = rt.load_reporting_cache(skillbox_tests::HELLO).unwrap();
        assert_eq!(first, CacheOutcome::Compiled);
        // A new runtime (as a new process would have) finds the artifact.
        let rt = Runtime::new(config).unwrap();
        let (skill, second) = rt.load_reporting_cache(skillbox_tests::HELLO).unwrap();
        assert_eq!(second, CacheOutcome::Hit);
        assert!(skill.invoke(r#"{"name":"cached"}"#).await.unwrap().json.contains("Hello, cached!"));
    }

    #[tokio::test]
    async fn a_corrupt_cache_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig { cache_dir: Some(dir.path().to_owned()), ..RuntimeConfig::default() };
        Runtime::new(config.clone()).unwrap().load(skillbox_tests::HELLO).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
        }
        let (skill, outcome) = Runtime::new(config).unwrap().load_reporting_cache(skillbox_tests::HELLO).unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
        assert!(skill.invoke(r#"{"name":"again"}"#).await.unwrap().json.contains("Hello, again!"));
    }

    /// Loading a cache entry loads native code: only what this user alone could have written
    /// is loaded (issue 8, item 9).
    #[cfg(unix)]
    mod ownership {
        use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
        use std::path::{Path, PathBuf};

        use super::*;

        fn config(dir: &Path) -> RuntimeConfig {
            RuntimeConfig { cache_dir: Some(dir.to_owned()), ..RuntimeConfig::default() }
        }

        fn chmod(path: &Path, mode: u32) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }

        fn mode(path: &Path) -> u32 {
            std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
        }

        /// A cache in `dir` holding a valid entry for HELLO; returns the entry's path.
        fn populated(dir: &Path) -> PathBuf {
            let (_, outcome) = Runtime::new(config(dir)).unwrap().load_reporting_cache(skillbox_tests::HELLO).unwrap();
            assert_eq!(outcome, CacheOutcome::Compiled);
            let entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            assert_eq!(entries.len(), 1, "{entries:?}");
            entries.into_iter().next().unwrap()
        }

        fn outcome(dir: &Path) -> CacheOutcome {
            Runtime::new(config(dir)).unwrap().load_reporting_cache(skillbox_tests::HELLO).unwrap().1
        }

        #[test]
        fn new_directories_are_0700_and_entries_0600() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("a").join("b");
            let entry = populated(&dir);
            assert_eq!(mode(&tmp.path().join("a")), 0o700);
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&entry), 0o600);
        }

        #[test]
        fn a_directory_writable_by_group_or_others_is_refused_with_the_fix() {
            let tmp = tempfile::tempdir().unwrap();
            let entry = populated(tmp.path());
            for bits in [0o777, 0o770, 0o1777] {
                chmod(tmp.path(), bits);
                let err = Runtime::new(config(tmp.path())).unwrap_err().to_string();
                let shown = tmp.path().display().to_string();
                assert!(err.contains(&shown) && err.contains("writable by group or others"), "{err}");
                assert!(err.contains("chmod 700") && err.contains("SKILLBOX_CACHE_DIR"), "{err}");
            }
            // Nothing was written or loaded; once private again the entry is used.
            chmod(tmp.path(), 0o700);
            assert_eq!(mode(&entry), 0o600);
            assert_eq!(outcome(tmp.path()), CacheOutcome::Hit);
        }

        #[test]
        fn an_entry_writable_by_others_is_not_loaded_and_is_replaced() {
            let tmp = tempfile::tempdir().unwrap();
            let entry = populated(tmp.path());
            chmod(&entry, 0o666);
            assert_eq!(outcome(tmp.path()), CacheOutcome::Compiled, "a 0666 entry must not be loaded");
            assert_eq!(mode(&entry), 0o600, "the fresh compile replaced it");
            assert_eq!(outcome(tmp.path()), CacheOutcome::Hit);
        }

        #[test]
        fn a_symlinked_entry_is_not_followed() {
            // A valid artifact elsewhere, linked into a second cache under the entry's name.
            let elsewhere = tempfile::tempdir().unwrap();
            let target = populated(elsewhere.path());
            let tmp = tempfile::tempdir().unwrap();
            let link = tmp.path().join(target.file_name().unwrap());
            symlink(&target, &link).unwrap();
            assert_eq!(outcome(tmp.path()), CacheOutcome::Compiled, "a symlinked entry must not be loaded");
            assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_file(), "replaced by a real entry");
            assert_eq!(mode(&target), 0o600, "the link's target was not written through");
        }

        /// Only as root (as in CI containers), since only root can give a file away.
        #[test]
        fn a_directory_or_entry_owned_by_another_user_is_refused() {
            let tmp = tempfile::tempdir().unwrap();
            let entry = populated(tmp.path());
            const NOBODY: u32 = 65534;
            if std::os::unix::fs::chown(&entry, Some(NOBODY), None).is_err() {
                eprintln!("skipped: not running as root, cannot chown a file to another user");
                return;
            }
            assert_eq!(outcome(tmp.path()), CacheOutcome::Compiled, "another user's entry must not be loaded");
            assert_ne!(std::fs::metadata(&entry).unwrap().uid(), NOBODY, "the fresh compile replaced it");
            std::os::unix::fs::chown(tmp.path(), Some(NOBODY), None).unwrap();
            let err = Runtime::new(config(tmp.path())).unwrap_err().to_string();
            assert!(err.contains("is owned by uid 65534") && err.contains("chown"), "{err}");
        }
    }
}

/// The operator's caps (`RuntimeConfig::limits`) bound whatever a manifest asks for.
mod operator_caps {
    use super::*;
    use skillbox_runtime::{OperatorLimits, Runtime, RuntimeConfig};

    const GREEDY: &str = "[limits]\nmemory = \"4GiB\"\ntimeout = \"1h\"\n";

    fn capped(limits: OperatorLimits) -> Runtime {
        Runtime::new(RuntimeConfig { cache_dir: None, limits, ..RuntimeConfig::default() }).unwrap()
    }

    fn greedy(component: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        temp_skill(&format!(
            "[skill]\nname = \"greedy\"\nversion = \"0.1.0\"\ncomponent = \"{{component:{component}}}\"\n{GREEDY}"
        ))
    }

    #[test]
    fn defaults_are_documented_values() {
        let limits = OperatorLimits::default();
        assert_eq!(limits.max_memory, 512 * 1024 * 1024);
        assert_eq!(limits.max_timeout, Duration::from_secs(60));
        assert_eq!(limits.fuel, None);
        assert_eq!(RuntimeConfig::default().limits, limits);
    }

    #[tokio::test]
    async fn a_greedy_manifest_runs_at_the_caps() {
        let rt = capped(OperatorLimits {
            max_memory: 32 * 1024 * 1024,
            max_timeout: Duration::from_millis(300),
            fuel: None,
        });
        let (_dir, manifest) = greedy("hello");
        let skill = rt.load(&manifest).unwrap();
        assert_eq!(skill.limits().memory, 32 * 1024 * 1024);
        assert_eq!(skill.limits().timeout, Duration::from_millis(300));
        assert_eq!(skill.manifest().limits.memory, 4 * 1024 * 1024 * 1024);
        assert!(skill.invoke(r#"{"name":"Ada"}"#).await.unwrap().json.contains("Hello, Ada!"));

        let (_dir, manifest) = greedy("spin-forever");
        let started = Instant::now();
        let err = rt.load(&manifest).unwrap().invoke("{}").await.unwrap_err();
        assert!(
            matches!(err, Error::TimeLimit { limit, operator_cap: true, .. } if limit == Duration::from_millis(300)),
            "{err}"
        );
        assert!(err.to_string().contains("--max-timeout"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "stopped only after {:?}", started.elapsed());

        let (_dir, manifest) = greedy("memory-hog");
        let err = rt.load(&manifest).unwrap().invoke("{}").await.unwrap_err();
        assert!(
            matches!(err, Error::MemoryLimit { limit, operator_cap: true, .. } if limit == 32 * 1024 * 1024),
            "{err}"
        );
        assert!(err.to_string().contains("32.0 MiB") && err.to_string().contains("--max-memory"), "{err}");
    }

    #[tokio::test]
    async fn a_manifest_below_the_caps_keeps_its_own_limits() {
        let rt = capped(OperatorLimits::default());
        let hog = rt.load(skillbox_tests::MEMORY_HOG).unwrap();
        assert_eq!(hog.limits().memory, 16 * 1024 * 1024);
        let err = hog.invoke("{}").await.unwrap_err();
        assert!(matches!(err, Error::MemoryLimit { operator_cap: false, .. }), "{err}");
        assert!(err.to_string().contains("limits.memory"), "{err}");
    }

    #[tokio::test]
    async fn a_fuel_cap_applies_to_skills_without_one() {
        let rt = capped(OperatorLimits { fuel: Some(1000), ..OperatorLimits::default() });
        let err = rt.load(skillbox_tests::HELLO).unwrap().invoke(r#"{"name":"Ada"}"#).await.unwrap_err();
        assert!(matches!(err, Error::FuelLimit { limit: 1000, operator_cap: true, .. }), "{err}");
        assert!(err.to_string().contains("--fuel"), "{err}");
        // A manifest's own smaller budget wins over a larger cap.
        let rt = capped(OperatorLimits { fuel: Some(u64::MAX / 2), ..OperatorLimits::default() });
        assert_eq!(rt.load(skillbox_tests::MISBEHAVE).unwrap().limits().fuel, Some(50_000_000));
    }

    #[test]
    fn the_config_file_limits_table_sets_the_caps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("skillbox.toml");
        std::fs::write(&file, "[limits]\nmax_memory = \"256MiB\"\nmax_timeout = \"30s\"\nfuel = 5000\n").unwrap();
        let config = RuntimeConfig::default().apply_file(&file).unwrap();
        assert_eq!(
            config.limits,
            OperatorLimits { max_memory: 256 * 1024 * 1024, max_timeout: Duration::from_secs(30), fuel: Some(5000) }
        );
        for (text, expected) in [
            ("[limits]\nmax_memory = \"lots\"\n", "[limits] max_memory"),
            ("[limits]\nmax_memory = \"8GiB\"\n", "between 1MiB and 4GiB"),
            ("[limits]\nmax_timeout = \"0s\"\n", "[limits] max_timeout"),
            ("[limits]\nmax_timeout = \"2h\"\n", "at most 1h"),
            ("[limits]\nfuel = 0\n", "[limits] fuel"),
            ("[limits]\nmax_memroy = \"1GiB\"\n", "max_memroy"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = RuntimeConfig::default().apply_file(&file).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("skillbox.toml"), "{text}: {err}");
        }
    }
}
