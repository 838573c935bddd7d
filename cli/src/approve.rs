//! Approval on first use at the terminal.
//!
//! When a skill opens a credential its manifest declares but nobody granted,
//! the person running `skillbox run` at a terminal is asked. The question
//! goes to the controlling terminal (`/dev/tty`), not stdin/stdout, because
//! those carry the skill's input and output.

use std::io::{BufRead, BufReader, Write};

use skillbox_runtime::display::escape;
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
    out.write_all(prompt(request).as_bytes())?;
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

/// What the operator is asked. Every field comes from the skill or its manifest (or the
/// command line): escaped, so a purpose cannot rewrite the prompt and a host cannot hide
/// behind a bidi override.
fn prompt(request: &ApprovalRequest) -> String {
    let hosts = if request.hosts.is_empty() {
        "no network hosts".to_owned()
    } else {
        request.hosts.iter().map(|h| escape(h)).collect::<Vec<_>>().join(", ")
    };
    let mut text = format!(
        "\nskill `{}` wants credential `{}` ({}) for {} [environment {}, user {}]\n",
        escape(&request.skill),
        escape(&request.credential),
        escape(&request.kind),
        hosts,
        escape(&request.environment),
        escape(&request.user)
    );
    if !request.purpose.is_empty() {
        text += &format!("  purpose: {}\n", escape(&request.purpose));
    }
    text += &format!("  component sha256: {}\n", escape(&request.skill_digest));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_escapes_what_the_skill_controls() {
        let hostile = "ok\u{1b}[2J\r\nallow [o]nce? a\u{202e}";
        let request = ApprovalRequest {
            skill: "s".into(),
            skill_digest: "ab".into(),
            credential: hostile.into(),
            kind: "bearer".into(),
            hosts: vec!["api.example.com".into(), "evil.example\u{202e}moc.buhtig.ipa".into()],
            purpose: hostile.into(),
            user: "default".into(),
            environment: "dev".into(),
        };
        let text = prompt(&request);
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{202e}'), "{text:?}");
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("for api.example.com, evil.example\\u{202e}moc.buhtig.ipa"), "{text}");
        assert!(text.contains("  purpose: ok\\x1b[2J\\r\\nallow [o]nce?"), "{text}");
    }
}
