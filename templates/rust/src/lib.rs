//! {{name}}: takes `{"name": "..."}` (optional), logs one line, and returns
//! `{"greeting": "Hello, <name>!"}`. Replace `run` with your skill's work.

// Bindings for the `skill` world in ../wit (a copy of skillbox's WIT package).
wit_bindgen::generate!({ path: "wit", world: "skill" });

use serde::{Deserialize, Serialize};
use skillbox::skill::log::{Level, log};

/// The input JSON; `[input.schema]` in skill.toml describes the same shape to callers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    name: Option<String>,
}

/// The result JSON; `[output.schema]` describes it.
#[derive(Serialize)]
struct Output {
    greeting: String,
}

struct Skill;

impl Guest for Skill {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = serde_json::from_str(&input)
            .map_err(|e| SkillError::InvalidInput(format!("expected {{\"name\": \"...\"}}: {e}")))?;
        let name = input.name.unwrap_or_else(|| "world".to_owned());
        if name.is_empty() {
            // When the work itself fails (an upstream error, nothing found), say so:
            // the caller gets this message as the skill's error (exit 1).
            return Err(SkillError::Failed("there is nobody to greet".to_owned()));
        }
        log(Level::Info, &format!("greeting {name}"));
        let output = Output { greeting: format!("Hello, {name}!") };
        serde_json::to_string(&output).map_err(|e| SkillError::Failed(format!("cannot write the result: {e}")))
    }
}

export!(Skill);
