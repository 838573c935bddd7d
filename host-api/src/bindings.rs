//! Rust bindings for the `skillbox:skill` world, generated once from `wit/`.
//!
//! Everything else in this crate implements the `Host` traits generated here;
//! keeping the macro alone in its own module keeps its output out of the way.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "skill",
    imports: { default: async },
    exports: { default: async },
});
