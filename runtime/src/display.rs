//! Making skill- and manifest-controlled text safe to print on a terminal.
//!
//! A skill controls its log lines, its stdio, its error messages and (through its
//! `skill.toml`) names, descriptions, purposes and hosts. Printed raw, a newline forges a
//! log line, `\r` or an ANSI sequence (`\x1b[2J`) rewrites what the operator sees, and a
//! bidi override (`U+202E`) or a zero-width character hides the real host in an approval
//! prompt. [`escape`] turns every such character into a visible escape, and
//! [`escape_json`] does the same for JSON text without changing what it means.

use std::borrow::Cow;
use std::fmt::Write;

/// True for characters that must not reach a terminal as they are: control characters
/// (C0, DEL, C1), line and paragraph separators, bidi controls, and invisible
/// zero-width or formatting characters that can hide or reorder text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'                      // soft hyphen
            | '\u{061C}'                    // Arabic letter mark
            | '\u{180E}'                    // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'       // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}'       // line/paragraph separators, bidi embeddings/overrides
            | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}'       // bidi isolates, deprecated format characters
            | '\u{FEFF}'                    // zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}'       // interlinear annotation
        )
}

/// `text` with every [unsafe](is_unsafe) character escaped: `\n`, `\r`, `\t`, `\x1b` for
/// other ASCII controls and DEL, `\u{202e}` for the rest. Borrowed when nothing changes.
/// Backslashes are left alone, so ordinary text (paths, regexes) reads as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text with every [unsafe](is_unsafe) character written as a JSON `\uXXXX` escape.
///
/// JSON lets DEL, C1 controls (`U+009B` is an 8-bit CSI to some terminals) and bidi
/// overrides appear raw inside strings; outside strings they are not valid JSON at all, so
/// escaping them never changes what valid JSON means. The whitespace JSON allows between
/// tokens (`\n`, `\r`, `\t`) is kept: inside strings valid JSON never has it raw. Every
/// unsafe character is in the Basic Multilingual Plane, so one `\uXXXX` each suffices.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    let unsafe_in_json = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A [`std::fmt::Display`] wrapper that prints its contents [escaped](escape).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["", "hello", "api.github.com, 127.0.0.1:8080", "C:\\path\\x1b", "naïve café 日本 🎉"] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text), "{text}");
            assert!(matches!(escape_json(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn controls_newlines_and_ansi_are_escaped() {
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("\x1b[2Jcleared"), "\\x1b[2Jcleared");
        assert_eq!(escape("nul\0bell\x07del\x7f"), "nul\\x00bell\\x07del\\x7f");
        assert_eq!(escape("c1 \u{9b}31m"), "c1 \\u{9b}31m");
        assert_eq!(escape("line\u{2028}sep"), "line\\u{2028}sep");
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped() {
        assert_eq!(escape("evil\u{202e}moc.buhtig"), "evil\\u{202e}moc.buhtig");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(escape("api.git\u{200b}hub.com"), "api.git\\u{200b}hub.com");
        assert_eq!(escape("\u{feff}bom"), "\\u{feff}bom");
    }

    #[test]
    fn the_result_has_no_unsafe_characters_left() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).chain(['\u{feff}', '\u{fff9}']).collect();
        let escaped = escape(&all);
        assert!(!escaped.chars().any(is_unsafe));
        assert!(!escaped.contains('\n') && !escaped.contains('\x1b'));
        assert_eq!(format!("{}", Escaped("a\nb")), "a\\nb");
    }

    #[test]
    fn json_escaping_keeps_the_meaning() {
        let value = serde_json::json!({ "k\u{202e}": "a\u{7f}b\u{9b}c\u{202e}d\u{2028}e\nf" });
        let text = serde_json::to_string(&value).unwrap();
        let escaped = escape_json(&text);
        assert!(!escaped.chars().any(is_unsafe), "{escaped}");
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let escaped_pretty = escape_json(&pretty);
        assert_eq!(escaped_pretty.lines().count(), pretty.lines().count());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&escaped_pretty).unwrap(), value);
        assert!(escaped.contains("\\u202e") && escaped.contains("\\u009b"), "{escaped}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&escaped).unwrap(), value);
    }
}
