//! Reports the orders at or above a minimum total, from a database the
//! skill can query but never connect to itself.
//!
//! Input: `{"min_total": 100}` (optional, default 0).
//! Output: `{"rows": [{"customer": "...", "total": 120}, ...], "count": 1}`.
//! Works unchanged on PostgreSQL and SQLite: both accept `$1`.

use serde::Deserialize;
use skillbox_sdk::sql::{self, Value};
use skillbox_sdk::{Guest, SkillError, credentials, fail, parse_input, to_output};

const REPORT: &str = "SELECT customer, total FROM orders WHERE total >= $1 ORDER BY total DESC";

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    min_total: Option<serde_json::Number>,
}

struct DbReport;

impl Guest for DbReport {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let min_total = match input.min_total {
            None => Value::Integer(0),
            Some(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Float(
                    n.as_f64().ok_or_else(|| SkillError::InvalidInput("min_total is not a number".into()))?,
                ),
            },
        };
        let db = credentials::open("reports-db").map_err(fail)?;
        let result = sql::query(&db, REPORT, &[min_total]).map_err(fail)?;
        let rows: Vec<serde_json::Value> = result
            .rows
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter();
                let customer = row.next().map(json).unwrap_or_default();
                let total = row.next().map(json).unwrap_or_default();
                serde_json::json!({ "customer": customer, "total": total })
            })
            .collect();
        to_output(&serde_json::json!({ "count": rows.len(), "rows": rows }))
    }
}

fn json(value: Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => b.into(),
        Value::Integer(i) => i.into(),
        Value::Float(f) => f.into(),
        Value::Text(s) => s.into(),
        Value::Blob(b) => b.into(),
    }
}

skillbox_sdk::export_skill!(DbReport);
