//! A skill's input and output JSON Schemas: loaded from its manifest, checked once, used to
//! validate every input before the skill is instantiated.
//!
//! `[input] schema = "input.schema.json"` names a file next to `skill.toml`; `[input] schema =
//! { type = "object", ... }` gives it inline. Without one, the input must be a JSON object
//! (`{"type": "object"}`), which is what MCP clients send. Schemas never fetch anything:
//! remote and file `$ref`s are not resolved (the validator is built without resolvers).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest schema file read (a schema is a few kilobytes).
pub const MAX_SCHEMA_BYTES: u64 = 1024 * 1024;

/// How many schema violations one error lists.
const MAX_REPORTED: usize = 5;

/// The `[input]` or `[output]` table of a manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSection {
    /// A path relative to the manifest, or the schema itself as an inline table.
    pub schema: SchemaSource,
}

/// Where a schema comes from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SchemaSource {
    /// A JSON file, relative to the manifest's directory.
    File(PathBuf),
    /// The schema, inline.
    Inline(serde_json::Map<String, Value>),
}

/// A checked JSON Schema, ready to validate with.
#[derive(Clone)]
pub struct Schema {
    value: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("value", &self.value).finish_non_exhaustive()
    }
}

impl Schema {
    /// The default input schema: any JSON object.
    pub fn any_object() -> Schema {
        Schema::new(serde_json::json!({ "type": "object" })).expect("a valid schema")
    }

    /// Compiles `value` (any draft jsonschema knows; 2020-12 when `$schema` is absent).
    pub fn new(value: Value) -> std::result::Result<Schema, String> {
        if !value.is_object() {
            return Err("a schema must be a JSON object, e.g. {\"type\": \"object\"}".into());
        }
        let validator = jsonschema::validator_for(&value).map_err(|e| e.to_string())?;
        Ok(Schema { value: Arc::new(value), validator: Arc::new(validator) })
    }

    /// Loads the schema a manifest section gives; `dir` is the manifest's directory and
    /// `manifest` its path (for errors); `what` is `input` or `output`.
    pub fn load(section: &SchemaSection, dir: &Path, manifest: &Path, what: &str) -> Result<Schema> {
        let bad = |message: String| Error::Manifest { path: manifest.to_owned(), message };
        let value = match &section.schema {
            SchemaSource::Inline(map) => Value::Object(map.clone()),
            SchemaSource::File(file) => {
                let path = dir.join(file);
                let size = std::fs::metadata(&path)
                    .map_err(|e| bad(format!("[{what}] schema: cannot read {}: {e}", path.display())))?
                    .len();
                if size > MAX_SCHEMA_BYTES {
                    return Err(bad(format!(
                        "[{what}] schema: {} is {size} bytes, over the {MAX_SCHEMA_BYTES}-byte limit",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| bad(format!("[{what}] schema: cannot read {}: {e}", path.display())))?;
                serde_json::from_str(&text)
                    .map_err(|e| bad(format!("[{what}] schema: {} is not JSON: {e}", path.display())))?
            }
        };
        Schema::new(value).map_err(|e| bad(format!("[{what}] schema is not a valid JSON Schema: {e}")))
    }

    /// The schema as JSON (what MCP's `inputSchema` / `outputSchema` carry).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Checks `instance`; the error lists up to five violations, each with the JSON pointer
    /// of the field (`/city`) and what is wrong with it.
    pub fn check(&self, instance: &Value) -> std::result::Result<(), String> {
        let mut errors = self.validator.iter_errors(instance).peekable();
        if errors.peek().is_none() {
            return Ok(());
        }
        let mut reported = Vec::new();
        let mut more = 0usize;
        for error in errors {
            if reported.len() == MAX_REPORTED {
                more += 1;
                continue;
            }
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "the input".to_owned() } else { format!("field `{at}`") };
            reported.push(format!("{at}: {}", crate::display::escape(&clip(&error.to_string(), 200))));
        }
        let mut message = reported.join("; ");
        if more > 0 {
            message += &format!("; and {more} more");
        }
        Err(message)
    }
}

/// At most `max` bytes of `text`, cut at a character boundary (with `…` when cut).
fn clip(text: &str, max: usize) -> String {
    let cut = skillbox_host_api::truncate_at_char_boundary(text, max);
    if cut.len() < text.len() { format!("{cut}…") } else { cut.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn violations_name_the_field() {
        let schema = Schema::new(json!({
            "type": "object",
            "properties": { "city": { "type": "string" }, "days": { "type": "integer", "minimum": 1 } },
            "required": ["city"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(schema.check(&json!({ "city": "Oslo" })).is_ok());
        let e = schema.check(&json!({ "city": 5, "days": 0 })).unwrap_err();
        assert!(e.contains("field `/city`") && e.contains("string"), "{e}");
        assert!(e.contains("field `/days`"), "{e}");
        let e = schema.check(&json!({})).unwrap_err();
        assert!(e.contains("the input") && e.contains("city"), "{e}");
        assert!(Schema::any_object().check(&json!([1])).is_err());
    }

    #[test]
    fn a_schema_is_never_fetched() {
        // A remote `$ref` cannot be resolved: compiling fails instead of fetching it.
        assert!(Schema::new(json!({ "$ref": "https://example.com/schema.json" })).is_err());
        assert!(Schema::new(json!("object")).is_err());
    }
}
