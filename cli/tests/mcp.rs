//! `skillbox mcp` driven by rmcp's own client over stdio, in both protocol lifecycles: the
//! older `initialize` handshake and the stateless `server/discover` one.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};
use skillbox_tests::server::{Received, Reply, TestServer};

const TOKEN: &str = "ghp_McpStdioToken0123456789abcdefABCD";
const MASTER_KEY: &str = "6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d";

type Client = RunningService<RoleClient, ()>;

/// One compile cache for every server this test binary starts.
fn cache() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn samples() -> PathBuf {
    Path::new(skillbox_tests::HELLO).parent().unwrap().to_owned()
}

/// `skillbox mcp --skills ...` with a vault (maybe absent) in `dir`.
fn server_command(dir: &Path, skills: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_skillbox"));
    cmd.arg("mcp").arg("--allow-http-loopback");
    for s in skills {
        cmd.args(["--skills", s]);
    }
    cmd.env("SKILLBOX_VAULT", dir.join("vault.db"))
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env("SKILLBOX_CACHE_DIR", cache())
        .env_remove("SKILLBOX_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

async fn connect(dir: &Path, skills: &[&str], lifecycle: ClientLifecycleMode) -> Client {
    let transport = TokioChildProcess::builder(server_command(dir, skills)).stderr(Stdio::null()).spawn().unwrap().0;
    ().serve_with_lifecycle(transport, lifecycle).await.expect("the MCP session starts")
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn stateless() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }
}

async fn call<H: rmcp::ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let args = args.as_object().cloned().unwrap();
    client.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)).await.expect("tools/call")
}

fn text(result: &CallToolResult) -> String {
    serde_json::to_string(&result.content).unwrap()
}

/// The CLI, for setting up the vault the server reads.
fn cli(dir: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(args)
        .env("SKILLBOX_VAULT", dir.join("vault.db"))
        .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
        .env_remove("SKILLBOX_KEY_FILE")
        .env_remove("SKILLBOX_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_skill_is_a_tool_and_hello_runs() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let client = connect(dir.path(), &[samples.to_str().unwrap()], legacy()).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in ["hello", "github-issues", "stripe-charge", "webhook-signer", "db-report", "exfiltrate"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(!names.contains(&"not-a-skill"), "a component that is not a skill is skipped: {names:?}");
    for tool in &tools {
        assert!(skillbox_runtime::catalogue::is_tool_name(&tool.name), "{}", tool.name);
        assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{}", tool.name);
        // Every sample skill describes its input (without `[input] schema` a tool gets a bare
        // `{"type": "object"}`); one that takes nothing says so with `additionalProperties: false`.
        let properties = tool.input_schema.get("properties").and_then(Value::as_object);
        let takes_nothing = tool.input_schema.get("additionalProperties") == Some(&json!(false));
        assert!(
            properties.is_some_and(|p| !p.is_empty() || takes_nothing),
            "{} has no input schema properties: {:?}",
            tool.name,
            tool.input_schema
        );
    }
    let hello = tools.iter().find(|t| t.name == "hello").unwrap();
    assert_eq!(hello.description.as_deref(), Some("Greets someone by name."));
    assert_eq!(hello.input_schema["required"], json!(["name"]));
    assert!(hello.output_schema.is_some());

    let result = call(&client, "hello", json!({ "name": "Ada" })).await;
    assert_eq!(result.is_error, Some(false), "{}", text(&result));
    assert_eq!(result.structured_content, Some(json!({ "greeting": "Hello, Ada!" })));
    assert!(text(&result).contains("Hello, Ada!"), "a text copy too: {}", text(&result));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stateless_protocol_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let client = connect(dir.path(), &[skillbox_tests::HELLO], stateless()).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    let result = call(&client, "hello", json!({ "name": "Grace" })).await;
    assert_eq!(result.structured_content, Some(json!({ "greeting": "Hello, Grace!" })), "{}", text(&result));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_that_fails_the_schema_is_an_error_naming_the_field_and_unknown_tools_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let client = connect(dir.path(), &[skillbox_tests::HELLO], legacy()).await;
    let result = call(&client, "hello", json!({ "name": 5 })).await;
    assert_eq!(result.is_error, Some(true));
    let message = text(&result);
    assert!(message.contains("`/name`") && message.contains("string"), "{message}");
    assert!(message.contains("input schema"), "{message}");
    let missing = call(&client, "hello", json!({})).await;
    assert!(text(&missing).contains("name"), "{}", text(&missing));

    let unknown = client.call_tool(CallToolRequestParams::new("no-such-tool").with_arguments(Default::default())).await;
    assert!(unknown.is_err(), "{unknown:?}");
    client.cancel().await.unwrap();
}

/// A GitHub-like server answering one issue to `Bearer TOKEN`, 401 to anything else.
async fn github_server(number: u64, title: &'static str) -> TestServer {
    TestServer::start("127.0.0.1", move |req: &Received| {
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            Reply::json(200, json!([{ "number": number, "title": title }]))
        } else {
            Reply::json(401, json!({ "message": "Bad credentials" }))
        }
    })
    .await
}

/// A vault in `dir` holding TOKEN as the `github` bearer credential.
fn vault_with_token(dir: &Path) {
    cli(dir, &["vault", "init"], None);
    cli(dir, &["cred", "add", "github", "--type", "bearer", "--service", "github", "--value-stdin"], Some(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentialed_skill_runs_against_loopback_and_an_ungranted_one_names_the_grant_command() {
    let server = github_server(3, "Via MCP").await;
    let dir = tempfile::tempdir().unwrap();
    vault_with_token(dir.path());
    let input = json!({ "owner": "o", "repo": "r", "base_url": server.base_url() });

    // Not granted: an error the agent can pass on, naming the operator's command.
    let client = connect(dir.path(), &[skillbox_tests::GITHUB_ISSUES], legacy()).await;
    let denied = call(&client, "github-issues", input.clone()).await;
    assert_eq!(denied.is_error, Some(true));
    assert!(text(&denied).contains("skillbox grant github-issues github"), "{}", text(&denied));
    assert!(server.received().is_empty());
    client.cancel().await.unwrap();

    cli(dir.path(), &["grant", "github-issues", "github", "--hosts", &server.host()], None);
    let client = connect(dir.path(), &[skillbox_tests::GITHUB_ISSUES], stateless()).await;
    let result = call(&client, "github-issues", input).await;
    assert_eq!(result.is_error, Some(false), "{}", text(&result));
    assert_eq!(result.structured_content, Some(json!({ "issues": [{ "number": 3, "title": "Via MCP" }] })));
    assert!(!text(&result).contains(TOKEN));
    assert_eq!(server.received().len(), 1);
    client.cancel().await.unwrap();
}

/// A client that can show forms, answering every approval form with `decision` (or
/// declining it), and remembering what it was shown.
#[derive(Clone)]
struct FormClient {
    decision: Option<&'static str>,
    shown: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl rmcp::ClientHandler for FormClient {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::builder().enable_elicitation().build(),
            rmcp::model::Implementation::new("form-client", "1.0.0"),
        )
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        use rmcp::model::{ElicitRequestParams, ElicitResult, ElicitationAction};
        if let ElicitRequestParams::FormElicitationParams { message, requested_schema, .. } = &request {
            self.shown.lock().unwrap().push(format!("{message}\n{}", serde_json::to_string(requested_schema).unwrap()));
        }
        Ok(match self.decision {
            Some(d) => ElicitResult::new(ElicitationAction::Accept).with_content(json!({ "decision": d })),
            None => ElicitResult::new(ElicitationAction::Decline),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_shows_forms_is_asked_to_approve_an_ungranted_credential() {
    let server = github_server(9, "Approved").await;
    let dir = tempfile::tempdir().unwrap();
    vault_with_token(dir.path());
    // The manifest sends the token only to the test server (no grant, so no --hosts override).
    let skill_dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(Path::new(skillbox_tests::GITHUB_ISSUES).join("skill.toml"))
        .unwrap()
        .replace(
            "component = \"../target/wasm32-wasip2/release/github_issues.wasm\"",
            &format!("component = {:?}", skillbox_tests::GITHUB_ISSUES_COMPONENT),
        )
        .replace("hosts = [\"api.github.com\"]", &format!("hosts = [{:?}]", server.host()));
    std::fs::write(skill_dir.path().join("skill.toml"), manifest).unwrap();
    let skill = skill_dir.path().to_str().unwrap();
    let input = json!({ "owner": "o", "repo": "r", "base_url": server.base_url() });
    let transport =
        |dir: &Path| TokioChildProcess::builder(server_command(dir, &[skill])).stderr(Stdio::null()).spawn().unwrap().0;

    // Declined: a denial naming the grant command; nothing sent.
    let declines = FormClient { decision: None, shown: Default::default() };
    let client = rmcp::ServiceExt::serve(declines.clone(), transport(dir.path())).await.unwrap();
    let denied = client
        .call_tool(CallToolRequestParams::new("github-issues").with_arguments(input.as_object().cloned().unwrap()))
        .await
        .unwrap();
    assert_eq!(denied.is_error, Some(true));
    assert!(text(&denied).contains("skillbox grant github-issues github"), "{}", text(&denied));
    let shown = declines.shown.lock().unwrap().clone();
    assert_eq!(shown.len(), 1);
    assert!(
        shown[0].contains("github-issues") && shown[0].contains(&server.host()),
        "shows skill and hosts: {}",
        shown[0]
    );
    assert!(shown[0].contains("once") && shown[0].contains("always") && shown[0].contains("deny"), "{}", shown[0]);
    assert!(!shown[0].contains(TOKEN));
    assert!(server.received().is_empty());
    client.cancel().await.unwrap();

    // Always: the call runs, and a grant is recorded for the next ones (no second form).
    let approves = FormClient { decision: Some("always"), shown: Default::default() };
    let client = rmcp::ServiceExt::serve(approves.clone(), transport(dir.path())).await.unwrap();
    for _ in 0..2 {
        let result = client
            .call_tool(CallToolRequestParams::new("github-issues").with_arguments(input.as_object().cloned().unwrap()))
            .await
            .unwrap();
        assert_eq!(
            result.structured_content,
            Some(json!({ "issues": [{ "number": 9, "title": "Approved" }] })),
            "{}",
            text(&result)
        );
    }
    assert_eq!(approves.shown.lock().unwrap().len(), 1, "asked once, then granted");
    client.cancel().await.unwrap();
    let grants = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(["grants", "--json"])
            .env("SKILLBOX_VAULT", dir.path().join("vault.db"))
            .env("SKILLBOX_MASTER_KEY", MASTER_KEY)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(grants.contains("approved on first use"), "{grants}");
}

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct ListWatcher {
    changed: std::sync::Arc<tokio::sync::Notify>,
}

impl rmcp::ClientHandler for ListWatcher {
    async fn on_tool_list_changed(&self, _context: rmcp::service::NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }
}

/// `skill`'s manifest, its component path made absolute, written into `dir/<name>/`.
fn copy_skill(skill: &str, component: &str, dir: &Path) {
    let name = Path::new(skill).file_name().unwrap();
    let text = std::fs::read_to_string(Path::new(skill).join("skill.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("component = ")).unwrap().to_owned();
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("skill.toml"), text.replace(&line, &format!("component = {component:?}")))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_skills_and_tells_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let skills = tempfile::tempdir().unwrap();
    copy_skill(skillbox_tests::HELLO, skillbox_tests::HELLO_COMPONENT, skills.path());
    let transport = TokioChildProcess::builder(server_command(dir.path(), &[skills.path().to_str().unwrap()]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
        .0;
    let pid = transport.id().unwrap();
    let watcher = ListWatcher::default();
    let client = rmcp::ServiceExt::serve(watcher.clone(), transport).await.unwrap();
    let names = |tools: Vec<rmcp::model::Tool>| tools.into_iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(client.list_all_tools().await.unwrap()), ["hello"]);

    copy_skill(skillbox_tests::GITHUB_ISSUES, skillbox_tests::GITHUB_ISSUES_COMPONENT, skills.path());
    std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    watcher.changed.notified().await;
    assert_eq!(names(client.list_all_tools().await.unwrap()), ["github-issues", "hello"]);
    let result = call(&client, "hello", json!({ "name": "again" })).await;
    assert_eq!(result.structured_content, Some(json!({ "greeting": "Hello, again!" })));
    client.cancel().await.unwrap();
}
