//! What a `Store` holds for one invocation, and the limits applied to it.
//!
//! A fresh store is built for every invocation and dropped after it, so no
//! state (memory, handles, captured output) survives from one call to the
//! next. WASI is linked because Rust guests import it, but the context
//! grants nothing: no environment, arguments, directories or sockets, and
//! stdio is captured in capped buffers instead of inherited. `wasi:http` is
//! linked for skills written against it; its requests go through the host's
//! egress hook.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use skillbox_host_api::{SkillCtx, SkillCtxView, SkillView};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Store data for one invocation.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    skill: SkillCtx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl StoreState {
    pub(crate) fn new(skill: SkillCtx, memory_limit: u64, stdio_cap: usize) -> StoreState {
        let stdout = CapturedOutput::new(stdio_cap);
        let stderr = CapturedOutput::new(stdio_cap);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StoreState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            skill,
            limiter: MemoryLimiter::new(memory_limit),
            stdout,
            stderr,
        }
    }
}

impl StoreState {
    /// The host state of the `skillbox:skill` interfaces.
    pub(crate) fn skill_ctx(&self) -> &SkillCtx {
        &self.skill
    }

    /// The host state, mutably (for the checks on the way out).
    pub(crate) fn skill_ctx_mut(&mut self) -> &mut SkillCtx {
        &mut self.skill
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// `wasi:http`: the hooks are the invocation's host state, so every outgoing request goes
/// through its egress policy and transparent credentials (`skillbox_host_api`'s `wasi_http`).
impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.skill }
    }
}

impl SkillView for StoreState {
    fn skill(&mut self) -> SkillCtxView<'_> {
        SkillCtxView { ctx: &mut self.skill, table: &mut self.table }
    }
}

/// Caps linear memory (and table) growth, and remembers whether the cap was hit.
///
/// A refused `memory.grow` is not itself a trap: the guest sees -1 and
/// usually aborts. Recording the refusal lets the runtime report "memory
/// limit" rather than whatever the guest's allocator did next.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    pub(crate) hit: bool,
}

/// Most table elements a guest may have; generous for real code.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    fn new(max_bytes: u64) -> MemoryLimiter {
        MemoryLimiter { max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX), hit: false }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A guest output stream kept in memory, up to a cap.
///
/// Past the cap, writes still succeed and the bytes are dropped (counted in
/// `dropped`): a chatty guest must not fail because of its logging, nor
/// grow host memory without bound.
#[derive(Clone, Debug)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl CapturedOutput {
    fn new(cap: usize) -> CapturedOutput {
        CapturedOutput { inner: Arc::new(Mutex::new(Captured { cap, ..Captured::default() })) }
    }

    /// Takes what was captured, and how many bytes past the cap were dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, usize) {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut captured.bytes), captured.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = captured.cap.saturating_sub(captured.bytes.len());
        let kept = room.min(buf.len());
        captured.bytes.extend_from_slice(&buf[..kept]);
        captured.dropped += buf.len() - kept;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
