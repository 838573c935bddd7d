//! Signs a webhook payload with an HMAC key the skill never sees.
//!
//! The signed text is `"{timestamp}.{payload}"` and the result is a
//! `t=...,v1=...` header in the style Stripe uses, so receivers can check
//! both integrity and freshness. Input: `{"payload": "...", "timestamp":
//! 1700000000, "algorithm": "sha256"}` (`algorithm` optional: `sha256` or
//! `sha512`). Output: `{"signature": "<hex>", "header": "t=...,v1=<hex>"}`.

use serde::Deserialize;
use skillbox_sdk::signing::{self, Algorithm};
use skillbox_sdk::{Guest, SkillError, credentials, fail, parse_input, to_output};

#[derive(Deserialize)]
struct Input {
    payload: String,
    timestamp: u64,
    #[serde(default)]
    algorithm: Option<String>,
}

struct WebhookSigner;

impl Guest for WebhookSigner {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let algorithm = match input.algorithm.as_deref().unwrap_or("sha256") {
            "sha256" => Algorithm::HmacSha256,
            "sha512" => Algorithm::HmacSha512,
            other => return Err(SkillError::InvalidInput(format!("algorithm {other:?}: use sha256 or sha512"))),
        };
        let key = credentials::open("webhook-key").map_err(fail)?;
        let message = format!("{}.{}", input.timestamp, input.payload);
        let mac = signing::hmac(&key, algorithm, message.as_bytes()).map_err(fail)?;
        let signature: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        let header = format!("t={},v1={signature}", input.timestamp);
        to_output(&serde_json::json!({ "signature": signature, "header": header }))
    }
}

skillbox_sdk::export_skill!(WebhookSigner);
