//! Test program: performs the credential steps its input lists and reports
//! each outcome, so tests can drive the attack table case by case.
//!
//! Input: `{"steps": [STEP, ...]}` where STEP is one of
//! - `{"open": NAME}`: open a credential, report its metadata;
//! - `{"send": {"method", "url", "headers": [[k, v]], "body"}, "auth": NAME?}`:
//!   an HTTP request, authenticated with the named credential when given;
//! - `{"hmac": NAME, "message": TEXT, "algorithm": "sha256"|"sha512"}`.
//!
//! Output: `{"results": [{"ok": ...} | {"error": {"case": ..., "message": ...}}]}`.
//! The skill itself never fails on a step's error: the report is the point.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};
use skillbox_sdk::credentials::{self, Credential};
use skillbox_sdk::signing::{self, Algorithm};
use skillbox_sdk::{Error, Guest, SkillError, parse_input, send, to_output};

#[derive(Deserialize)]
struct Input {
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Step {
    Open { open: String },
    Send { send: Request, auth: Option<String> },
    Hmac { hmac: String, message: String, #[serde(default)] algorithm: Option<String> },
}

#[derive(Deserialize)]
struct Request {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

fn get() -> String {
    "GET".into()
}

struct CredProbe;

impl Guest for CredProbe {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let mut open: HashMap<String, Credential> = HashMap::new();
        let results: Vec<Value> = input.steps.into_iter().map(|step| report(run_step(step, &mut open))).collect();
        to_output(&json!({ "results": results }))
    }
}

fn run_step(step: Step, open: &mut HashMap<String, Credential>) -> Result<Value, Error> {
    match step {
        Step::Open { open: name } => {
            let credential = handle(open, &name)?;
            Ok(json!({
                "name": credential.name(),
                "kind": format!("{:?}", credential.kind()),
                "service": credential.service(),
                "scopes": credential.scopes(),
                "expires_at": credential.expires_at(),
            }))
        }
        Step::Send { send: request, auth } => {
            let credential = match &auth {
                Some(name) => Some(handle(open, name)?),
                None => None,
            };
            let headers: Vec<(&str, &str)> = request.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let response = send(&request.method, &request.url, &headers, request.body.into_bytes(), credential)?;
            Ok(json!({
                "status": response.status,
                "headers": response.headers,
                "body": String::from_utf8_lossy(&response.body),
            }))
        }
        Step::Hmac { hmac, message, algorithm } => {
            let key = handle(open, &hmac)?;
            let algorithm =
                if algorithm.as_deref() == Some("sha512") { Algorithm::HmacSha512 } else { Algorithm::HmacSha256 };
            let mac = signing::hmac(key, algorithm, message.as_bytes())?;
            Ok(json!({ "mac": mac.iter().map(|b| format!("{b:02x}")).collect::<String>() }))
        }
    }
}

/// Opens `name` once per invocation and reuses the handle.
fn handle<'a>(open: &'a mut HashMap<String, Credential>, name: &str) -> Result<&'a Credential, Error> {
    if !open.contains_key(name) {
        open.insert(name.to_owned(), credentials::open(name)?);
    }
    Ok(&open[name])
}

fn report(result: Result<Value, Error>) -> Value {
    match result {
        Ok(value) => json!({ "ok": value }),
        Err(error) => {
            let (case, message) = skillbox_sdk::case(&error);
            json!({ "error": { "case": case, "message": message } })
        }
    }
}

skillbox_sdk::export_skill!(CredProbe);
