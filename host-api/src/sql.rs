//! Implementation for the `skillbox:skill/sql` interface.
//!
//! Placeholder while the SQL host side is built: every call reports that
//! SQL is not available yet.

use wasmtime::component::Resource;

use crate::SkillCtxView;
use crate::bindings::skillbox::skill::sql::{self, Rows, Value};
use crate::credentials::OpenCredential;
use crate::error::HostError;

/// Database connections opened by one invocation, closed with it.
#[derive(Debug, Default)]
pub(crate) struct Connections;

impl sql::Host for SkillCtxView<'_> {
    async fn query(
        &mut self,
        _db: Resource<OpenCredential>,
        _statement: String,
        _params: Vec<Value>,
    ) -> Result<Rows, HostError> {
        Err(HostError::invalid("sql is not available in this build"))
    }

    async fn execute(
        &mut self,
        _db: Resource<OpenCredential>,
        _statement: String,
        _params: Vec<Value>,
    ) -> Result<u64, HostError> {
        Err(HostError::invalid("sql is not available in this build"))
    }
}
