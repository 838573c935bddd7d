//! `skill.toml` parsing: any text either parses into a checked manifest or is refused with an
//! error; it never panics, and a parsed manifest's policy is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(manifest) = skillbox_runtime::Manifest::parse(text, "fuzz/skill.toml".into()) {
        manifest.policy().expect("a parsed manifest has a valid policy");
        let _ = manifest.foreign_action();
        let _ = manifest.component_path();
    }
});
