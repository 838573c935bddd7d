//! Reading secrets: a no-echo prompt on a terminal, `--value-stdin`, or
//! `--value-file`. Never argv: flags that would carry a secret are refused
//! with an explanation.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;
use secrecy::SecretString;
use skillbox_vault::{CredentialKind, SecretValue};
use zeroize::Zeroizing;

use super::{ValueOpts, vault_err};
use crate::exit::{self, with_code};

/// The message for a secret given on the command line.
pub const ARGV_REFUSED: &str = "refusing to take a secret from the command line: arguments are visible to every user \
     (ps, /proc/PID/cmdline) and end up in shell history. Give the value one of these safe ways instead: \
     run the command on a terminal and type it at the hidden prompt; pipe it in with --value-stdin \
     (e.g. `pass show stripe | skillbox cred add ... --value-stdin`); or put it in a file and pass --value-file FILE \
     (a JSON object for multi-field types, or the bare secret for api_key, bearer, oauth2 and hmac_key)";

pub fn refuse_argv_secrets(v: &ValueOpts) -> anyhow::Result<()> {
    for (flag, given) in [
        ("--value", v.value.is_some()),
        ("--secret", v.secret.is_some()),
        ("--password", v.password.is_some()),
        ("--token", v.token.is_some()),
    ] {
        if given {
            return Err(with_code(exit::USAGE, anyhow::anyhow!("{flag}: {ARGV_REFUSED}")));
        }
    }
    Ok(())
}

/// Reads and parses a value of `kind` the way the flags say, and refuses a
/// secret field shorter than [`skillbox_vault::MIN_SECRET_LEN`] bytes unless
/// `--allow-short-secret` was given.
pub fn read_value(kind: CredentialKind, name: &str, v: &ValueOpts) -> anyhow::Result<SecretValue> {
    let mut value = read_unchecked(kind, name, v)?;
    if v.allow_privileged_role {
        let SecretValue::Database(skillbox_vault::Database::Postgres(pg)) = &mut value else {
            return Err(with_code(
                exit::USAGE,
                anyhow::anyhow!("--allow-privileged-role applies only to PostgreSQL database credentials"),
            ));
        };
        pg.allow_privileged_role = true;
    }
    if !v.allow_short_secret {
        value.check_secret_length().map_err(vault_err)?;
    }
    Ok(value)
}

fn read_unchecked(kind: CredentialKind, name: &str, v: &ValueOpts) -> anyhow::Result<SecretValue> {
    let text: Zeroizing<String> = if v.value_stdin {
        let mut s = Zeroizing::new(String::with_capacity(8192));
        std::io::stdin().read_to_string(&mut s).context("reading the value from stdin")?;
        s
    } else if let Some(path) = &v.value_file {
        Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the value from {}", path.display()))
                .map_err(|e| with_code(exit::USAGE, e))?,
        )
    } else if std::io::stdin().is_terminal() {
        return prompt_value(kind, name);
    } else {
        return Err(with_code(
            exit::USAGE,
            anyhow::anyhow!(
                "no value given for '{name}': pass --value-stdin or --value-file FILE, or run on a terminal to be prompted"
            ),
        ));
    };
    parse(kind, &text)
}

fn parse(kind: CredentialKind, text: &str) -> anyhow::Result<SecretValue> {
    // One trailing newline (from `echo` or an editor) is not part of the secret.
    let t = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
    let r = if t.trim_start().starts_with('{') {
        SecretValue::from_json(kind, t)
    } else {
        SecretValue::from_single(kind, t)
    };
    r.map_err(vault_err)
}

fn prompt_value(kind: CredentialKind, name: &str) -> anyhow::Result<SecretValue> {
    match kind {
        CredentialKind::Basic => {
            eprint!("User name for '{name}': ");
            std::io::stderr().flush().ok();
            let mut user = String::new();
            std::io::stdin().read_line(&mut user).context("reading the user name")?;
            let pw = Zeroizing::new(rpassword::prompt_password(format!("Password for '{name}' (hidden): "))?);
            let json =
                Zeroizing::new(serde_json::json!({ "username": user.trim(), "password": pw.as_str() }).to_string());
            SecretValue::from_json(kind, &json).map_err(vault_err)
        }
        k if k.is_single_secret() => {
            let s = Zeroizing::new(rpassword::prompt_password(format!("Secret for '{name}' ({k}, hidden): "))?);
            SecretValue::from_single(kind, &s).map_err(vault_err)
        }
        k => {
            let s = Zeroizing::new(rpassword::prompt_password(format!(
                "JSON value for '{name}' ({k}, hidden, one line): "
            ))?);
            SecretValue::from_json(kind, &s).map_err(vault_err)
        }
    }
}

/// Prompts twice for a new passphrase.
pub fn new_passphrase(what: &str) -> anyhow::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        return Err(with_code(
            exit::USAGE,
            anyhow::anyhow!("no terminal to prompt for the {what} passphrase: set SKILLBOX_PASSPHRASE instead"),
        ));
    }
    let a = Zeroizing::new(rpassword::prompt_password(format!("New {what} passphrase: "))?);
    let b = Zeroizing::new(rpassword::prompt_password(format!("Repeat the {what} passphrase: "))?);
    if a.as_str() != b.as_str() {
        return Err(with_code(exit::USAGE, anyhow::anyhow!("the two passphrases differ; nothing was changed")));
    }
    check_new_passphrase(&a)?;
    Ok(SecretString::from(a.as_str()))
}

/// The one length rule for a new passphrase, whether typed at the prompt or
/// given in `SKILLBOX_PASSPHRASE` (same check, same message; exit 2).
pub fn check_new_passphrase(p: &str) -> anyhow::Result<()> {
    skillbox_vault::check_new_passphrase(p).map_err(|e| with_code(exit::USAGE, e))
}

pub fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
