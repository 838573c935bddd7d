//! Test program: a hostile guest that pushes the host's per-invocation bounds (host calls,
//! open handles, log volume, audit rows, the sizes of what it hands over) as far as its
//! input says, and reports what every step got back, so tests can check each bound holds.
//!
//! Input: `{"steps": [STEP, ...], "pad": BYTES, "fail": BYTES}` (`pad` and `fail` optional)
//! where STEP is one of
//! - `{"open": NAME, "times": N, "keep": BOOL}`: opens NAME N times, keeping every handle
//!   until the step ends when `keep` is true, else dropping each at once;
//! - `{"open_long": BYTES}`: opens a credential whose name is BYTES long;
//! - `{"log": N, "bytes": BYTES}`: writes N log lines of BYTES each (or of `"text": TEXT`);
//! - `{"hmac": NAME, "times": N}`: opens NAME once and signs a short message N times;
//! - `{"send": URL, "times": N, "url_bytes": B, "headers": H, "header_bytes": B}`: sends N
//!   unauthenticated GETs to URL (padded with a query to `url_bytes`, with H extra headers,
//!   the first of them `header_bytes` long);
//! - `{"sql": STATEMENT, "text_bytes": BYTES}`: runs STATEMENT on credential `db`, with one
//!   text parameter of BYTES when given.
//!
//! `pad` puts a string of that many bytes into the result; `fail` makes `run` fail with a
//! message that long instead.
//!
//! Output: `{"results": [{"ok": N, "errors": {CASE: N}, "first_error": {"case", "message"},
//! "value": ...}], "pad": "..."}`. The skill never fails on a step's error: the tally is the point.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use skillbox_sdk::log::{Level, log};
use skillbox_sdk::signing::{self, Algorithm};
use skillbox_sdk::sql::{self, Value as SqlValue};
use skillbox_sdk::{Error, Guest, SkillError, credentials, parse_input, send, to_output};

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    pad: usize,
    #[serde(default)]
    fail: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Step {
    Open {
        open: String,
        #[serde(default = "one")]
        times: u64,
        #[serde(default)]
        keep: bool,
    },
    OpenLong {
        open_long: usize,
    },
    Log {
        log: u64,
        #[serde(default)]
        bytes: usize,
        #[serde(default)]
        text: Option<String>,
    },
    Hmac {
        hmac: String,
        #[serde(default = "one")]
        times: u64,
    },
    Send {
        send: String,
        #[serde(default = "one")]
        times: u64,
        #[serde(default)]
        url_bytes: usize,
        #[serde(default)]
        headers: usize,
        #[serde(default)]
        header_bytes: usize,
    },
    Sql {
        sql: String,
        #[serde(default)]
        text_bytes: Option<usize>,
    },
}

fn one() -> u64 {
    1
}

/// What a step's calls came to: successes, errors by WIT case, the first error in full.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    first_error: Option<Value>,
    value: Option<Value>,
}

impl Tally {
    fn add<T>(&mut self, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(value) => {
                self.ok += 1;
                Some(value)
            }
            Err(error) => {
                let (case, message) = skillbox_sdk::case(&error);
                *self.errors.entry(case).or_default() += 1;
                self.first_error.get_or_insert_with(|| json!({ "case": case, "message": message }));
                None
            }
        }
    }

    fn into_json(self) -> Value {
        json!({ "ok": self.ok, "errors": self.errors, "first_error": self.first_error, "value": self.value })
    }
}

struct LimitProbe;

impl Guest for LimitProbe {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let results: Vec<Value> = input.steps.into_iter().map(|step| run_step(step).into_json()).collect();
        if let Some(bytes) = input.fail {
            return Err(SkillError::Failed("e".repeat(bytes)));
        }
        to_output(&json!({ "results": results, "pad": "x".repeat(input.pad) }))
    }
}

fn run_step(step: Step) -> Tally {
    let mut tally = Tally::default();
    match step {
        Step::Open { open: name, times, keep } => {
            let mut kept = Vec::new();
            for _ in 0..times {
                if let Some(handle) = tally.add(credentials::open(&name))
                    && keep
                {
                    kept.push(handle);
                }
            }
        }
        Step::OpenLong { open_long } => {
            tally.add(credentials::open(&"a".repeat(open_long)));
        }
        Step::Log { log: lines, bytes, text } => {
            let line = text.unwrap_or_else(|| "y".repeat(bytes));
            for _ in 0..lines {
                log(Level::Info, &line);
            }
            tally.ok = lines;
        }
        Step::Hmac { hmac, times } => {
            if let Some(key) = tally.add(credentials::open(&hmac)) {
                for _ in 0..times {
                    tally.add(signing::hmac(&key, Algorithm::HmacSha256, b"message"));
                }
            }
        }
        Step::Send { send: url, times, url_bytes, headers, header_bytes } => {
            let url =
                if url_bytes > url.len() { format!("{url}?p={}", "a".repeat(url_bytes - url.len())) } else { url };
            let headers: Vec<(String, String)> = (0..headers)
                .map(|i| (format!("x-probe-{i}"), if i == 0 { "v".repeat(header_bytes) } else { "v".into() }))
                .collect();
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            for _ in 0..times {
                tally.add(send("GET", &url, &headers, Vec::new(), None));
            }
        }
        Step::Sql { sql: statement, text_bytes } => {
            let params: Vec<SqlValue> = text_bytes.map(|n| SqlValue::Text("x".repeat(n))).into_iter().collect();
            let rows = credentials::open("db").and_then(|db| sql::query(&db, &statement, &params));
            if let Some(rows) = tally.add(rows) {
                tally.value = rows.rows.first().and_then(|row| row.first()).map(|v| match v {
                    SqlValue::Integer(i) => json!(i),
                    SqlValue::Text(s) => json!(s.len()),
                    SqlValue::Blob(b) => json!(b.len()),
                    _ => Value::Null,
                });
            }
        }
    }
    tally
}

skillbox_sdk::export_skill!(LimitProbe);
