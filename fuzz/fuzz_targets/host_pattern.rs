//! Host patterns and URL matching: a pattern either parses or is refused; a parsed pattern
//! round-trips through its text form and matches URLs without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillbox_egress::HostPattern;

fuzz_target!(|input: (&str, &str)| {
    let (pattern, url) = input;
    let Ok(parsed) = HostPattern::parse(pattern) else { return };
    let again = HostPattern::parse(&parsed.to_string()).expect("a pattern's text form parses");
    assert_eq!(again, parsed, "round trip of {pattern:?}");
    if let Ok(url) = url::Url::parse(url) {
        let _ = parsed.matches_url(&url);
    }
});
