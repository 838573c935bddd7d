//! The foreign-token rules: the fixture corpus, redaction, operator rules and their errors.

use std::collections::BTreeMap;

use skillbox_scan::ScanError;
use skillbox_scan::rules::{Finding, Rule, RuleSet};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    case: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The built-in rule the case is about; `None` for text no rule may match.
    rule: Option<String>,
    expect: bool,
    note: String,
    /// The secret part, for true positives.
    token: Option<String>,
    text: String,
}

fn fixtures() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokens.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    toml::from_str::<Fixtures>(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}")).case
}

/// Findings as `rule@start..end`, for failure messages (the fixtures' tokens are fake).
fn show(findings: &[Finding]) -> String {
    let parts: Vec<String> = findings.iter().map(|f| format!("{}@{}..{}", f.rule, f.start, f.end)).collect();
    format!("[{}]", parts.join(", "))
}

/// What is wrong with one case, or `None` when the rule set behaves as the case expects.
fn check(set: &RuleSet, case: &Case) -> Option<String> {
    let found = set.find(case.text.as_bytes());
    match (&case.rule, case.expect, &case.token) {
        (Some(rule), true, Some(token)) => {
            let Some(start) = case.text.find(token.as_str()) else {
                return Some("the token does not occur in the text".to_owned());
            };
            let want = (rule.as_str(), start, start + token.len());
            let got: Vec<_> = found.iter().map(|f| (&*f.rule, f.start, f.end)).collect();
            (got != [want]).then(|| format!("want [{}@{}..{}], found {}", want.0, want.1, want.2, show(&found)))
        }
        (_, false, None) => (!found.is_empty()).then(|| format!("want nothing, found {}", show(&found))),
        _ => Some("malformed case: a true positive needs `rule` and `token`, a false one neither `token`".to_owned()),
    }
}

#[test]
fn fixtures_behave_and_cover_every_builtin_rule() {
    let set = RuleSet::builtin();
    let cases = fixtures();
    let mut failures = Vec::new();
    // rule id -> (true positives, false positives)
    let mut counts: BTreeMap<&str, (usize, usize)> = set.ids().map(|id| (id, (0, 0))).collect();
    for (n, case) in cases.iter().enumerate() {
        if let Some(rule) = &case.rule {
            match counts.get_mut(rule.as_str()) {
                Some((tp, fp)) => *(if case.expect { tp } else { fp }) += 1,
                None => failures.push(format!("case {}: unknown rule `{rule}`", n + 1)),
            }
        }
        if let Some(problem) = check(&set, case) {
            let rule = case.rule.as_deref().unwrap_or("(any)");
            failures.push(format!("case {} [{rule}, expect {}] {}: {problem}", n + 1, case.expect, case.note));
        }
    }
    for (id, (tp, fp)) in &counts {
        if *tp < 2 || *fp < 2 {
            failures.push(format!("rule {id} has {tp} true and {fp} false positive fixtures; it needs 2 of each"));
        }
    }
    let general = cases.iter().filter(|c| c.rule.is_none()).count();
    if general < 5 {
        failures.push(format!("only {general} general false positives; want at least 5"));
    }
    assert!(failures.is_empty(), "{} fixture problems:\n{}", failures.len(), failures.join("\n"));
}

/// A fake GitHub token: fixed, high-entropy, never issued.
const GHP: &str = "ghp_R8fKq2LmZ7xW4nTb9YcVd3Hs6JpGa1UeQo0i";
/// A fake npm token.
const NPM: &str = "npm_Xq7Lm2Rk9Tz4Wb8Nc3Vd6Hf1Js5Gp0Ya2EuQ";

#[test]
fn redact_replaces_only_the_secret_parts() {
    let set = RuleSet::builtin();
    let text = format!("a={GHP}\n{{\"npm\": \"{NPM}\"}}\ntrailing \u{e9}\u{1f600} bytes");
    let (redacted, findings) = set.redact(text.as_bytes());
    assert_eq!(findings.len(), 2, "{}", show(&findings));
    let want = "a=[REDACTED:github-pat]\n{\"npm\": \"[REDACTED:npm-token]\"}\ntrailing \u{e9}\u{1f600} bytes";
    assert_eq!(std::str::from_utf8(&redacted).unwrap(), want);
    // The findings' ranges refer to the original text.
    assert_eq!(&text[findings[0].range()], GHP);
    assert_eq!(&text[findings[1].range()], NPM);
}

#[test]
fn redact_borrows_when_nothing_is_found() {
    let set = RuleSet::builtin();
    let text = b"nothing secret here, just ghp_ and sk_live_ as words";
    let (out, findings) = set.redact(text);
    assert!(findings.is_empty());
    assert!(matches!(out, std::borrow::Cow::Borrowed(_)));
    assert_eq!(&*out, text);
}

#[test]
fn findings_are_sorted_and_do_not_overlap() {
    let set = RuleSet::builtin();
    let text = format!("{NPM} then {GHP} then {NPM}");
    let found = set.find(text.as_bytes());
    let rules: Vec<&str> = found.iter().map(|f| &*f.rule).collect();
    assert_eq!(rules, ["npm-token", "github-pat", "npm-token"]);
    assert!(found.windows(2).all(|w| w[0].end <= w[1].start));
}

#[test]
fn tokens_are_found_amid_invalid_utf8() {
    let set = RuleSet::builtin();
    let mut hay = vec![0xff, 0xfe, b' ', 0xc3, 0x28];
    let start = hay.len();
    hay.extend_from_slice(GHP.as_bytes());
    hay.extend_from_slice(&[0x80, 0xbf, b'\n', 0xf5]);
    let found = set.find(&hay);
    assert_eq!(found.len(), 1, "{}", show(&found));
    assert_eq!((&*found[0].rule, found[0].range()), ("github-pat", start..start + GHP.len()));

    // Directly against invalid bytes, too.
    let mut hay = vec![0xc3];
    hay.extend_from_slice(NPM.as_bytes());
    hay.push(0xff);
    let found = set.find(&hay);
    assert_eq!(found.len(), 1, "{}", show(&found));
    assert_eq!(found[0].range(), 1..1 + NPM.len());
}

/// A deterministic xorshift generator: the text must be the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// About `len` bytes of prose, JSON-ish fields, hex digests, numbers and the keywords that
/// wake rules up (`ask`, `Asia`, `eyJ`, `SG.`), with no token in it.
fn random_text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "skill",
        "returned",
        "an",
        "error",
        "while",
        "asking",
        "for",
        "task",
        "status",
        "Asia",
        "desk",
        "risk",
        "token",
        "secret",
        "access",
        "key",
        "ghp",
        "glpat",
        "npm",
        "sbx",
        "whsec",
        "SG.",
        "eyJ",
        "pypi",
        "private",
        "AKIA",
        "request",
        "response",
        "header",
        "Authorization:",
        "Bearer",
        "{\"id\":",
        "\"name\":",
        "},",
        "[",
        "]",
        "\n",
        "\n\n",
        "2024-05-01T12:00:00Z",
        "INFO",
        "WARN",
        "https://api.example.com/v1/items?page=2&limit=50",
    ];
    let mut rng = XorShift(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        match rng.below(20) {
            0 => {
                // A hex digest, like a commit id or checksum.
                for _ in 0..40 {
                    out.push(b"0123456789abcdef"[rng.below(16)]);
                }
            }
            1 => out.extend_from_slice(rng.next().to_string().as_bytes()),
            _ => out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes()),
        }
        out.push(if rng.below(8) == 0 { b',' } else { b' ' });
    }
    out
}

#[test]
fn a_mebibyte_without_tokens_finds_nothing() {
    let text = random_text(1 << 20, 0x5eed_1234_abcd_ef01);
    let found = RuleSet::builtin().find(&text);
    assert!(found.is_empty(), "{}", show(&found));
}

const OPERATOR_RULES: &str = r#"
[[rule]]
id = "acme-key"
description = "Acme Corp API key"
keywords = ["acme_"]
regex = '''\b(acme_[0-9a-f]{32})\b'''
min_entropy = 3.0

[[rule]]
id = "internal-session"
description = "Our session cookie"
keywords = ["sid="]
regex = '''sid=(?P<body>[A-Za-z0-9]{20,})'''
"#;

#[test]
fn operator_rules_are_parsed_and_used() {
    let extra = RuleSet::parse_rules_file(OPERATOR_RULES).unwrap();
    assert_eq!(extra.len(), 2);
    assert_eq!(extra[0].min_entropy, 3.0);
    assert_eq!(extra[1].min_entropy, 0.0);
    let set = RuleSet::builtin().with_rules(extra).unwrap();
    let ids: Vec<&str> = set.ids().collect();
    assert!(ids.ends_with(&["acme-key", "internal-session"]), "{ids:?}");
    assert!(ids.contains(&"github-pat"));

    let acme = "acme_3f9a0c7e51b24d68a9e0f1c3b5d7e924";
    let text = format!("key={acme} and {GHP}, Cookie: sid=Q2w9Er8Ty7Ui6Op5As4D");
    let found = set.find(text.as_bytes());
    let got: Vec<(&str, &str)> = found.iter().map(|f| (&*f.rule, &text[f.range()])).collect();
    // The session rule has a `body` group but no other, so the body is group 1: the secret.
    assert_eq!(
        got,
        [("acme-key", acme), ("github-pat", GHP), ("internal-session", "Q2w9Er8Ty7Ui6Op5As4D")],
        "{}",
        show(&found)
    );

    // The entropy threshold applies to operator rules too, after stripping the keyword.
    assert!(set.find(b"key=acme_00000000000000000000000000000000").is_empty());
    // The builtin set itself is unchanged.
    assert!(RuleSet::builtin().find(text.as_bytes()).iter().all(|f| &*f.rule == "github-pat"));
    assert!(RuleSet::empty().find(text.as_bytes()).is_empty());
    assert_eq!(RuleSet::empty().ids().count(), 0);
}

fn rule(id: &str, keywords: &[&str], regex: &str) -> Rule {
    Rule {
        id: id.to_owned(),
        description: "test".to_owned(),
        keywords: keywords.iter().map(|&k| k.to_owned()).collect(),
        regex: regex.to_owned(),
        min_entropy: 0.0,
    }
}

/// The `ScanError::Rule` that adding `rules` to the built-in set gives: (id, reason).
fn rule_error(rules: Vec<Rule>) -> (String, String) {
    match RuleSet::builtin().with_rules(rules) {
        Err(ScanError::Rule { id, reason }) => (id, reason),
        Err(other) => panic!("want ScanError::Rule, got {other}"),
        Ok(_) => panic!("want ScanError::Rule, got a rule set"),
    }
}

#[test]
fn bad_operator_rules_are_refused_with_the_fix() {
    let (id, reason) = rule_error(vec![rule("bad-regex", &["x_"], r"x_([a-z]+")]);
    assert_eq!(id, "bad-regex");
    assert!(reason.contains("does not compile") && reason.contains("fix its syntax"), "{reason}");

    let (id, reason) = rule_error(vec![rule("github-pat", &["ghp_"], r"ghp_\w+")]);
    assert_eq!(id, "github-pat");
    assert!(reason.contains("already used") && reason.contains("different id"), "{reason}");

    let (id, reason) = rule_error(vec![rule("twice", &["a_"], r"a_\w+"), rule("twice", &["b_"], r"b_\w+")]);
    assert_eq!(id, "twice");
    assert!(reason.contains("earlier rule"), "{reason}");

    let (id, reason) = rule_error(vec![rule("no-keywords", &[], r"z_\w+")]);
    assert_eq!(id, "no-keywords");
    assert!(reason.contains("no keywords") && reason.contains("add at least one"), "{reason}");

    let (id, reason) = rule_error(vec![rule("empty-keyword", &["z_", ""], r"z_\w+")]);
    assert_eq!(id, "empty-keyword");
    assert!(reason.contains("keyword number 2 is empty"), "{reason}");

    let (id, reason) = rule_error(vec![rule("Bad_Id", &["z_"], r"z_\w+")]);
    assert_eq!(id, "Bad_Id");
    assert!(reason.contains("a-z, 0-9 and `-`"), "{reason}");

    let (id, reason) = rule_error(vec![rule("empty-match", &["z"], r"z*")]);
    assert_eq!(id, "empty-match");
    assert!(reason.contains("matches the empty string"), "{reason}");

    let (id, reason) = rule_error(vec![rule("huge", &["h"], r"h\w{1000}\w{1000}")]);
    assert_eq!(id, "huge");
    assert!(reason.contains("narrow large counted repetitions"), "{reason}");

    let mut entropic = rule("entropic", &["e_"], r"e_\w+");
    entropic.min_entropy = 9.0;
    let (id, reason) = rule_error(vec![entropic]);
    assert_eq!(id, "entropic");
    assert!(reason.contains("between 0 and 8"), "{reason}");
}

#[test]
fn bad_rules_files_are_refused_with_the_fix() {
    // An unknown field names the rule and the fields a rule may have.
    let text = "[[rule]]\nid = \"acme\"\ndescription = \"d\"\nkeywords = [\"a\"]\nregexp = \"a\"\n";
    match RuleSet::parse_rules_file(text) {
        Err(ScanError::Rule { id, reason }) => {
            assert_eq!(id, "acme");
            assert!(reason.contains("regexp") && reason.contains("number 1"), "{reason}");
            assert!(reason.contains("id, description, keywords, regex"), "{reason}");
        }
        other => panic!("want ScanError::Rule, got {other:?}"),
    }

    // A missing field, in a rule without an id: named by its position.
    let text =
        "[[rule]]\nid = \"ok\"\ndescription = \"d\"\nkeywords = [\"a\"]\nregex = \"a\"\n\n[[rule]]\nregex = \"b\"\n";
    match RuleSet::parse_rules_file(text) {
        Err(ScanError::Rule { id, reason }) => {
            assert_eq!(id, "#2");
            assert!(reason.contains("missing field"), "{reason}");
        }
        other => panic!("want ScanError::Rule, got {other:?}"),
    }

    // A misspelt table name.
    match RuleSet::parse_rules_file("[[rules]]\nid = \"x\"\n") {
        Err(ScanError::RulesFile { reason }) => assert!(reason.contains("`rules`") && reason.contains("[[rule]]")),
        other => panic!("want ScanError::RulesFile, got {other:?}"),
    }

    // Not TOML.
    match RuleSet::parse_rules_file("[[rule]\nid = ") {
        Err(ScanError::RulesFile { .. }) => {}
        other => panic!("want ScanError::RulesFile, got {other:?}"),
    }

    // An empty file is no rules.
    assert!(RuleSet::parse_rules_file("# nothing yet\n").unwrap().is_empty());
}

#[test]
fn debug_output_never_holds_the_token() {
    let set = RuleSet::builtin();
    let found = set.find(GHP.as_bytes());
    assert_eq!(found.len(), 1);
    let debug = format!("{set:?} {found:?}");
    assert!(!debug.contains(&GHP[4..]), "{debug}");
}
