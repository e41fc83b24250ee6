//! One attacker connection, with every per-session cap enforced in one place.
//!
//! Protocol handlers never touch the socket directly: they read and write through a
//! [`Session`], which
//! * counts bytes in and out,
//! * closes the session after `idle_timeout` without input, after `max_duration` in total, or
//!   once `max_bytes_in` have been read,
//! * refuses lines longer than `max_line`,
//! * keeps a capped prefix of the first bytes the client sent (for the connection event),
//! * collects replies and sends them in one write when the handler next waits for the client
//!   (a login prompt after a banner, or the answers to pipelined commands, leave as one segment,
//!   like a server with a buffered writer), and
//! * builds [`Event`]s with the session's common fields filled in.
//!
//! Every way a session can end is a [`CloseReason`], so handlers use `?` freely and the listener
//! records how each connection ended.

use crate::capture::PayloadCapture;
use crate::config::Persona;
use crate::credentials::CredentialPolicy;
use crate::samples::{SampleArea, SampleWriter};
use crate::sink::EventSink;
use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, SampleOutcome, Transport};
use drosera_uplink::now_ms;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::time::Instant;

/// Per-session caps (from the `[limits]` config section).
#[derive(Clone, Debug)]
pub struct SessionLimits {
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub max_bytes_in: u64,
    pub max_line: usize,
    /// Payload bytes kept per session (uploads, bodies); 0 while the governor pauses payloads.
    pub max_payload: usize,
    /// Bytes of the client's first input kept in the connection event.
    pub first_bytes: usize,
    /// Critical events this session may record as Critical (see [`IoCounters::critical_left`]).
    pub max_critical: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(300),
            max_bytes_in: 1 << 20,
            max_line: 4096,
            max_payload: 1 << 20,
            first_bytes: 256,
            max_critical: 32,
        }
    }
}

/// Result type of every session operation: the error says why the session ends.
pub type SessionResult<T> = Result<T, CloseReason>;

/// Byte counters shared between a session and its stream (they survive `into_io`).
#[derive(Debug, Default)]
pub struct IoCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// How many more Critical events the session may record as Critical (its emitters share
    /// it through these counters, so the budget costs no allocation of its own). Critical events
    /// are evicted last, and one telnet line can offer ~64 URLs, one HTTP connection post body
    /// after body: without a budget an attacker could fill a full store with cheap Critical
    /// events and push the credentials out first (issue 19). Past the budget an event is stored
    /// one class lower (Interaction): nothing is dropped, it is just no longer protected ahead of
    /// credentials. Samples are exempt: each is a kept file the analyst must be told about, and
    /// the sample area caps them.
    pub critical_left: AtomicU32,
}

impl IoCounters {
    /// The priority `detail` is stored with: its default, or Interaction once the session's
    /// Critical budget is spent (see `critical_left`).
    pub fn priority(&self, detail: &Detail) -> Priority {
        let p = detail.default_priority();
        if p != Priority::Critical || matches!(detail, Detail::Sample { .. }) {
            return p;
        }
        let took = self.critical_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        if took {
            p
        } else {
            Priority::Interaction
        }
    }
}

/// A stream wrapper that counts bytes, enforces the input byte cap, and remembers the first
/// bytes received. Usable by libraries that want to own the stream (for example russh).
pub struct CappedIo<S> {
    inner: S,
    counters: Arc<IoCounters>,
    max_bytes_in: u64,
    first: Vec<u8>,
    first_cap: usize,
}

impl<S> CappedIo<S> {
    pub fn new(inner: S, max_bytes_in: u64, first_cap: usize) -> Self {
        CappedIo { inner, counters: Arc::new(IoCounters::default()), max_bytes_in, first: Vec::new(), first_cap }
    }

    pub fn counters(&self) -> Arc<IoCounters> {
        self.counters.clone()
    }

    pub fn first_bytes(&self) -> &[u8] {
        &self.first
    }

    /// Changes the input byte cap (SSH raises it by the sample cap for each file a session may
    /// upload over its one connection).
    pub fn set_max_bytes_in(&mut self, max: u64) {
        self.max_bytes_in = max;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CappedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let used = self.counters.bytes_in.load(Ordering::Relaxed);
        if used >= self.max_bytes_in {
            return Poll::Ready(Err(std::io::Error::other(ByteCapExceeded)));
        }
        let allowed = usize::try_from(self.max_bytes_in - used).unwrap_or(usize::MAX);
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = if buf.remaining() > allowed {
            // Never read past the cap: what lies beyond stays unread (in the socket), so a cap
            // raised later (`Session::allow_bytes_in`) finds every byte, and a session at its
            // cap ends on the next read. (Initialised first, so the limited read needs no unsafe.)
            buf.initialize_unfilled_to(allowed);
            let mut limited = buf.take(allowed);
            let r = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
            let n = limited.filled().len();
            if matches!(r, Poll::Ready(Ok(()))) {
                buf.set_filled(before + n);
            }
            r
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                let got = &buf.filled()[before..before + n];
                if this.first.len() < this.first_cap {
                    let take = (this.first_cap - this.first.len()).min(n);
                    this.first.extend_from_slice(&got[..take]);
                }
                this.counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CappedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error a [`CappedIo`] returns once the input byte cap is reached.
#[derive(Debug, thiserror::Error)]
#[error("session input byte cap reached")]
pub struct ByteCapExceeded;

fn io_reason(e: &std::io::Error) -> CloseReason {
    if e.get_ref().is_some_and(|inner| inner.is::<ByteCapExceeded>()) {
        CloseReason::ByteCap
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        CloseReason::ClientClosed
    } else {
        CloseReason::IoError
    }
}

/// Boxed stream type so that sessions over TCP, TLS or test pipes share one type.
pub trait SessionStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SessionStream for T {}

/// One attacker connection.
pub struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub protocol: Protocol,
    pub limits: SessionLimits,
    started: Instant,
    started_ms: i64,
    deadline: Instant,
    io: BufReader<CappedIo<Box<dyn SessionStream>>>,
    counters: Arc<IoCounters>,
    env: Arc<SessionEnv>,
    taken_first: Vec<u8>,
    /// Replies written but not sent yet (at most [`OUT_FLUSH_AT`] plus one reply).
    out: Vec<u8>,
}

/// Bytes a session reads from its socket at a time. Every handler reads in a loop (lines,
/// exact lengths, or chunks of what is there), so this sets the read size, never the largest
/// message; 2 KiB holds the whole first flight of nearly every probe and halves the buffers'
/// share of a flood's memory against 4 KiB (each of 2,000 concurrent sessions holds one).
const READ_BUFFER: usize = 2048;

/// Pending replies are sent at once when they reach this size.
const OUT_FLUSH_AT: usize = 16 * 1024;
/// Reply buffer capacity a session keeps between turns.
const OUT_KEEP: usize = 4096;
/// How long a closing session may spend sending its last replies.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Builds and emits events for one session without borrowing it (see [`Session::emitter`]),
/// and reaches the session's login policy and sample area, for code that runs where the
/// session cannot be borrowed (callbacks of a library that owns the stream, like russh).
#[derive(Clone)]
pub struct Emitter {
    base: Event,
    counters: Arc<IoCounters>,
    started: Instant,
    env: Arc<SessionEnv>,
    max_payload: usize,
}

impl Emitter {
    pub fn emit(&self, detail: Detail) {
        let mut ev = self.base.clone();
        ev.time_ms = now_ms();
        ev.duration_ms = self.started.elapsed().as_millis().min(u32::MAX as u128) as u32;
        ev.bytes_in = self.counters.bytes_in.load(Ordering::Relaxed);
        ev.bytes_out = self.counters.bytes_out.load(Ordering::Relaxed);
        ev.priority = self.counters.priority(&detail);
        ev.detail = detail;
        self.env.sink.emit(ev);
    }

    /// As [`Session::check_login`].
    pub fn check_login(&self, user: &str, password: &str) -> bool {
        self.env.credentials.check(self.base.src_ip, user, password)
    }

    /// As [`Session::capture`].
    pub fn capture(&self, source: &'static str) -> PayloadCapture {
        new_capture(&self.env, self.max_payload, source)
    }

    /// As [`Session::emit_capture`].
    pub fn emit_capture(&self, capture: PayloadCapture, name: &str) {
        let done = capture.finish(name);
        self.emit(done.payload);
        if let Some(sample) = done.sample {
            self.emit(sample);
        }
    }

    /// As [`Session::max_sample_bytes`].
    pub fn max_sample_bytes(&self) -> Option<u64> {
        self.env.samples.as_ref().map(|a| a.max_sample_bytes())
    }
}

/// A capture for a delivered file (see [`Session::capture`]).
pub(crate) fn new_capture(env: &SessionEnv, max_payload: usize, source: &'static str) -> PayloadCapture {
    // The governor pauses payload keeping by setting max_payload to 0; samples pause with it.
    let paused = max_payload == 0;
    let writer = match &env.samples {
        Some(area) => area.begin(paused),
        None => SampleWriter::not_kept(SampleOutcome::Disabled),
    };
    PayloadCapture::with_sample(max_payload, writer, source)
}

/// What every session of the sensor shares: where events go, the sensor's name, and the
/// sensor-wide policies a handler consults (the one login policy, the sample area, the persona).
pub struct SessionEnv {
    pub sink: EventSink,
    pub sensor: Arc<str>,
    pub persona: Persona,
    pub credentials: CredentialPolicy,
    /// `None`: samples are not kept (tests, tools); every delivered file is still reported.
    pub samples: Option<Arc<SampleArea>>,
    /// Per-service settings and cross-connection state (see [`crate::protocols::Shared`]).
    pub services: crate::protocols::Shared,
}

impl SessionEnv {
    /// The environment of a running sensor, from its config.
    pub fn new(
        cfg: &crate::config::Config,
        sink: EventSink,
        sensor: Arc<str>,
        samples: Option<Arc<SampleArea>>,
    ) -> Result<Arc<SessionEnv>, crate::credentials::BadEntry> {
        Ok(Arc::new(SessionEnv {
            sink,
            sensor,
            persona: cfg.sensor.persona,
            credentials: CredentialPolicy::new(&cfg.credentials)?,
            samples,
            services: crate::protocols::Shared::new(cfg),
        }))
    }

    /// An environment for tests and tools: mixed persona, every login refused, no sample area.
    pub fn basic(sink: EventSink, sensor: Arc<str>) -> Arc<SessionEnv> {
        Arc::new(SessionEnv {
            sink,
            sensor,
            persona: Persona::Mixed,
            credentials: CredentialPolicy::refuse_all(),
            samples: None,
            services: crate::protocols::Shared::default(),
        })
    }
}

impl Session {
    /// Every argument is a distinct fact about the connection, fixed at accept time.
    pub fn new(
        stream: Box<dyn SessionStream>,
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        protocol: Protocol,
        limits: SessionLimits,
        env: Arc<SessionEnv>,
    ) -> Session {
        let capped = CappedIo::new(stream, limits.max_bytes_in, limits.first_bytes);
        let counters = capped.counters();
        counters.critical_left.store(limits.max_critical, Ordering::Relaxed);
        let started = Instant::now();
        Session {
            id,
            peer,
            local,
            protocol,
            deadline: started + limits.max_duration,
            limits,
            started,
            started_ms: now_ms(),
            io: BufReader::with_capacity(READ_BUFFER, capped),
            counters,
            env,
            taken_first: Vec::new(),
            out: Vec::new(),
        }
    }

    pub fn bytes_in(&self) -> u64 {
        self.counters.bytes_in.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.counters.bytes_out.load(Ordering::Relaxed)
    }

    /// The capped prefix of what the client sent first.
    pub fn first_bytes(&self) -> &[u8] {
        if self.taken_first.is_empty() {
            self.io.get_ref().first_bytes()
        } else {
            &self.taken_first
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits for input and lends up to `max` bytes of it without copying; the caller says how
    /// many it used with [`Session::consume`]. End of input is `Err(ClientClosed)`.
    pub async fn peek_some(&mut self, max: usize) -> SessionResult<&[u8]> {
        if self.io.buffer().is_empty() {
            self.flush().await?;
        }
        let idle = self.limits.idle_timeout;
        let deadline = self.deadline;
        let available = timed_static(idle, deadline, self.io.fill_buf()).await?;
        if available.is_empty() {
            return Err(CloseReason::ClientClosed);
        }
        Ok(&available[..available.len().min(max)])
    }

    /// Marks `n` bytes lent by [`Session::peek_some`] as read.
    pub fn consume(&mut self, n: usize) {
        self.io.consume(n);
    }

    /// Reads exactly `buf.len()` bytes.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> SessionResult<()> {
        if self.io.buffer().len() < buf.len() {
            self.flush().await?;
        }
        let idle = self.limits.idle_timeout;
        let deadline = self.deadline;
        timed_static(idle, deadline, self.io.read_exact(buf)).await.map(|_| ())
    }

    /// Reads one line (up to and excluding `\n`, with a trailing `\r` removed), refusing lines
    /// longer than `max_line`. End of input before any byte is `Err(ClientClosed)`.
    pub async fn read_line(&mut self) -> SessionResult<Vec<u8>> {
        if !self.io.buffer().contains(&b'\n') {
            self.flush().await?;
        }
        let max = self.limits.max_line;
        let idle = self.limits.idle_timeout;
        let deadline = self.deadline;
        let mut line = Vec::new();
        loop {
            let available = timed_static(idle, deadline, self.io.fill_buf()).await?;
            if available.is_empty() {
                if line.is_empty() {
                    return Err(CloseReason::ClientClosed);
                }
                break;
            }
            if let Some(pos) = available.iter().position(|&b| b == b'\n') {
                if line.len() + pos > max {
                    return Err(CloseReason::LineTooLong);
                }
                line.extend_from_slice(&available[..pos]);
                self.io.consume(pos + 1);
                break;
            }
            let n = available.len();
            if line.len() + n > max {
                return Err(CloseReason::LineTooLong);
            }
            line.extend_from_slice(available);
            self.io.consume(n);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// Queues `data` for the client. It is sent, with anything else queued, before the session
    /// next waits for input, on [`Session::flush`], or at once when the queue reaches
    /// [`OUT_FLUSH_AT`] bytes. A handler that waits on anything but the session's own reads
    /// (a data connection, a library owning the stream) flushes first.
    pub async fn write_all(&mut self, data: &[u8]) -> SessionResult<()> {
        self.out.extend_from_slice(data);
        if self.out.len() >= OUT_FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends every queued reply (bounded by the idle timeout and the session deadline).
    pub async fn flush(&mut self) -> SessionResult<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let idle = self.limits.idle_timeout;
        let deadline = self.deadline;
        let io = self.io.get_mut();
        let out = &mut self.out;
        let r = timed_static(idle, deadline, async {
            io.write_all(out).await?;
            io.flush().await
        })
        .await;
        out.clear();
        if out.capacity() > OUT_KEEP {
            // A large reply does not keep its buffer for the rest of the session.
            *out = Vec::new();
        }
        r
    }

    /// Builds an event with this session's common fields.
    pub fn event(&self, detail: Detail) -> Event {
        Event {
            seq: 0,
            time_ms: now_ms(),
            sensor: self.env.sensor.to_string(),
            transport: Transport::Tcp,
            protocol: self.protocol,
            src_ip: self.peer.ip(),
            src_port: self.peer.port(),
            dst_port: self.local.port(),
            session_id: self.id,
            duration_ms: self.started.elapsed().as_millis().min(u32::MAX as u128) as u32,
            bytes_in: self.bytes_in(),
            bytes_out: self.bytes_out(),
            priority: self.counters.priority(&detail),
            detail,
        }
    }

    /// Builds and emits an event with this session's common fields.
    pub fn emit(&self, detail: Detail) {
        self.env.sink.emit(self.event(detail));
    }

    /// The sensor-wide persona (see [`Persona`]).
    pub fn persona(&self) -> Persona {
        self.env.persona
    }

    /// What sessions of a service share across connections (see [`crate::protocols::Shared`]).
    pub fn services(&self) -> &crate::protocols::Shared {
        &self.env.services
    }

    /// The one login policy: true lets this attempt in (and counts it for the source address).
    pub fn check_login(&self, user: &str, password: &str) -> bool {
        self.env.credentials.check(self.peer.ip(), user, password)
    }

    /// The login policy for a login that proves a password without sending it (NTLM): see
    /// [`CredentialPolicy::check_with`].
    pub fn check_login_with(&self, user: &str, proves: impl Fn(&str) -> bool) -> bool {
        self.env.credentials.check_with(self.peer.ip(), user, proves)
    }

    /// A capture for a whole file the attacker delivers (an upload, a body, a dropped file): it
    /// hashes, keeps the payload prefix (up to `limits.max_payload`) and streams the bytes into
    /// the sample area. `source` names the channel (`ftp-stor`, `http-body`, ...). End it with
    /// [`Session::emit_capture`].
    pub fn capture(&self, source: &'static str) -> PayloadCapture {
        new_capture(&self.env, self.limits.max_payload, source)
    }

    /// Most bytes one delivered file may bring on a separate data connection (FTP, ...): the
    /// largest sample kept plus one byte (to tell that a file was larger), and never less than
    /// the session's own byte cap.
    pub fn file_cap(&self) -> u64 {
        let sample = self.env.samples.as_ref().map_or(0, |a| a.max_sample_bytes().saturating_add(1));
        self.limits.max_bytes_in.max(sample)
    }

    /// The sample area's per-sample cap in bytes (`None`: this sensor keeps no samples).
    pub fn max_sample_bytes(&self) -> Option<u64> {
        self.env.samples.as_ref().map(|a| a.max_sample_bytes())
    }

    /// Lets `n` more bytes in than the session's byte cap, for a delivered file that arrives on
    /// this connection (an HTTP body): like [`Session::file_cap`] for a data connection, the
    /// caller asks for at most `file_cap()` per file, so a body up to the sample cap is received
    /// whole while everything else the client sends stays under `max_bytes_in`.
    pub fn allow_bytes_in(&mut self, n: u64) {
        let io = self.io.get_mut();
        io.max_bytes_in = io.max_bytes_in.saturating_add(n);
    }

    /// Records a finished capture: its `Payload` event and, for a file, its `Sample` event.
    pub fn emit_capture(&self, capture: PayloadCapture, name: &str) {
        let done = capture.finish(name);
        self.emit(done.payload);
        if let Some(sample) = done.sample {
            self.emit(sample);
        }
    }

    /// Ends the session: sends the replies still queued (bounded: a peer that does not read
    /// cannot hold us), emits the connection event (with the first bytes the client sent and
    /// every byte counted), and closes the socket. Closing sends the FIN itself, so there is no
    /// separate `shutdown` call (one system call less per connection).
    ///
    /// Not an `async fn`: those keep a moved-in argument twice (the argument and the body's
    /// binding), and with the flush's state that made this future 1,160 bytes of every session's
    /// task for its whole life (issue 18's flood peak); this one is the session and a pointer.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
    pub fn close(mut self, closed_by: CloseReason) -> impl std::future::Future<Output = ()> + Send {
        async move {
            if !self.out.is_empty() {
                // Boxed, and only when replies are still queued: see above.
                let _ = Box::pin(tokio::time::timeout(FINAL_FLUSH, self.flush())).await;
            }
            let first_bytes = self.first_bytes().to_vec();
            let mut ev = self.event(Detail::Connection { first_bytes, closed_by });
            ev.time_ms = self.started_ms;
            self.env.sink.emit(ev);
        }
    }

    /// A cloneable, `'static` event builder for code that cannot borrow the session (for example
    /// callbacks of a protocol library that owns the stream).
    pub fn emitter(&self) -> Emitter {
        Emitter {
            base: self.event(Detail::Command { line: String::new() }),
            counters: self.counters.clone(),
            started: self.started,
            env: self.env.clone(),
            max_payload: self.limits.max_payload,
        }
    }

    /// Takes the stream out of the session for a library that must own it (russh), after
    /// sending anything queued. Byte counters stay shared, the first bytes read so far are kept
    /// for `close`, and the session's own read/write methods see end-of-file afterwards.
    pub async fn take_io(&mut self) -> SessionResult<BufReader<CappedIo<Box<dyn SessionStream>>>> {
        self.flush().await?;
        // An end-of-file stand-in with a 1-byte buffer (BufReader::new would allocate 8 KiB;
        // tokio refuses a zero capacity).
        let eof = tokio::io::join(tokio::io::empty(), tokio::io::sink());
        let empty = CappedIo::new(Box::new(eof) as Box<dyn SessionStream>, 0, 0);
        let io = std::mem::replace(&mut self.io, BufReader::with_capacity(1, empty));
        self.taken_first = io.get_ref().first_bytes().to_vec();
        Ok(io)
    }
}

async fn timed_static<T>(
    idle: Duration,
    deadline: Instant,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> SessionResult<T> {
    let idle_end = Instant::now() + idle;
    let (end, reason) = if idle_end < deadline {
        (idle_end, CloseReason::IdleTimeout)
    } else {
        (deadline, CloseReason::SessionTimeout)
    };
    match tokio::time::timeout_at(end, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_reason(&e)),
        Err(_) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::RollupTable;

    fn pair(limits: SessionLimits) -> (Session, tokio::io::DuplexStream, crate::sink::EventQueue) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (sink, rx) = EventSink::new(16, Arc::new(RollupTable::new(16)));
        let s = Session::new(
            Box::new(a),
            1,
            "192.0.2.9:4444".parse().unwrap(),
            "127.0.0.1:21".parse().unwrap(),
            Protocol::Ftp,
            limits,
            SessionEnv::basic(sink, Arc::from("t")),
        );
        (s, b, rx)
    }

    /// Past `max_critical`, Critical events of one session (through the session or an emitter)
    /// are stored as Interaction; samples and other classes keep their priority; every event is
    /// still emitted.
    #[tokio::test]
    async fn critical_events_past_the_budget_are_demoted_not_dropped() {
        let limits = SessionLimits { max_critical: 3, ..SessionLimits::default() };
        let (s, _peer, mut rx) = pair(limits);
        let offer = |i: usize| Detail::DownloadOffered { url: format!("http://192.0.2.1/{i}"), tool: "wget".into() };
        let emitter = s.emitter();
        for i in 0..4 {
            s.emit(offer(i));
        }
        emitter.emit(offer(9));
        s.emit(Detail::Login {
            username: "u".into(),
            secret: drosera_uplink::event::Secret::Password("p".into()),
            success: false,
            extra: vec![],
        });
        s.emit(Detail::Sample {
            sha256: [0; 32],
            size: 1,
            name: "x".into(),
            source: "ftp-stor".into(),
            outcome: SampleOutcome::Kept,
        });
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(ev.priority);
        }
        use Priority::*;
        assert_eq!(got, vec![Critical, Critical, Critical, Interaction, Interaction, Credential, Critical]);
    }

    #[tokio::test]
    async fn lines_bytes_and_caps() {
        let limits = SessionLimits { max_line: 8, max_bytes_in: 20, ..SessionLimits::default() };
        let (mut s, mut peer, _rx) = pair(limits);
        peer.write_all(b"USER a\r\nTOOLONGLINE\n").await.unwrap();
        assert_eq!(s.read_line().await.unwrap(), b"USER a");
        assert_eq!(s.read_line().await, Err(CloseReason::LineTooLong));
        assert_eq!(&s.first_bytes()[..6], b"USER a");
        s.write_all(b"hi").await.unwrap();
        assert_eq!(s.bytes_out(), 0, "queued until the session waits for input or flushes");
        s.flush().await.unwrap();
        assert_eq!(s.bytes_out(), 2);
    }

    #[tokio::test]
    async fn replies_leave_together_when_the_session_waits_for_input() {
        let (mut s, mut peer, _rx) = pair(SessionLimits::default());
        // Two pipelined commands: the first reply waits while the second command is already here.
        peer.write_all(b"USER a\r\nPASS b\r\n").await.unwrap();
        assert_eq!(s.read_line().await.unwrap(), b"USER a");
        s.write_all(b"331 pw\r\n").await.unwrap();
        assert_eq!(s.read_line().await.unwrap(), b"PASS b");
        assert_eq!(s.out.len(), 8, "input was waiting, so the reply was not sent yet");
        s.write_all(b"230 ok\r\n").await.unwrap();
        // Nothing is buffered now: the next read must send both replies before it waits.
        let read = tokio::spawn(async move {
            let r = s.read_line().await;
            (s, r)
        });
        let mut got = vec![0u8; 16];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"331 pw\r\n230 ok\r\n");
        peer.write_all(b"QUIT\r\n").await.unwrap();
        let (s, r) = read.await.unwrap();
        assert_eq!(r.unwrap(), b"QUIT");
        assert_eq!(s.bytes_out(), 16);
    }

    #[tokio::test]
    async fn a_large_queue_is_sent_without_waiting_for_a_read() {
        let (mut s, mut peer, _rx) = pair(SessionLimits::default());
        s.write_all(&vec![b'x'; OUT_FLUSH_AT]).await.unwrap();
        assert_eq!(s.out.len(), 0);
        assert!(s.out.capacity() <= OUT_KEEP, "the big buffer is released after sending");
        let mut got = vec![0u8; OUT_FLUSH_AT];
        peer.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test]
    async fn byte_cap_closes_session() {
        let limits = SessionLimits { max_bytes_in: 10, ..SessionLimits::default() };
        let (mut s, mut peer, _rx) = pair(limits);
        peer.write_all(&[b'x'; 64]).await.unwrap();
        let mut total = 0;
        let end = loop {
            match s.peek_some(64).await {
                Ok(chunk) => {
                    let n = chunk.len();
                    s.consume(n);
                    total += n;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(total, 10);
        assert_eq!(end, CloseReason::ByteCap);
    }

    #[tokio::test]
    async fn bytes_past_the_cap_stay_unread_until_an_allowance_lets_them_in() {
        // The buffered reader asks for 4 KiB while only 10 bytes are allowed: the rest must not
        // be read and dropped, or a body allowed in later would miss its first bytes.
        let limits = SessionLimits { max_bytes_in: 10, ..SessionLimits::default() };
        let (mut s, mut peer, _rx) = pair(limits);
        let data: Vec<u8> = (0..100u8).collect();
        peer.write_all(&data).await.unwrap();
        let mut got = vec![0u8; 10];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(s.peek_some(64).await, Err(CloseReason::ByteCap));
        s.allow_bytes_in(90);
        let mut rest = vec![0u8; 90];
        // Bytes read past the cap and dropped would leave this waiting: fail at once instead.
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut rest)).await.unwrap().unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got, data, "nothing was lost at the cap");
    }

    /// An endless source that remembers the most bytes it was ever asked for and how many it
    /// handed out.
    struct Endless {
        asked_most: usize,
        given: usize,
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining();
            self.asked_most = self.asked_most.max(n);
            self.given += n;
            buf.put_slice(&vec![b'x'; n]);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_stream_is_never_asked_for_bytes_past_the_cap() {
        let mut io = CappedIo::new(Endless { asked_most: 0, given: 0 }, 10, 4);
        let mut buf = vec![0u8; 4096];
        assert_eq!(io.read(&mut buf).await.unwrap(), 10);
        let err = io.read(&mut buf).await.unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<ByteCapExceeded>()), "{err}");
        assert_eq!((io.inner.asked_most, io.inner.given), (10, 10), "nothing past the cap was read from the stream");
        assert_eq!(io.first_bytes(), b"xxxx");
        assert_eq!(io.counters().bytes_in.load(Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn an_allowance_lets_exactly_that_many_more_bytes_in() {
        let limits = SessionLimits { max_bytes_in: 10, ..SessionLimits::default() };
        let (mut s, mut peer, _rx) = pair(limits);
        s.allow_bytes_in(5);
        peer.write_all(&[b'x'; 64]).await.unwrap();
        let mut total = 0;
        let end = loop {
            match s.peek_some(64).await {
                Ok(chunk) => {
                    let n = chunk.len();
                    s.consume(n);
                    total += n;
                }
                Err(e) => break e,
            }
        };
        assert_eq!((total, end), (15, CloseReason::ByteCap));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes_session() {
        let limits = SessionLimits { idle_timeout: Duration::from_secs(5), ..SessionLimits::default() };
        let (mut s, _peer, _rx) = pair(limits);
        assert_eq!(s.read_line().await, Err(CloseReason::IdleTimeout));
    }

    #[tokio::test]
    async fn close_sends_the_last_reply_then_emits_the_connection_event() {
        let (mut s, mut peer, mut rx) = pair(SessionLimits::default());
        peer.write_all(b"hello\n").await.unwrap();
        let _ = s.read_line().await.unwrap();
        s.write_all(b"bye\r\n").await.unwrap();
        s.close(CloseReason::ClientClosed).await;
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.dst_port, 21);
        assert_eq!(ev.bytes_in, 6);
        assert_eq!(ev.bytes_out, 5, "the last reply is sent before the event is built");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye\r\n", "then the stream is closed");
        assert!(matches!(ev.detail, Detail::Connection { ref first_bytes, .. } if first_bytes == b"hello\n"));
    }
}
