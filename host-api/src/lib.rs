//! Host-side implementations of the `skillbox:skill` WIT interfaces, one module per interface.
//!
//! The runtime owns the store; this crate owns what the guest can ask of the
//! host. State is reached through a view, as `wasmtime-wasi` does it: the
//! store's data implements [`SkillView`], which lends out a [`SkillCtxView`]
//! (the per-invocation [`SkillCtx`] plus the store's `ResourceTable`), and
//! every `Host` trait is implemented for that view alone.
//!
//! ```no_run
//! use skillbox_host_api::{SkillCtx, SkillCtxView, SkillView};
//! use wasmtime::component::{Linker, ResourceTable};
//!
//! struct State { skill: SkillCtx, table: ResourceTable }
//! impl SkillView for State {
//!     fn skill(&mut self) -> SkillCtxView<'_> {
//!         SkillCtxView { ctx: &mut self.skill, table: &mut self.table }
//!     }
//! }
//!
//! let engine = wasmtime::Engine::default();
//! let mut linker = Linker::<State>::new(&engine);
//! skillbox_host_api::add_to_linker(&mut linker)?;
//! # Ok::<(), wasmtime::Error>(())
//! ```
#![deny(missing_docs)]

// Generated code: its docs come from the WIT, which bindgen copies where it can.
#[allow(missing_docs)]
mod bindings;
mod log;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

pub use bindings::skillbox::skill::log::Level as LogLevel;
pub use bindings::skillbox::skill::types::SkillError;
pub use bindings::{Skill, SkillPre};

/// Longest log message a guest may write; longer ones are truncated.
pub const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// Per-invocation host state for the `skillbox:skill` interfaces.
///
/// One is built for every invocation and dropped with its store, so nothing
/// a guest obtains (a log budget today, credential handles later) outlives
/// the call that obtained it.
#[derive(Debug)]
pub struct SkillCtx {
    skill: Arc<str>,
}

impl SkillCtx {
    /// Creates the host state for one invocation of the skill named `skill`.
    pub fn new(skill: Arc<str>) -> Self {
        Self { skill }
    }

    /// The name of the skill this state belongs to, as its manifest gives it.
    pub fn skill_name(&self) -> &str {
        &self.skill
    }
}

/// What a [`SkillView`] lends out: the host state and the store's resource table.
#[allow(missing_debug_implementations)]
pub struct SkillCtxView<'a> {
    /// Host state for this invocation.
    pub ctx: &'a mut SkillCtx,
    /// The store's resource table, where handles given to the guest live.
    pub table: &'a mut ResourceTable,
}

/// Implemented by a store's data to give the host implementations their state.
pub trait SkillView: Send {
    /// Lends out the host state for the current invocation.
    fn skill(&mut self) -> SkillCtxView<'_>;
}

/// Marker type tying [`SkillView`] into wasmtime's `HasData` plumbing.
struct HasSkill<T>(std::marker::PhantomData<T>);

impl<T: 'static> HasData for HasSkill<T> {
    type Data<'a> = SkillCtxView<'a>;
}

/// Adds every `skillbox:skill` import to `linker`.
///
/// WASI is not added here: the runtime links it separately, granting nothing.
pub fn add_to_linker<T: SkillView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    Skill::add_to_linker::<T, HasSkill<T>>(linker, T::skill)
}
