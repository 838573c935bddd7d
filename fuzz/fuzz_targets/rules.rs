//! Foreign-token rules on arbitrary bytes: findings are in bounds, sorted and disjoint, and
//! redaction replaces exactly them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillbox_scan::rules::RuleSet;

fuzz_target!(|data: &[u8]| {
    let rules = RuleSet::builtin();
    let findings = rules.find(data);
    let mut last = 0;
    for f in &findings {
        assert!(f.start >= last && f.start <= f.end && f.end <= data.len(), "finding out of order or bounds");
        last = f.end;
    }
    let (redacted, again) = rules.redact(data);
    assert_eq!(again.len(), findings.len());
    if findings.is_empty() {
        assert_eq!(&*redacted, data);
    }
});
