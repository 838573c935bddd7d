//! Lists a GitHub repository's issues with a token the skill never sees.
//!
//! Input: `{"owner": "o", "repo": "r", "base_url": "https://api.github.com"}`
//! (`base_url` optional: GitHub Enterprise, or a local test server).
//! Output: `{"issues": [{"number": 1, "title": "..."}, ...]}`.

use serde::Deserialize;
use skillbox_sdk::{Guest, SkillError, credentials, fail, parse_input, send, to_output};

#[derive(Deserialize)]
struct Input {
    owner: String,
    repo: String,
    #[serde(default = "default_base_url")]
    base_url: String,
}

fn default_base_url() -> String {
    "https://api.github.com".into()
}

#[derive(Deserialize, serde::Serialize)]
struct Issue {
    number: u64,
    title: String,
}

struct GithubIssues;

impl Guest for GithubIssues {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = parse_input(&input)?;
        let token = credentials::open("github").map_err(fail)?;
        let url = format!("{}/repos/{}/{}/issues", input.base_url.trim_end_matches('/'), input.owner, input.repo);
        let headers = [("accept", "application/vnd.github+json"), ("user-agent", "skillbox-github-issues")];
        let response = send("GET", &url, &headers, Vec::new(), Some(&token)).map_err(fail)?;
        if response.status != 200 {
            let body = String::from_utf8_lossy(&response.body);
            return Err(SkillError::Failed(format!("GitHub answered {}: {body}", response.status)));
        }
        let issues: Vec<Issue> = serde_json::from_slice(&response.body)
            .map_err(|e| SkillError::Failed(format!("GitHub's answer is not an issue list: {e}")))?;
        to_output(&serde_json::json!({ "issues": issues }))
    }
}

skillbox_sdk::export_skill!(GithubIssues);
