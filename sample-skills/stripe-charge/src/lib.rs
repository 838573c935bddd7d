//! Creates a Stripe charge with an API key the skill never sees.
//!
//! Stripe authenticates with the secret key as the HTTP basic-auth user and
//! an empty password; the manifest says `http = "basic"` and the host does
//! the rest. Input: `{"amount": 2000, "currency": "usd", "source": "tok_visa",
//! "description": "...", "base_url": "https://api.stripe.com"}` (the last two
//! optional). Output: `{"id", "amount", "currency", "status"}`.

use serde::Deserialize;
use skillbox_sdk::{Guest, SkillError, credentials, fail, parse_input, send, to_output};

#[derive(Deserialize)]
struct Input {
    amount: u64,
    currency: String,
    source: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "default_base_url")]
    base_url: String,
}

fn default_base_url() -> String {
    "https://api.stripe.com".into()
}

#[derive(Deserialize, serde::Serialize)]
struct Charge {
    id: String,
    amount: u64,
    currency: String,
    status: String,
}

struct StripeCharge;

impl Guest for StripeCharge {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        if input.amount == 0 {
            return Err(SkillError::InvalidInput("amount must be more than 0 (in the currency's smallest unit)".into()));
        }
        let key = credentials::open("stripe").map_err(fail)?;
        let mut form = vec![
            ("amount", input.amount.to_string()),
            ("currency", input.currency),
            ("source", input.source),
        ];
        if let Some(description) = input.description {
            form.push(("description", description));
        }
        let body = serde_urlencoded_form(&form);
        let url = format!("{}/v1/charges", input.base_url.trim_end_matches('/'));
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let response = send("POST", &url, &headers, body.into_bytes(), Some(&key)).map_err(fail)?;
        if !(200..300).contains(&response.status) {
            let body = String::from_utf8_lossy(&response.body);
            return Err(SkillError::Failed(format!("Stripe answered {}: {body}", response.status)));
        }
        let charge: Charge = serde_json::from_slice(&response.body)
            .map_err(|e| SkillError::Failed(format!("Stripe's answer is not a charge: {e}")))?;
        to_output(&charge)
    }
}

/// `application/x-www-form-urlencoded`, as the WHATWG URL spec encodes it.
fn serde_urlencoded_form(pairs: &[(&str, String)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

skillbox_sdk::export_skill!(StripeCharge);
