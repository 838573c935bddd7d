//! Finds foreign secrets — well-known token formats that are not ours — by rule.
//!
//! A skill may come across somebody else's credential in an API response, a log line or its
//! own output: a GitHub token, an AWS key, a private key block. The host cannot know those
//! values in advance the way it knows the vault's secrets, so it recognises them by shape.
//! Each [`Rule`] pairs a cheap literal prefilter (its `keywords`) with a tight regex and a
//! minimum Shannon entropy, so placeholders such as `ghp_xxxx…` and documentation examples
//! such as `AKIAIOSFODNN7EXAMPLE` are not reported.
//!
//! A [`RuleSet`] holds the built-in rules ([`RuleSet::builtin`]) plus any an operator adds from a
//! TOML rules file ([`RuleSet::parse_rules_file`], [`RuleSet::with_rules`]). Searching is linear
//! time: one Aho-Corasick pass over all keywords decides which rules can match at all, and only
//! those rules' regexes (the `regex` crate, which never backtracks exponentially) then run.
//!
//! A [`Finding`] holds a rule id and a byte range, never the matched bytes, so no finding can
//! leak the secret it reports through `Debug` or an error message.
//!
//! [`Rule`]: crate::rules::Rule
//! [`RuleSet`]: crate::rules::RuleSet
//! [`RuleSet::builtin`]: crate::rules::RuleSet::builtin
//! [`RuleSet::parse_rules_file`]: crate::rules::RuleSet::parse_rules_file
//! [`RuleSet::with_rules`]: crate::rules::RuleSet::with_rules
//! [`Finding`]: crate::rules::Finding

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexBuilder};

use crate::ScanError;

/// One token rule.
///
/// An operator writes these as `[[rule]]` tables in a rules file; see
/// [`RuleSet::parse_rules_file`].
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name, reported in findings and in `[REDACTED:<id>]`.
    ///
    /// Invariant (checked by [`RuleSet::with_rules`]): 1 to 40 characters of `a-z`, `0-9`, `-`.
    pub id: String,
    /// What the rule finds, for people reading the rule list.
    pub description: String,
    /// Literal strings, matched ASCII case-insensitively; the rule's regex runs only on a
    /// haystack where at least one of them occurs. Every match of the regex must contain one
    /// of them, or the rule will miss it. Must not be empty.
    pub keywords: Vec<String>,
    /// The token's shape in `regex::bytes` syntax (Unicode mode on unless the pattern turns it
    /// off with `(?-u)`). Capture group 1, when present and matched, is the secret part that is
    /// reported and redacted; otherwise the whole match is. A group named `body`, when present,
    /// is the part whose entropy is measured; otherwise it is the secret part with any keyword
    /// it starts with stripped.
    pub regex: String,
    /// The minimum Shannon entropy, in bits per byte, of the measured part (see `regex`).
    /// `0` (the default) accepts every match.
    #[serde(default)]
    pub min_entropy: f64,
}

/// A secret found in a haystack.
///
/// Holds the rule's id and the byte range of the secret part, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// The id of the rule that found it.
    pub rule: Arc<str>,
    /// Offset of the secret part's first byte in the haystack.
    pub start: usize,
    /// Offset one past the secret part's last byte in the haystack.
    pub end: usize,
}

impl Finding {
    /// The secret part's byte range in the haystack.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// A compiled set of token rules: cheap to clone and safe to share across threads.
#[derive(Clone)]
pub struct RuleSet {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Vec<Compiled>,
    /// One automaton over every distinct keyword of every rule (ASCII case-insensitive);
    /// `None` when there are no rules.
    prefilter: Option<AhoCorasick>,
    /// For each prefilter pattern id, the indices in `rules` of the rules that list it.
    rules_by_keyword: Vec<Vec<usize>>,
}

#[derive(Clone)]
struct Compiled {
    id: Arc<str>,
    /// The keywords, lowercased, for the prefilter and for stripping a prefix before the
    /// entropy is measured.
    keywords: Vec<Box<[u8]>>,
    regex: Regex,
    /// Whether the regex has a capture group 1 (the secret part).
    has_secret_group: bool,
    /// The index of the group named `body`, if any (the part whose entropy is measured).
    body_group: Option<usize>,
    min_entropy: f64,
    checks: Checks,
}

/// Extra checks only the built-in rules apply.
#[derive(Clone, Copy)]
struct Checks {
    /// Reject documentation examples and placeholders (see [`looks_like_placeholder`]).
    placeholders: bool,
    /// A format-specific check on the secret part.
    validate: Option<fn(&[u8]) -> bool>,
}

impl Checks {
    const NONE: Checks = Checks { placeholders: false, validate: None };
    const PLACEHOLDERS: Checks = Checks { placeholders: true, validate: None };
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet").field("rules", &self.inner.rules.len()).finish_non_exhaustive()
    }
}

/// Compiled size limit for one rule's regex; every built-in rule fits well within it.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache limit for one rule's regex (per searching thread).
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
/// Maximum nesting depth of an operator's regex.
const REGEX_NEST_LIMIT: u32 = 64;

/// A built-in rule: a [`Rule`] plus the checks only built-in rules apply.
struct Builtin {
    id: &'static str,
    description: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    min_entropy: f64,
    checks: Checks,
}

// The built-in regexes are compiled with Unicode off: `\b` and `\s` are ASCII, and the tokens
// are ASCII. Tokens whose alphabet includes `-` cannot end on `\b` (a `-` before a space is
// not a word boundary), so they end on a consumed non-token byte or the end of the haystack,
// outside group 1. Entropy thresholds sit below the 1-in-10^5 tail of the entropy of random
// tokens of each rule's minimum length and alphabet.
const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "github-pat",
        description: "GitHub personal access token (classic), ghp_",
        keywords: &["ghp_"],
        regex: r"\b(ghp_[0-9A-Za-z]{36})\b",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "github-fine-grained-pat",
        description: "GitHub fine-grained personal access token, github_pat_",
        keywords: &["github_pat_"],
        regex: r"\b(github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59})\b",
        min_entropy: 4.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "github-oauth-token",
        description: "GitHub OAuth access token, gho_",
        keywords: &["gho_"],
        regex: r"\b(gho_[0-9A-Za-z]{36})\b",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "github-app-token",
        description: "GitHub App user-to-server (ghu_) or installation (ghs_) token",
        keywords: &["ghu_", "ghs_"],
        regex: r"\b((?:ghu|ghs)_[0-9A-Za-z]{36})\b",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "github-refresh-token",
        description: "GitHub refresh token, ghr_",
        keywords: &["ghr_"],
        regex: r"\b(ghr_[0-9A-Za-z]{36})\b",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "gitlab-pat",
        description: "GitLab personal, project or group access token, glpat-",
        keywords: &["glpat-"],
        regex: r"\b(glpat-[0-9A-Za-z_-]{20,}(?:\.[0-9a-z]{2}\.[0-9a-z]{7,10})?)(?:[^0-9A-Za-z_.-]|$)",
        min_entropy: 3.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "gitlab-deploy-token",
        description: "GitLab deploy token, gldt-",
        keywords: &["gldt-"],
        regex: r"\b(gldt-[0-9A-Za-z_-]{20,})(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 3.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "gitlab-runner-token",
        description: "GitLab runner authentication token, glrt-",
        keywords: &["glrt-"],
        regex: r"\b(glrt-[0-9A-Za-z_-]{20,})(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 3.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "aws-access-key-id",
        description: "AWS access key id (AKIA, ASIA, ABIA, ACCA)",
        keywords: &["akia", "asia", "abia", "acca"],
        regex: r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
        min_entropy: 2.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "aws-secret-access-key",
        description: "AWS secret access key: 40 base64 characters assigned to a key named like one",
        keywords: &[
            "secret_access",
            "secretaccess",
            "secret-access",
            "secret.access",
            "aws_secret",
            "aws-secret",
            "awssecret",
            "aws.secret",
        ],
        regex: concat!(
            r#"(?i:(?:aws[_.-]?)?secret[_.-]?access[_.-]?key|aws[_.-]?secret(?:[_.-]?key)?)"#,
            r#"["']?\s{0,4}(?:=>|:=|[:=])\s{0,4}["']?"#,
            r"([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
        ),
        min_entropy: 3.7,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "google-api-key",
        description: "Google API key, AIza",
        keywords: &["aiza"],
        regex: r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "slack-token",
        description: "Slack bot, user, app, refresh or workspace token (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-)",
        keywords: &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"],
        regex: r"\b(xox[baprs]-(?:[0-9]{1,14}-){1,3}(?P<body>[0-9A-Za-z]{24,64}))(?:[^0-9A-Za-z-]|$)",
        min_entropy: 2.8,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "slack-webhook-url",
        description: "Slack incoming webhook URL, hooks.slack.com/services/T…/B…/…",
        keywords: &["hooks.slack.com/services/"],
        regex: concat!(
            r"((?:https?://)?hooks\.slack\.com/services/T[0-9A-Z]{8,12}/B[0-9A-Z]{8,12}/",
            r"(?P<body>[0-9A-Za-z]{24}))(?:[^0-9A-Za-z]|$)",
        ),
        min_entropy: 3.2,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "stripe-secret-key",
        description: "Stripe live secret (sk_live_) or restricted (rk_live_) key",
        keywords: &["sk_live_", "rk_live_"],
        regex: r"\b((?:sk|rk)_live_[0-9A-Za-z]{24,})\b",
        min_entropy: 3.2,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "stripe-webhook-secret",
        description: "Stripe (or Svix-style) webhook signing secret, whsec_",
        keywords: &["whsec_"],
        regex: r"\b(whsec_[0-9A-Za-z+/]{32,}={0,2})(?:[^0-9A-Za-z+/=]|$)",
        min_entropy: 3.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "openai-api-key",
        description: "OpenAI API key: project (sk-proj-), service account, admin, or legacy with T3BlbkFJ",
        keywords: &["sk-proj-", "sk-svcacct-", "sk-admin-", "t3blbkfj"],
        regex: concat!(
            r"\b(sk-(?:proj|svcacct|admin)-[0-9A-Za-z_-]{40,}|sk-[0-9A-Za-z]{20}T3BlbkFJ[0-9A-Za-z]{20})",
            r"(?:[^0-9A-Za-z_-]|$)",
        ),
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "anthropic-api-key",
        description: "Anthropic API key, sk-ant-api03-",
        keywords: &["sk-ant-api03-"],
        regex: r"\b(sk-ant-api03-[0-9A-Za-z_-]{93}AA)(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 4.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "anthropic-admin-key",
        description: "Anthropic admin API key, sk-ant-admin01-",
        keywords: &["sk-ant-admin01-"],
        regex: r"\b(sk-ant-admin01-[0-9A-Za-z_-]{93}AA)(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 4.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "twilio-api-key",
        description: "Twilio API key SID, SK + 32 lowercase hex",
        keywords: &["sk"],
        regex: r"\b(SK[0-9a-f]{32})\b",
        min_entropy: 2.7,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "sendgrid-api-key",
        description: "SendGrid API key, SG.<22>.<43>",
        keywords: &["sg."],
        regex: r"\b(SG\.[0-9A-Za-z_-]{22}\.[0-9A-Za-z_-]{43})(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 4.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "npm-token",
        description: "npm access token, npm_",
        keywords: &["npm_"],
        regex: r"\b(npm_[0-9A-Za-z]{36})\b",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "pypi-token",
        description: "PyPI upload token, pypi-AgEIcHlwaS5vcmc…",
        keywords: &["pypi-ageichlwas5vcmc"],
        regex: r"\b(pypi-AgEIcHlwaS5vcmc[0-9A-Za-z_-]{50,})(?:[^0-9A-Za-z_-]|$)",
        min_entropy: 4.0,
        checks: Checks::PLACEHOLDERS,
    },
    Builtin {
        id: "private-key",
        description: "PEM private key block (PKCS#1/#8, EC, DSA, OpenSSH, encrypted, PGP), header to footer",
        keywords: &["private key"],
        // The body admits base64, whitespace, `\` (a JSON-escaped `\n`) and the `Proc-Type:`/
        // `DEK-Info:` header characters; placeholder bodies like `...` or `<your key here>`
        // do not fit. No run check: DER has long runs of zero bytes (`AAAAAAAA`).
        regex: concat!(
            r"(-----BEGIN[ A-Z0-9]{0,24}PRIVATE KEY(?: BLOCK)?-----",
            r"(?P<body>[0-9A-Za-z+/=\s\\:,-]{64,}?)",
            r"-----END[ A-Z0-9]{0,24}PRIVATE KEY(?: BLOCK)?-----)",
        ),
        min_entropy: 4.0,
        checks: Checks::NONE,
    },
    Builtin {
        id: "jwt",
        description: "JSON Web Token: base64url header.payload.signature, both JSON objects",
        keywords: &["eyj"],
        regex: concat!(
            r"\b(eyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.(?P<body>[0-9A-Za-z_-]{16,}))",
            r"(?:[^0-9A-Za-z_-]|$)",
        ),
        min_entropy: 3.0,
        checks: Checks { placeholders: true, validate: Some(jwt_parts_are_json) },
    },
    Builtin {
        id: "skillbox-api-key",
        description: "skillbox API key, sbx_",
        keywords: &["sbx_"],
        regex: r"\b(sbx_[0-9A-Za-z]{32,})\b",
        min_entropy: 3.5,
        checks: Checks::PLACEHOLDERS,
    },
];

/// Published documentation examples that match a built-in rule's shape; never reported.
const DOC_EXAMPLES: &[&[u8]] = &[
    // AWS's documented example access key id and secret access key.
    b"AKIAIOSFODNN7EXAMPLE",
    b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    // The signatures of jwt.io's example token and of PyJWT's README example.
    b"SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    b"4twFt5NiznN84AWoo1d7KO1T_yoc0Z6XOpOVswacPZg",
];

impl RuleSet {
    /// The built-in rules.
    ///
    /// They are compiled once per process; later calls return a cheap clone.
    pub fn builtin() -> RuleSet {
        static BUILTIN: OnceLock<RuleSet> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                let mut rules = Vec::with_capacity(BUILTINS.len());
                for b in BUILTINS {
                    let rule = Rule {
                        id: b.id.to_owned(),
                        description: b.description.to_owned(),
                        keywords: b.keywords.iter().map(|&k| k.to_owned()).collect(),
                        regex: b.regex.to_owned(),
                        min_entropy: b.min_entropy,
                    };
                    // The built-in table is fixed and a unit test compiles all of it.
                    let compiled = compile(&rule, false, b.checks).expect("built-in rules compile");
                    rules.push(compiled);
                }
                RuleSet::from_compiled(rules).expect("built-in keywords build an automaton")
            })
            .clone()
    }

    /// A rule set with no rules: finds nothing.
    pub fn empty() -> RuleSet {
        RuleSet { inner: Arc::new(Inner { rules: Vec::new(), prefilter: None, rules_by_keyword: Vec::new() }) }
    }

    /// Parses an operator's rules file: TOML holding only `[[rule]]` tables.
    ///
    /// ```toml
    /// [[rule]]
    /// id = "acme-key"
    /// description = "Acme Corp API key"
    /// keywords = ["acme_"]
    /// regex = '''\b(acme_[0-9a-f]{32})\b'''
    /// min_entropy = 3.0
    /// ```
    ///
    /// A file that is not TOML, or has a top-level key other than `rule`, gives
    /// [`ScanError::RulesFile`]; a `[[rule]]` table with a missing, mistyped or unknown field
    /// gives [`ScanError::Rule`]. The rules themselves are checked by [`RuleSet::with_rules`].
    pub fn parse_rules_file(text: &str) -> Result<Vec<Rule>, ScanError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ScanError::RulesFile { reason: e.to_string() })?;
        let mut rules = Vec::new();
        for (key, value) in table {
            if key != "rule" {
                return Err(ScanError::RulesFile {
                    reason: format!(
                        "unknown top-level key `{key}`: a rules file holds only [[rule]] tables; \
                         rename it to [[rule]] or remove it"
                    ),
                });
            }
            let toml::Value::Array(items) = value else {
                return Err(ScanError::RulesFile {
                    reason: "`rule` must be an array of tables: write each rule under its own [[rule]] header"
                        .to_owned(),
                });
            };
            for (i, item) in items.into_iter().enumerate() {
                let n = i + 1;
                let id = item.get("id").and_then(toml::Value::as_str).map_or_else(|| format!("#{n}"), str::to_owned);
                let rule: Rule = item.try_into().map_err(|e: toml::de::Error| ScanError::Rule {
                    id,
                    reason: format!(
                        "[[rule]] number {n}: {}; a rule has the fields id, description, keywords, regex \
                         and (optionally) min_entropy",
                        e.message().trim_end()
                    ),
                })?;
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    /// This rule set plus `extra` (an operator's rules), as a new rule set.
    ///
    /// Each extra rule is checked: its id must be 1 to 40 characters of `a-z`, `0-9` and `-`
    /// and not already used; it must have at least one non-empty keyword; its regex must
    /// compile within the size limit and must not match the empty string; `min_entropy` must
    /// be between 0 and 8. The first rule that fails gives [`ScanError::Rule`] naming it and
    /// saying how to fix it.
    pub fn with_rules(&self, extra: Vec<Rule>) -> Result<RuleSet, ScanError> {
        let mut rules = self.inner.rules.clone();
        for rule in extra {
            if let Some(existing) = rules.iter().position(|r| *r.id == *rule.id) {
                let whose =
                    if existing < self.inner.rules.len() { "a rule already in the set" } else { "an earlier rule" };
                return Err(ScanError::Rule {
                    id: rule.id,
                    reason: format!("the id is already used by {whose}; give this rule a different id"),
                });
            }
            rules.push(compile(&rule, true, Checks::NONE)?);
        }
        RuleSet::from_compiled(rules)
    }

    /// The ids of the rules in this set, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.inner.rules.iter().map(|r| &*r.id)
    }

    /// Every secret in `haystack`, sorted by start and not overlapping.
    ///
    /// Where two findings would overlap, the one starting first wins, then the longer one,
    /// then the rule listed first.
    pub fn find(&self, haystack: &[u8]) -> Vec<Finding> {
        let inner = &*self.inner;
        let Some(prefilter) = &inner.prefilter else { return Vec::new() };

        // Which rules have a keyword in the haystack. Overlapping matches, because one keyword
        // may hide inside another (`sk` in `sk-ant-api03-`).
        let mut active = vec![false; inner.rules.len()];
        let mut inactive = inner.rules.len();
        for m in prefilter.find_overlapping_iter(haystack) {
            for &r in &inner.rules_by_keyword[m.pattern().as_usize()] {
                if !active[r] {
                    active[r] = true;
                    inactive -= 1;
                }
            }
            if inactive == 0 {
                break;
            }
        }

        // (start, end, rule index)
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
        for (index, rule) in inner.rules.iter().enumerate() {
            if !active[index] {
                continue;
            }
            if rule.has_secret_group {
                for caps in rule.regex.captures_iter(haystack) {
                    // Group 0 always participates in a match.
                    let whole = caps.get(0).expect("group 0 is the match").range();
                    let secret = caps.get(1).filter(|_| rule.has_secret_group).map_or(whole, |m| m.range());
                    let body = rule.body_group.and_then(|g| caps.get(g)).map(|m| m.range());
                    if rule.accepts(haystack, secret.clone(), body) {
                        candidates.push((secret.start, secret.end, index));
                    }
                }
            } else {
                for m in rule.regex.find_iter(haystack) {
                    if rule.accepts(haystack, m.range(), None) {
                        candidates.push((m.start(), m.end(), index));
                    }
                }
            }
        }

        candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut findings: Vec<Finding> = Vec::with_capacity(candidates.len());
        let mut covered_to = 0;
        for (start, end, index) in candidates {
            if start < covered_to {
                continue;
            }
            covered_to = end;
            findings.push(Finding { rule: Arc::clone(&inner.rules[index].id), start, end });
        }
        findings
    }

    /// `haystack` with each finding's secret part replaced by `[REDACTED:<rule id>]`, and the
    /// findings (whose ranges refer to the original `haystack`).
    ///
    /// Every byte outside the findings is kept as it was. When nothing is found the haystack
    /// is returned borrowed.
    pub fn redact<'a>(&self, haystack: &'a [u8]) -> (Cow<'a, [u8]>, Vec<Finding>) {
        let findings = self.find(haystack);
        if findings.is_empty() {
            return (Cow::Borrowed(haystack), findings);
        }
        let mut out = Vec::with_capacity(haystack.len());
        let mut at = 0;
        for f in &findings {
            out.extend_from_slice(&haystack[at..f.start]);
            out.extend_from_slice(b"[REDACTED:");
            out.extend_from_slice(f.rule.as_bytes());
            out.push(b']');
            at = f.end;
        }
        out.extend_from_slice(&haystack[at..]);
        (Cow::Owned(out), findings)
    }

    fn from_compiled(rules: Vec<Compiled>) -> Result<RuleSet, ScanError> {
        let mut patterns: Vec<&[u8]> = Vec::new();
        let mut rules_by_keyword: Vec<Vec<usize>> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            for keyword in &rule.keywords {
                match patterns.iter().position(|p| *p == &**keyword) {
                    Some(p) => {
                        if !rules_by_keyword[p].contains(&index) {
                            rules_by_keyword[p].push(index);
                        }
                    }
                    None => {
                        patterns.push(keyword);
                        rules_by_keyword.push(vec![index]);
                    }
                }
            }
        }
        let prefilter = if patterns.is_empty() {
            None
        } else {
            let ac =
                AhoCorasick::builder().ascii_case_insensitive(true).build(&patterns).map_err(|e| ScanError::Rule {
                    id: "(all rules)".to_owned(),
                    reason: format!("the keywords do not fit in one automaton ({e}); use fewer or shorter keywords"),
                })?;
            Some(ac)
        };
        Ok(RuleSet { inner: Arc::new(Inner { rules, prefilter, rules_by_keyword }) })
    }
}

impl Compiled {
    /// Whether a regex match is a finding: entropy, then (built-in rules) placeholders,
    /// documentation examples and the format check.
    fn accepts(&self, haystack: &[u8], secret: std::ops::Range<usize>, body: Option<std::ops::Range<usize>>) -> bool {
        if secret.is_empty() {
            return false;
        }
        let secret = &haystack[secret];
        let measured = match body {
            Some(body) => &haystack[body],
            None => self.strip_keyword(secret),
        };
        if self.min_entropy > 0.0 && shannon_entropy(measured) < self.min_entropy {
            return false;
        }
        if self.checks.placeholders
            && (looks_like_placeholder(measured) || DOC_EXAMPLES.iter().any(|ex| contains(secret, ex)))
        {
            return false;
        }
        self.checks.validate.is_none_or(|validate| validate(secret))
    }

    /// `secret` without the longest keyword it starts with (ASCII case-insensitively).
    fn strip_keyword<'a>(&self, secret: &'a [u8]) -> &'a [u8] {
        let longest = self
            .keywords
            .iter()
            .filter(|k| secret.len() >= k.len() && secret[..k.len()].eq_ignore_ascii_case(k))
            .map(|k| k.len())
            .max()
            .unwrap_or(0);
        &secret[longest..]
    }
}

/// Checks one rule and compiles it. `operator` rules get the regex crate's default syntax
/// (Unicode on); built-in ones are written for ASCII.
fn compile(rule: &Rule, operator: bool, checks: Checks) -> Result<Compiled, ScanError> {
    let fail = |reason: String| ScanError::Rule { id: rule.id.clone(), reason };
    let id_ok = (1..=40).contains(&rule.id.len())
        && rule.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(ScanError::Rule {
            id: if rule.id.is_empty() { "(unnamed)".to_owned() } else { rule.id.clone() },
            reason: "an id is 1 to 40 characters of a-z, 0-9 and `-`; rename the rule".to_owned(),
        });
    }
    if rule.keywords.is_empty() {
        return Err(fail(
            "it has no keywords; add at least one literal that every match contains (such as the \
             token's fixed prefix) to `keywords`: the regex runs only where a keyword occurs"
                .to_owned(),
        ));
    }
    if let Some(n) = rule.keywords.iter().position(String::is_empty) {
        return Err(fail(format!("keyword number {} is empty; remove it or give it some text", n + 1)));
    }
    if !(rule.min_entropy.is_finite() && (0.0..=8.0).contains(&rule.min_entropy)) {
        return Err(fail(format!(
            "min_entropy is {}; it must be between 0 and 8 bits per byte (random base62 scores about 4.5)",
            rule.min_entropy
        )));
    }
    let regex = RegexBuilder::new(&rule.regex)
        .unicode(operator)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => fail(format!(
                "the regex compiles to more than {limit} bytes; narrow large counted repetitions \
                 such as {{1000}} or Unicode classes (turn Unicode off with (?-u))"
            )),
            e => fail(format!("the regex does not compile; fix its syntax:\n{e}")),
        })?;
    if regex.is_match(b"") {
        return Err(fail("the regex matches the empty string; require at least the token's fixed prefix".to_owned()));
    }
    let keywords = rule.keywords.iter().map(|k| k.to_ascii_lowercase().into_bytes().into_boxed_slice()).collect();
    Ok(Compiled {
        id: Arc::from(rule.id.as_str()),
        keywords,
        has_secret_group: regex.captures_len() > 1,
        body_group: regex.capture_names().position(|name| name == Some("body")),
        regex,
        min_entropy: rule.min_entropy,
        checks,
    })
}

/// Shannon entropy of `bytes`, in bits per byte (0 for the empty slice).
fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Run length at which a repeated or counting sequence marks a placeholder. Random tokens
/// have such a run far less than once in a million even in hex.
const PLACEHOLDER_RUN: usize = 7;

/// Whether a token body is a placeholder rather than a secret: it says `EXAMPLE` (any case),
/// or has a run of [`PLACEHOLDER_RUN`] equal bytes (`xxxxxxx`, `0000000`) or of bytes counting
/// up or down by one (`1234567`, `abcdefg`).
fn looks_like_placeholder(body: &[u8]) -> bool {
    if body.windows(7).any(|w| w.eq_ignore_ascii_case(b"example")) {
        return true;
    }
    let (mut same, mut up, mut down) = (1, 1, 1);
    for pair in body.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        same = if a == b { same + 1 } else { 1 };
        up = if b == a.wrapping_add(1) { up + 1 } else { 1 };
        down = if b == a.wrapping_sub(1) { down + 1 } else { 1 };
        if same >= PLACEHOLDER_RUN || up >= PLACEHOLDER_RUN || down >= PLACEHOLDER_RUN {
            return true;
        }
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The JWT format check: the header and payload decode (base64url) to JSON objects, and the
/// header names an algorithm.
fn jwt_parts_are_json(token: &[u8]) -> bool {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else { return false };
    let (Ok(header), Ok(payload)) = (URL_SAFE_LENIENT.decode(header), URL_SAFE_LENIENT.decode(payload)) else {
        return false;
    };
    let is_object = |json: &[u8]| json.trim_ascii_start().starts_with(b"{\"");
    is_object(&header) && is_object(&payload) && contains(&header, b"\"alg\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_compiles_within_limits_and_has_a_secret_group() {
        let set = RuleSet::builtin();
        assert_eq!(set.inner.rules.len(), BUILTINS.len());
        for (rule, b) in set.inner.rules.iter().zip(BUILTINS) {
            assert!(rule.has_secret_group, "{}: group 1 is the secret part", b.id);
            assert!(b.min_entropy > 0.0, "{}: every built-in rule has an entropy threshold", b.id);
            assert!(!b.keywords.is_empty(), "{}", b.id);
            for k in b.keywords {
                assert_eq!(*k, k.to_ascii_lowercase(), "{}: keywords are written lowercase", b.id);
            }
        }
        let ids: Vec<_> = set.ids().collect();
        let mut dedup = ids.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(ids.len(), dedup.len(), "built-in ids are unique");
    }

    #[test]
    fn builtin_is_built_once() {
        let a = RuleSet::builtin();
        let b = RuleSet::builtin();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
    }

    #[test]
    fn entropy_of_known_strings() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abab") - 1.0).abs() < 1e-12);
        assert!((shannon_entropy(b"0123456789abcdef") - 4.0).abs() < 1e-12);
    }

    #[test]
    fn placeholders() {
        assert!(looks_like_placeholder(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        assert!(looks_like_placeholder(b"Ab9x1234567890Qr"));
        assert!(looks_like_placeholder(b"Ab9xabcdefgQr"));
        assert!(looks_like_placeholder(b"Ab9xgfedcbaQr"));
        assert!(looks_like_placeholder(b"IOSFODNN7EXAMPLE"));
        assert!(!looks_like_placeholder(b"Zk3uQ9aV1mT7pLr0WcY2dH8nE5sG4jBx6oKf"));
        assert!(!looks_like_placeholder(b"123456"));
    }

    #[test]
    fn keyword_prefix_is_stripped_case_insensitively() {
        let set = RuleSet::builtin();
        let rule = set.inner.rules.iter().find(|r| &*r.id == "stripe-secret-key").unwrap();
        assert_eq!(rule.strip_keyword(b"sk_live_abc"), b"abc");
        assert_eq!(rule.strip_keyword(b"RK_LIVE_abc"), b"abc");
        assert_eq!(rule.strip_keyword(b"pk_live_abc"), b"pk_live_abc");
    }

    #[test]
    fn jwt_check_wants_json_parts_and_an_alg() {
        // {"alg":"HS256","typ":"JWT"} . {"sub":"1"} . signature
        assert!(jwt_parts_are_json(b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl"));
        // {"typ":"JWT"} has no alg.
        assert!(!jwt_parts_are_json(b"eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl"));
        // Not base64 at all.
        assert!(!jwt_parts_are_json(b"eyJ!!!.eyJ.x"));
    }

    #[test]
    fn debug_output_is_small_and_has_no_rule_text() {
        let set = RuleSet::builtin();
        let debug = format!("{set:?}");
        assert!(debug.len() < 64, "{debug}");
        assert!(!debug.contains("ghp_"));
    }

    #[test]
    fn rule_set_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<RuleSet>();
        check::<Finding>();
    }

    #[test]
    fn operator_rules_get_unicode_builtins_do_not() {
        let rule = Rule {
            id: "word".to_owned(),
            description: String::new(),
            keywords: vec!["tok".to_owned()],
            regex: r"tok_\w+".to_owned(),
            min_entropy: 0.0,
        };
        let set = RuleSet::empty().with_rules(vec![rule]).unwrap();
        let found = set.find("tok_ü1".as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].range(), 0..7);
    }
}
