//! A skill that allocates without bound: the host must stop it at its memory limit.

wit_bindgen::generate!({ path: "../../wit", world: "skill" });


struct MemoryHog;

impl Guest for MemoryHog {
    fn run(_input: String) -> Result<String, SkillError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the allocation is real, one MiB at a time.
            hoard.push(vec![0xA5; 1024 * 1024]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(MemoryHog);
