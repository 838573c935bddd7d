//! Rust bindings for the `skillbox:skill` world, generated once from `wit/`.
//!
//! Everything else in this crate implements the `Host` traits generated here;
//! keeping the macro alone in its own module keeps its output out of the way.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "skill",
    imports: {
        // Logging cannot fail, but it traps when the message trips the wire.
        "skillbox:skill/log.log": async | trappable,
        // Everything else may trap (a stale or forged handle) and reports
        // guest-visible failures through `HostError`.
        default: async | trappable,
    },
    exports: { default: async },
    with: {
        "skillbox:skill/credentials.credential": crate::credentials::OpenCredential,
    },
    trappable_error_type: {
        "skillbox:skill/types.error" => crate::error::HostError,
    },
});
