//! Vault subcommands (`vault`, `cred`, `grant`, `ungrant`, `grants`, `audit`, `key`).
//!
//! Placeholder until the vault lands: it only declares the command group.

use std::process::ExitCode;

use clap::Subcommand;

use crate::GlobalOpts;

/// Vault-related subcommands, flattened into the top level.
#[derive(Debug, Subcommand)]
pub enum VaultCommands {
    /// Manage the credential vault file.
    #[command(subcommand)]
    Vault(VaultCmd),
}

/// `skillbox vault ...`
#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Create a new vault.
    Init,
}

pub fn run(cmd: VaultCommands, _global: &GlobalOpts) -> anyhow::Result<ExitCode> {
    match cmd {
        VaultCommands::Vault(VaultCmd::Init) => anyhow::bail!("the vault is not available yet"),
    }
}
