//! Test program: runs any statement on a database credential and reports
//! what came back, so tests can drive the host's SQL with arbitrary input
//! and check the typed error cases.
//!
//! Input: `{"statement": "...", "params": [1, 2.5, true, "text", null, {"blob": [1, 2]}],
//! "mode": "query" | "execute", "credential": "db"}` (mode and credential optional).
//! Output: `{"columns": [...], "rows": [[...]]}` for a query, `{"changed": n}` for
//! an execute, or `{"error": {"case": "denied", "message": "..."}}`. Integers come
//! back as JSON integers, floats as `{"float": x}`, booleans as JSON booleans,
//! text as strings, blobs as `{"blob": [bytes]}`, so tests see the exact variant.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use skillbox_sdk::sql::{self, Value};
use skillbox_sdk::{Guest, SkillError, credentials, parse_input, to_output};

#[derive(Deserialize)]
struct Input {
    statement: String,
    #[serde(default)]
    params: Vec<Json>,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_credential")]
    credential: String,
}

fn default_mode() -> String {
    "query".into()
}

fn default_credential() -> String {
    "db".into()
}

struct SqlProbe;

impl Guest for SqlProbe {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let params = input.params.iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
        let result = credentials::open(&input.credential).and_then(|db| match input.mode.as_str() {
            "execute" => sql::execute(&db, &input.statement, &params).map(|n| json!({ "changed": n })),
            _ => sql::query(&db, &input.statement, &params).map(|rows| {
                let values: Vec<Vec<Json>> =
                    rows.rows.into_iter().map(|row| row.into_iter().map(from_value).collect()).collect();
                json!({ "columns": rows.columns, "rows": values })
            }),
        });
        match result {
            Ok(value) => to_output(&value),
            Err(error) => {
                let (case, message) = skillbox_sdk::case(&error);
                to_output(&json!({ "error": { "case": case, "message": message } }))
            }
        }
    }
}

fn to_value(param: &Json) -> Result<Value, SkillError> {
    Ok(match param {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) if o.contains_key("float") => Value::Float(o["float"].as_f64().unwrap_or(f64::NAN)),
        Json::Object(o) if o.contains_key("blob") => Value::Blob(
            serde_json::from_value(o["blob"].clone())
                .map_err(|e| SkillError::InvalidInput(format!("blob must be a list of bytes: {e}")))?,
        ),
        other => return Err(SkillError::InvalidInput(format!("unsupported parameter {other}"))),
    })
}

fn from_value(value: Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => b.into(),
        Value::Integer(i) => i.into(),
        Value::Float(f) => json!({ "float": f }),
        Value::Text(s) => s.into(),
        Value::Blob(b) => json!({ "blob": b }),
    }
}

skillbox_sdk::export_skill!(SqlProbe);
