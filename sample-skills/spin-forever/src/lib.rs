//! A skill that never returns: the host must stop it at its time limit.

wit_bindgen::generate!({ path: "../../wit", world: "skill" });


struct SpinForever;

impl Guest for SpinForever {
    fn run(_input: String) -> Result<String, SkillError> {
        let mut counter: u64 = 0;
        loop {
            // black_box keeps the loop from being optimised into nothing.
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

export!(SpinForever);
