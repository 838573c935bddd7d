//! Pinned policies: what a grant remembers of the manifest the operator approved.
//!
//! The runtime describes a skill's security-relevant policy for one credential (its
//! hosts, HTTP style, response scope, `[network] allow`, `[sql] write`, limits) as a
//! flat JSON object with sorted keys ([`crate::Access::policy`]). The vault treats it as
//! opaque text: it pins it on first use (or on `skillbox grant` from a skill directory),
//! compares it on every use, and explains a mismatch key by key.

use sha2::{Digest, Sha256};

/// The longest policy text a grant pins (a manifest's hosts and limits fit many times over).
pub(crate) const MAX_POLICY_BYTES: usize = 64 * 1024;

/// sha256 (hex) of a policy's canonical text.
pub(crate) fn digest(policy: &str) -> String {
    hex::encode(Sha256::digest(policy.as_bytes()))
}

/// The `hosts` a policy pins, if it names any.
pub(crate) fn hosts(policy: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(policy).ok()?;
    let hosts = value.get("hosts")?.as_array()?;
    Some(hosts.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect())
}

/// What changed from `pinned` to `now`, one `key: old -> new` clause per key that differs,
/// in key order (`(none)` for a key one side lacks). Texts that are not JSON objects are
/// compared whole.
pub(crate) fn diff(pinned: &str, now: &str) -> String {
    let parse = |t: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(t).ok();
    let (Some(old), Some(new)) = (parse(pinned), parse(now)) else {
        return format!("policy: {pinned} -> {now}");
    };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or_else(|| "(none)".to_owned(), |v| v.to_string());
    let changes: Vec<String> = keys
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} -> {}", show(old.get(k)), show(new.get(k))))
        .collect();
    if changes.is_empty() { "the policy text changed (same fields)".to_owned() } else { changes.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_changed_key() {
        let old = r#"{"hosts":["api.github.com"],"sql.write":false,"kind":"bearer"}"#;
        let new = r#"{"hosts":["api.github.com","gh.attacker.example"],"sql.write":false,"limits.fuel":5}"#;
        assert_eq!(
            diff(old, new),
            r#"hosts: ["api.github.com"] -> ["api.github.com","gh.attacker.example"]; kind: "bearer" -> (none); limits.fuel: (none) -> 5"#
        );
        assert_eq!(hosts(new).unwrap(), ["api.github.com", "gh.attacker.example"]);
        assert_eq!(digest("x").len(), 64);
    }
}
