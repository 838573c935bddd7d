//! The view every host call passes through first: the invocation's [`limits`](crate::limits),
//! then the interface's own implementation on [`SkillCtxView`].
//!
//! wasmtime calls the `Host` traits on [`Metered`]. Each method counts the call against
//! [`MAX_HOST_CALLS`](crate::limits::MAX_HOST_CALLS) and checks what spans calls (handles
//! open, audit rows left, log volume, an `open` refused before) before delegating; the size
//! checks of each interface stay with it. A function added to the WIT must be added here as
//! well (the traits do not compile without it), so no call escapes the count.

use wasmtime::component::{HasData, Resource};

use crate::bindings::skillbox::skill::{credentials, http, log, signing, sql, types};
use crate::credentials::OpenCredential;
use crate::error::HostError;
use crate::{MAX_LOG_MESSAGE, SkillCtxView, SkillView};

/// A [`SkillCtxView`] whose calls are held to the invocation's limits.
pub(crate) struct Metered<'a>(pub(crate) SkillCtxView<'a>);

/// Marker type tying [`SkillView`] into wasmtime's `HasData` plumbing, through [`Metered`].
pub(crate) struct HasMetered<T>(std::marker::PhantomData<T>);

impl<T: SkillView + 'static> HasData for HasMetered<T> {
    type Data<'a> = Metered<'a>;
}

impl types::Host for Metered<'_> {
    fn convert_error(&mut self, error: HostError) -> wasmtime::Result<types::Error> {
        types::Host::convert_error(&mut self.0, error)
    }
}

impl log::Host for Metered<'_> {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.0.ctx.count_call()?;
        // A line past the invocation's log budget is dropped unread: nothing is written, so
        // there is nothing to scan.
        if !self.0.ctx.admit_log_line(message.len().min(MAX_LOG_MESSAGE)) {
            return Ok(());
        }
        log::Host::log(&mut self.0, level, message).await
    }
}

impl credentials::Host for Metered<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<OpenCredential>, HostError> {
        self.0.ctx.count_call()?;
        self.0.ctx.before_open(&name)?;
        // At most `MAX_CREDENTIAL_NAME` bytes, checked above.
        let result = credentials::Host::open(&mut self.0, name.clone()).await;
        self.0.ctx.after_open(&name, &result);
        result
    }
}

impl credentials::HostCredential for Metered<'_> {
    async fn name(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<String> {
        self.0.ctx.count_call()?;
        credentials::HostCredential::name(&mut self.0, handle).await
    }

    async fn kind(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<credentials::Kind> {
        self.0.ctx.count_call()?;
        credentials::HostCredential::kind(&mut self.0, handle).await
    }

    async fn service(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<String> {
        self.0.ctx.count_call()?;
        credentials::HostCredential::service(&mut self.0, handle).await
    }

    async fn scopes(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<Vec<String>> {
        self.0.ctx.count_call()?;
        credentials::HostCredential::scopes(&mut self.0, handle).await
    }

    async fn expires_at(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<Option<u64>> {
        self.0.ctx.count_call()?;
        credentials::HostCredential::expires_at(&mut self.0, handle).await
    }

    /// Not counted: a guest at its call cap must still be able to let go of handles.
    async fn drop(&mut self, handle: Resource<OpenCredential>) -> wasmtime::Result<()> {
        credentials::HostCredential::drop(&mut self.0, handle).await?;
        self.0.ctx.dropped_handle();
        Ok(())
    }
}

impl http::Host for Metered<'_> {
    async fn send(
        &mut self,
        request: http::Request,
        auth: Option<Resource<OpenCredential>>,
    ) -> Result<http::Response, HostError> {
        self.0.ctx.count_call()?;
        if auth.is_some() {
            self.0.ctx.reserve_use_row("http.send")?;
        }
        http::Host::send(&mut self.0, request, auth).await
    }
}

impl signing::Host for Metered<'_> {
    async fn hmac(
        &mut self,
        key: Resource<OpenCredential>,
        algorithm: signing::Algorithm,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, HostError> {
        self.0.ctx.count_call()?;
        self.0.ctx.reserve_use_row("signing.hmac")?;
        signing::Host::hmac(&mut self.0, key, algorithm, message).await
    }
}

impl sql::Host for Metered<'_> {
    async fn query(
        &mut self,
        db: Resource<OpenCredential>,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<sql::Rows, HostError> {
        self.0.ctx.count_call()?;
        self.0.ctx.reserve_use_row("sql.query")?;
        sql::Host::query(&mut self.0, db, statement, params).await
    }

    async fn execute(
        &mut self,
        db: Resource<OpenCredential>,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<u64, HostError> {
        self.0.ctx.count_call()?;
        self.0.ctx.reserve_use_row("sql.execute")?;
        sql::Host::execute(&mut self.0, db, statement, params).await
    }
}
