//! Test program: misbehaves on request, so tests can check the host copes.
//!
//! Input `{"do": WHAT}` where WHAT is one of: `invalid-json` (returns text
//! that is not JSON), `error` (returns a skill error), `panic` (traps),
//! `flood-stdout` (writes 1 MiB to stdout, then succeeds), `flood-log`
//! (logs 10,000 long lines, then succeeds), `burn` (computes until its fuel
//! runs out).

wit_bindgen::generate!({ path: "../../wit", world: "skill" });

use skillbox::skill::log::{Level, log};

struct Misbehave;

impl Guest for Misbehave {
    fn run(input: String) -> Result<String, SkillError> {
        let input: serde_json::Value = serde_json::from_str(&input).map_err(|e| SkillError::InvalidInput(e.to_string()))?;
        match input["do"].as_str().unwrap_or_default() {
            "invalid-json" => Ok("this is {not json".into()),
            "error" => Err(SkillError::Failed("upstream said no".into())),
            "panic" => panic!("misbehave was asked to panic"),
            "flood-stdout" => {
                let line = "x".repeat(1023);
                for _ in 0..1024 {
                    println!("{line}");
                }
                Ok(r#"{"flooded":"stdout"}"#.into())
            }
            "flood-log" => {
                let line = "y".repeat(100 * 1024);
                for _ in 0..10_000 {
                    log(Level::Debug, &line);
                }
                Ok(r#"{"flooded":"log"}"#.into())
            }
            "burn" => {
                let mut x: u64 = 1;
                for i in 0..u64::MAX {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
                }
                Ok(format!("{{\"x\":{x}}}"))
            }
            other => Err(SkillError::InvalidInput(format!("unknown action {other:?}"))),
        }
    }
}

export!(Misbehave);
