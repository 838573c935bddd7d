//! `skillbox oauth login`: the first token of an `oauth2` credential, from the user's browser.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use secrecy::SecretString;
use skillbox_oauth::Login;
use skillbox_runtime::vault::{CredentialKind, CredentialRef, Environment, NewCredential, SecretValue};

use crate::GlobalOpts;
use crate::exit::{self, with_code};
use crate::vault_cli;

#[derive(Debug, clap::Subcommand)]
pub enum OauthCommand {
    /// Sign in with the authorization-code flow (PKCE, loopback redirect) and store the tokens
    /// as the `oauth2` credential NAME. Prints (and with --open, opens) the URL to approve in a
    /// browser; the tokens go from the provider to the vault, never through the terminal. For a
    /// credential that exists, the endpoints and client are taken from it: `skillbox oauth login
    /// NAME` signs in again (after `needs-reauth`).
    Login(LoginArgs),
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The credential's name.
    name: String,
    /// The provider's authorization endpoint [default: the credential's].
    #[arg(long, value_name = "URL")]
    auth_url: Option<String>,
    /// The provider's token endpoint [default: the credential's].
    #[arg(long, value_name = "URL")]
    token_url: Option<String>,
    /// The OAuth 2 client id [default: the credential's].
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Read the client secret from stdin (confidential clients) [default: the credential's].
    #[arg(long)]
    client_secret_stdin: bool,
    /// A scope to ask for (repeat for several) [default: the credential's].
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// The service the credential is for, when it is new [default: NAME].
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// The environment the credential belongs to.
    #[arg(long = "env", env = "SKILLBOX_ENV", default_value = "dev", value_name = "ENV")]
    environment: String,
    /// The user or tenant it belongs to.
    #[arg(long, env = "SKILLBOX_USER", default_value = "default", value_name = "USER")]
    owner: String,
    /// Open the URL with the desktop's browser (`xdg-open`/`open`) as well as printing it.
    #[arg(long)]
    open: bool,
    /// Allow plain http endpoints on loopback (a local provider, tests).
    #[arg(long)]
    allow_http_loopback: bool,
}

pub fn run(command: OauthCommand, global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    let OauthCommand::Login(args) = command;
    let environment: Environment =
        args.environment.parse().map_err(|e| with_code(exit::USAGE, anyhow::anyhow!("--env: {e}")))?;
    let vault = vault_cli::open_vault(global)?;
    let r = CredentialRef { owner: args.owner.clone(), environment, name: args.name.clone() };
    let existing = match vault.show(&r) {
        Ok(detail) if detail.info.kind != CredentialKind::OAuth2 => {
            return Err(with_code(
                exit::USAGE,
                anyhow::anyhow!(
                    "credential `{}` is a {} credential; oauth login stores oauth2 credentials",
                    r.name,
                    detail.info.kind
                ),
            ));
        }
        Ok(_) => match vault.reveal(&r, &vault_cli::actor(), Some("oauth login: endpoints and client")) {
            Ok(SecretValue::OAuth2(token)) => Some(token),
            _ => None,
        },
        Err(_) => None,
    };
    let client_secret = if args.client_secret_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the client secret from stdin")?;
        Some(SecretString::from(text.trim_end_matches(['\r', '\n']).to_owned()))
    } else {
        existing.as_ref().and_then(|t| t.client_secret.clone())
    };
    let missing = |flag: &str| {
        with_code(
            exit::USAGE,
            anyhow::anyhow!("{flag} is required: credential `{}` does not exist yet (or does not record it)", r.name),
        )
    };
    let pick =
        |given: Option<String>, stored: Option<String>, flag: &str| given.or(stored).ok_or_else(|| missing(flag));
    let login = Login {
        name: args.name.clone(),
        auth_url: pick(args.auth_url, existing.as_ref().and_then(|t| t.auth_url.clone()), "--auth-url")?,
        token_url: pick(args.token_url, existing.as_ref().and_then(|t| t.token_endpoint.clone()), "--token-url")?,
        client_id: pick(args.client_id, existing.as_ref().and_then(|t| t.client_id.clone()), "--client-id")?,
        client_secret,
        scopes: if args.scopes.is_empty() { existing.map(|t| t.scopes).unwrap_or_default() } else { args.scopes },
        allow_http_loopback: args.allow_http_loopback,
    };
    let open = args.open;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime
        .block_on(login.run(|url| {
            eprintln!("Open this URL in a browser and approve access for `{}`:\n{url}", login.name);
            if open {
                let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
                let _ = std::process::Command::new(opener).arg(url).spawn();
            }
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let actor = vault_cli::actor();
    let stored = if vault.show(&r).is_ok() {
        vault.rotate(&r, &outcome.value, &actor).map_err(vault_cli::vault_err)?
    } else {
        let service = args.service.unwrap_or_else(|| args.name.clone());
        let new = NewCredential::new(r.clone(), CredentialKind::OAuth2, &service);
        vault.add(&new, &outcome.value, &actor).map_err(vault_cli::vault_err)?
    };
    eprintln!(
        "signed in: stored the tokens of oauth2 credential '{}' in {} (version {}); the host refreshes them from now on",
        stored.name, stored.environment, stored.version
    );
    Ok(ExitCode::SUCCESS)
}
