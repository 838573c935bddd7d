//! Today's weather for a city, fetched with a standard `wasi:http` client (`wstd`).
//!
//! Written as any wasi:http program is: no skillbox credential handle, no skillbox `http`
//! interface. Its manifest declares the `weather` bearer credential `transparent = true`, so
//! the host adds `Authorization: Bearer ...` to requests to that credential's hosts; the token
//! never enters this component.
//!
//! Input: `{"city": "Oslo", "base_url": "https://api.weather.example"}` (`base_url` optional).
//! Output: the server's JSON, as it answered.

wit_bindgen::generate!({ path: "../../wit", world: "skill" });

use serde::Deserialize;
use wstd::http::{Body, Client, Request};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    city: String,
    #[serde(default = "default_base_url")]
    base_url: String,
}

fn default_base_url() -> String {
    "https://api.weather.example".into()
}

struct Weather;

impl Guest for Weather {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = serde_json::from_str(&input)
            .map_err(|e| SkillError::InvalidInput(format!("expected {{\"city\": \"...\", \"base_url\"?: \"...\"}}: {e}")))?;
        let url = format!("{}/weather?city={}", input.base_url.trim_end_matches('/'), encode(&input.city));
        wstd::runtime::block_on(fetch(url))
    }
}

async fn fetch(url: String) -> Result<String, SkillError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| SkillError::Failed(format!("{what}: {e}"));
    let request = Request::get(&url)
        .header("accept", "application/json")
        .body(Body::empty())
        .map_err(|e| failed("building the request", &e))?;
    let response = Client::new().send(request).await.map_err(|e| failed("GET /weather", &e))?;
    let status = response.status();
    let mut body = response.into_body();
    let contents = body.contents().await.map_err(|e| failed("reading the response", &e))?.to_vec();
    if !status.is_success() {
        return Err(SkillError::Failed(format!(
            "the weather service answered {status}: {}",
            String::from_utf8_lossy(&contents)
        )));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&contents).map_err(|e| failed("the weather service did not answer JSON", &e))?;
    Ok(json.to_string())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

export!(Weather);
