//! The smallest useful skill: reads `{"name": ...}`, logs one line, and
//! returns `{"greeting": "Hello, <name>!"}`.

wit_bindgen::generate!({ path: "../../wit", world: "skill" });

use skillbox::skill::log::{Level, log};

#[derive(serde::Deserialize)]
struct Input {
    name: String,
}

struct Hello;

impl Guest for Hello {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = serde_json::from_str(&input)
            .map_err(|e| SkillError::InvalidInput(format!("expected {{\"name\": \"...\"}}: {e}")))?;
        log(Level::Info, &format!("greeting {}", input.name));
        let greeting = format!("Hello, {}!", input.name);
        Ok(serde_json::json!({ "greeting": greeting }).to_string())
    }
}

export!(Hello);
