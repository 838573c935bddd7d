//! Approval on first use at the terminal.
//!
//! When a skill opens a credential its manifest declares but nobody granted,
//! the person running `skillbox run` at a terminal is asked. The question
//! goes to the controlling terminal (`/dev/tty`), not stdin/stdout, because
//! those carry the skill's input and output.

use std::io::{BufRead, BufReader, Write};

use skillbox_runtime::{Approval, ApprovalRequest, Approver};

/// Asks on the terminal: allow once, always (records a grant), or deny.
#[derive(Debug, Default)]
pub struct TerminalApprover;

impl Approver for TerminalApprover {
    fn approve(&self, request: &ApprovalRequest) -> Approval {
        match ask(request) {
            Ok(approval) => approval,
            Err(e) => {
                eprintln!("cannot ask for approval ({e}); denying");
                Approval::Deny
            }
        }
    }
}

fn ask(request: &ApprovalRequest) -> std::io::Result<Approval> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let mut out = tty.try_clone()?;
    let hosts = if request.hosts.is_empty() { "no network hosts".to_owned() } else { request.hosts.join(", ") };
    writeln!(
        out,
        "\nskill `{}` wants credential `{}` ({}) for {} [environment {}, user {}]",
        request.skill, request.credential, request.kind, hosts, request.environment, request.user
    )?;
    if !request.purpose.is_empty() {
        writeln!(out, "  purpose: {}", request.purpose)?;
    }
    writeln!(out, "  component sha256: {}", request.skill_digest)?;
    let mut input = BufReader::new(tty);
    loop {
        write!(out, "allow [o]nce, [a]lways, or [d]eny? ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(Approval::Deny);
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "o" | "once" => return Ok(Approval::Once),
            "a" | "always" => return Ok(Approval::Always),
            "d" | "deny" | "n" | "no" | "" => return Ok(Approval::Deny),
            _ => writeln!(out, "please answer o, a or d")?,
        }
    }
}
