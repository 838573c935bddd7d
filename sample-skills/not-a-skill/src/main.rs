//! A plain WASI command (exports `wasi:cli/run`, not `run` from the skill
//! world): skillbox must refuse to load it as a skill, with a clear reason.

fn main() {
    println!("I am a command, not a skill.");
}
