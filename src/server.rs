//! Server: listeners, connections, limits and graceful shutdown.
//!
//! [`Server::start`] binds every `[[listen]]` socket and starts every output. Each
//! [`Listener`] accepts connections under a connection limit (a semaphore) and gives each one
//! two tasks: the *reader* ([`Handler`]) reads into one `BytesMut` and cuts it into frames
//! (zero-copy `Bytes`), the *processor* parses, classifies and encodes a whole read's frames into
//! one batch and hands it to the [`Router`]. A bounded channel (two reads) joins them, so one
//! connection keeps two cores busy, and a full output queue stops the reads (TCP backpressure).
//!
//! A listener with `[listen.tls]` does the TLS handshake ([`crate::tls`]) in the connection's
//! task, after the permit is taken and under the handshake timeout; the reader is generic over
//! the stream, so framing and limits are the same over TLS and plain TCP. SIGHUP re-reads the
//! TLS certificates ([`Server::tls_reload`]).
//!
//! Shutdown (SIGINT/SIGTERM, or [`Server::shutdown_token`]): listeners stop accepting,
//! connections stop reading, turn what they had read into records (a partial frame becomes a
//! truncated record), outputs drain their queues, flush and close, and [`Server::run`] returns.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::classify::Classifier;
use crate::config::{AtLimit, Config, ConfigError, ListenConfig, OutputType};
use crate::framing::{Frame, FrameDecoder, FrameKind};
use crate::limits::{read_room, PeerGuard, PeerLimits};
use crate::metrics::{BatchCounts, Metrics};
use crate::output::{
    self, file::FileOutput, nats::NatsOutput, stdout::StdoutOutput, syslog::SyslogOutput,
};
use crate::parse::Format;
use crate::record::{now_rfc3339, Encoder, RecordContext};
use crate::route::{Batch, Filter, Line, Router};
use crate::tls::{TlsListener, TlsReload};

/// Reads waiting between a connection's reader and its processor.
const READS_IN_FLIGHT: usize = 2;
/// At shutdown, a connection is read until it has been quiet this long.
const SHUTDOWN_QUIET: Duration = Duration::from_millis(50);
/// At most one "connection refused" log line per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// A running server: its listeners, outputs and shutdown switch.
#[derive(Debug)]
pub struct Server {
    /// Addresses actually bound, in config order (port 0 resolved).
    local_addrs: Vec<SocketAddr>,
    /// Cancelled to shut down.
    shutdown: CancellationToken,
    /// Listener, connection and processor tasks.
    tracker: TaskTracker,
    /// Output tasks, ended when every [`Router`] clone is gone.
    outputs: Vec<JoinHandle<()>>,
    /// The server's own router clone, dropped at shutdown so the outputs see their queues close.
    router: Option<Router>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Reloads the TLS listeners' certificates.
    tls_reload: TlsReload,
}

/// How [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection drained and every output flushed.
    Clean,
    /// The grace period ran out first; records still queued may not have been written.
    GraceExpired,
}

impl Server {
    /// Opens the outputs and binds the listeners of `config`.
    pub async fn start(config: &Config) -> Result<Server, ConfigError> {
        config.validate()?;
        let classifier = Arc::new(config.classifier()?);
        let output_names: Vec<String> = config.output.iter().map(|o| o.name.clone()).collect();
        let metrics = Arc::new(Metrics::new(classifier.categories(), &output_names));
        let mut router = Router::new();
        let mut outputs = Vec::new();
        for (i, o) in config.output.iter().enumerate() {
            let filter =
                match &o.filter {
                    Some(f) => Some(Filter::new(f, &classifier).map_err(|e| {
                        ConfigError(format!("output[{i}] {:?}.filter: {e}", o.name))
                    })?),
                    None => None,
                };
            let rx = router.add(filter, o.queue_batches);
            let (m, every) = (metrics.clone(), o.flush_interval());
            let handle = match o.kind {
                OutputType::File => {
                    let path = o.path.as_deref().unwrap_or(std::path::Path::new(""));
                    let out = FileOutput::open(path)
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}: {e}", o.name)))?;
                    tokio::spawn(output::run(out, i, rx, every, m))
                }
                OutputType::Stdout => {
                    tokio::spawn(output::run(StdoutOutput::new(), i, rx, every, m))
                }
                OutputType::Syslog => {
                    let out = SyslogOutput::new(o, i, m.clone())
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}.{e}", o.name)))?;
                    tokio::spawn(output::run(out, i, rx, every, m))
                }
                OutputType::Nats => {
                    let out = NatsOutput::new(o, i, m.clone())
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}.{e}", o.name)))?;
                    tokio::spawn(output::run(out, i, rx, every, m))
                }
            };
            tracing::info!(output = %o.name, kind = o.kind.as_str(), path = ?o.path, "output ready");
            outputs.push(handle);
        }
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut local_addrs = Vec::new();
        let mut tls_listeners = Vec::new();
        for (i, l) in config.listen.iter().enumerate() {
            let tls = match &l.tls {
                Some(t) => {
                    let t = Arc::new(TlsListener::new(format!("listen[{i}].tls"), t)?);
                    tls_listeners.push(t.clone());
                    Some(t)
                }
                None => None,
            };
            let listener = Listener::bind(
                l,
                tls,
                router.clone(),
                classifier.clone(),
                metrics.clone(),
                shutdown.clone(),
                tracker.clone(),
            )
            .await
            .map_err(|e| ConfigError(format!("listen[{i}].address: {e}")))?;
            local_addrs.push(listener.local_addr);
            tracker.spawn(listener.run());
        }
        Ok(Server {
            local_addrs,
            shutdown,
            tracker,
            outputs,
            router: Some(router),
            metrics,
            tls_reload: TlsReload::new(tls_listeners),
        })
    }

    /// What SIGHUP calls: re-reads the TLS listeners' certificate files.
    pub fn tls_reload(&self) -> TlsReload {
        self.tls_reload.clone()
    }

    /// The bound addresses, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Cancel it to shut the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until the shutdown token is cancelled, then drains and flushes within `grace`.
    pub async fn run(mut self, grace: Duration) -> Stopped {
        self.shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + grace;
        self.tracker.close();
        let drained = tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok();
        self.router = None;
        let mut flushed = true;
        for h in self.outputs.drain(..) {
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                flushed = false;
            }
        }
        if drained && flushed {
            Stopped::Clean
        } else {
            Stopped::GraceExpired
        }
    }
}

/// One listening socket and what its connections share.
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    listener: TcpListener,
    /// Its address (port 0 resolved).
    local_addr: SocketAddr,
    /// The `[[listen]]` section.
    cfg: Arc<ListenConfig>,
    /// TLS state when the listener has `[listen.tls]`.
    tls: Option<Arc<TlsListener>>,
    /// One permit per open connection.
    limit: Arc<Semaphore>,
    /// Per-peer-IP connection count and message rate.
    peers: Arc<PeerLimits>,
    /// Where the connections' batches go.
    router: Router,
    /// Shared classification rules.
    classifier: Arc<Classifier>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown.
    shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    tracker: TaskTracker,
}

impl Listener {
    /// Binds the socket of `cfg`; with `tls`, connections must speak TLS.
    pub async fn bind(
        cfg: &ListenConfig,
        tls: Option<Arc<TlsListener>>,
        router: Router,
        classifier: Arc<Classifier>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> io::Result<Listener> {
        let addr = cfg
            .socket_addr()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.0))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener.local_addr()?;
        tracing::info!(address = %local_addr, tls = tls.is_some(), framing = ?cfg.framing, format = ?cfg.format,
            max_frame_bytes = cfg.max_frame_bytes, max_connections = cfg.max_connections, "listening");
        Ok(Listener {
            listener,
            local_addr,
            tls,
            limit: Arc::new(Semaphore::new(cfg.max_connections)),
            peers: Arc::new(PeerLimits::new(cfg, metrics.clone())),
            cfg: Arc::new(cfg.clone()),
            router,
            classifier,
            metrics,
            shutdown,
            tracker,
        })
    }

    /// Accepts connections until shutdown.
    pub async fn run(self) {
        let mut refused_since_log = 0u64;
        let mut last_refusal_log: Option<Instant> = None;
        let mut accept_backoff = Duration::from_millis(10);
        loop {
            // With `wait`, take a permit before accepting: new connections queue in the backlog.
            let waited_permit = match self.cfg.at_connection_limit {
                AtLimit::Wait => tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    p = self.limit.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => break,
                    },
                },
                AtLimit::Refuse => None,
            };
            let (stream, peer) = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(s) => { accept_backoff = Duration::from_millis(10); s }
                    Err(e) => {
                        // EMFILE and friends: log, back off, go on.
                        tracing::warn!(address = %self.local_addr, error = %e, "accept failed");
                        tokio::time::sleep(accept_backoff).await;
                        accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let permit = match waited_permit {
                Some(p) => p,
                None => match self.limit.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        self.metrics.connections_refused.fetch_add(1, Relaxed);
                        refused_since_log += 1;
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                            tracing::warn!(address = %self.local_addr, %peer, refused = refused_since_log,
                                max_connections = self.cfg.max_connections,
                                "connection limit reached: refusing connections");
                            refused_since_log = 0;
                            last_refusal_log = Some(Instant::now());
                        }
                        drop(stream);
                        continue;
                    }
                },
            };
            // Per peer IP (counted and logged by `admit`); the global slot goes back at once.
            let Some(peer_guard) = self.peers.admit(peer.ip()) else {
                drop((stream, permit));
                continue;
            };
            self.metrics.connections_accepted.fetch_add(1, Relaxed);
            let conn = Connection {
                peer,
                peer_guard,
                cfg: self.cfg.clone(),
                router: self.router.clone(),
                classifier: self.classifier.clone(),
                metrics: self.metrics.clone(),
                shutdown: self.shutdown.clone(),
                tracker: self.tracker.clone(),
            };
            let tls = self.tls.clone();
            self.tracker.spawn(async move {
                match tls {
                    None => conn.run(stream, None).await,
                    Some(tls) => {
                        let accepted = tokio::select! {
                            _ = conn.shutdown.cancelled() => None,
                            s = tls.accept(stream, peer, &conn.metrics) => s,
                        };
                        match accepted {
                            Some(s) => {
                                let identity = crate::tls::client_identity(&s);
                                conn.run(s, identity).await;
                            }
                            None => {
                                conn.metrics.connections_closed.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
                drop(permit);
            });
        }
        tracing::debug!(address = %self.local_addr, "listener stopped");
    }
}

/// What a connection's reader and processor share, before the stream is known.
struct Connection {
    peer: SocketAddr,
    peer_guard: PeerGuard,
    cfg: Arc<ListenConfig>,
    router: Router,
    classifier: Arc<Classifier>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Connection {
    /// Starts the processor and reads `stream` (plain TCP or TLS) until it ends.
    async fn run<S: AsyncRead + Unpin + Send>(self, stream: S, peer_cert: Option<String>) {
        let (tx, rx) = mpsc::channel(READS_IN_FLIGHT);
        self.tracker.spawn(process(
            rx,
            self.peer.to_string(),
            peer_cert,
            self.cfg.format,
            self.classifier.clone(),
            self.router,
            self.metrics.clone(),
        ));
        let handler = Handler {
            stream,
            peer: self.peer,
            peer_guard: self.peer_guard,
            cfg: self.cfg,
            metrics: self.metrics,
            shutdown: self.shutdown,
        };
        handler.run(tx).await;
    }
}

/// Why a connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Eof,
    Idle,
    Shutdown,
    Error,
    ProcessorGone,
}

/// Reads one connection (plain TCP or TLS) and cuts it into frames.
#[derive(Debug)]
struct Handler<S> {
    /// The connection.
    stream: S,
    /// Its remote address.
    peer: SocketAddr,
    /// Its share of the per-IP limits (the slot is given back when the handler ends).
    peer_guard: PeerGuard,
    /// The listener's settings.
    cfg: Arc<ListenConfig>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown.
    shutdown: CancellationToken,
}

impl<S: AsyncRead + Unpin + Send> Handler<S> {
    /// Reads until EOF, idle timeout, error or shutdown; sends each read's frames to the processor.
    async fn run(mut self, tx: mpsc::Sender<Vec<Frame>>) {
        let started = Instant::now();
        let read_size = self.cfg.read_buffer_bytes;
        let max_buffered = self.cfg.max_buffered();
        let mut decoder = FrameDecoder::new(self.cfg.framing, self.cfg.max_frame_bytes)
            .with_trailer(self.cfg.trailer);
        let mut buf = BytesMut::with_capacity(read_size);
        let (mut bytes, mut frames_total, mut framing_errors) = (0u64, 0u64, 0u64);
        tracing::debug!(peer = %self.peer, "connection open");
        let close = loop {
            // Never more than max_buffered_bytes held for this connection.
            let room = read_room(&mut buf, read_size, max_buffered, &self.metrics);
            let read = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Close::Shutdown,
                r = read_with_timeout(&mut self.stream, &mut buf, room, self.cfg.idle_timeout()) => r,
            };
            match read {
                None => break Close::Idle,
                Some(Ok(0)) => break Close::Eof,
                Some(Ok(n)) => {
                    bytes += n as u64;
                    self.metrics.bytes.fetch_add(n as u64, Relaxed);
                }
                Some(Err(e)) => {
                    tracing::info!(peer = %self.peer, error = %e, "read failed");
                    break Close::Error;
                }
            }
            let frames = decode_available(&mut decoder, &mut buf, false);
            let n_frames = frames.len();
            frames_total += n_frames as u64;
            framing_errors += count_errors(&frames);
            if !frames.is_empty() && tx.send(frames).await.is_err() {
                break Close::ProcessorGone;
            }
            // Over the peer's message rate: what was read goes on, the next read waits.
            if let Some(wait) = self.peer_guard.throttle(n_frames) {
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => break Close::Shutdown,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        };
        if close == Close::Shutdown {
            // Take what the sender already sent (it sits in the kernel's socket buffer): read
            // until the socket has been quiet for SHUTDOWN_QUIET, EOF, or 16 reads, cutting
            // frames as they come so the buffer stays within max_buffered_bytes.
            for _ in 0..16 {
                let room = read_room(&mut buf, read_size, max_buffered, &self.metrics);
                let mut limited = (&mut buf).limit(room);
                match tokio::time::timeout(SHUTDOWN_QUIET, self.stream.read_buf(&mut limited)).await
                {
                    Ok(Ok(n)) if n > 0 => {
                        bytes += n as u64;
                        self.metrics.bytes.fetch_add(n as u64, Relaxed);
                    }
                    _ => break,
                }
                let frames = decode_available(&mut decoder, &mut buf, false);
                frames_total += frames.len() as u64;
                framing_errors += count_errors(&frames);
                if !frames.is_empty() && tx.send(frames).await.is_err() {
                    break;
                }
            }
        }
        // Whatever is left (a frame cut by the peer's disconnect, or by shutdown) becomes a record.
        let frames = decode_available(&mut decoder, &mut buf, true);
        frames_total += frames.len() as u64;
        framing_errors += count_errors(&frames);
        if !frames.is_empty() {
            let _ = tx.send(frames).await;
        }
        self.metrics.connections_closed.fetch_add(1, Relaxed);
        match close {
            Close::Idle => {
                tracing::info!(peer = %self.peer, idle_timeout_secs = self.cfg.idle_timeout_secs,
                "closing idle connection")
            }
            Close::ProcessorGone => {
                tracing::error!(peer = %self.peer, "record processing stopped; closing connection")
            }
            _ => {}
        }
        tracing::debug!(peer = %self.peer, ?close, bytes, frames = frames_total, framing_errors,
            secs = started.elapsed().as_secs_f64(), "connection closed");
    }
}

/// One read of at most `room` bytes, bounded by the idle timeout; `None` when it expired.
async fn read_with_timeout<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    room: usize,
    idle: Option<Duration>,
) -> Option<io::Result<usize>> {
    let mut limited = buf.limit(room);
    match idle {
        Some(d) => tokio::time::timeout(d, stream.read_buf(&mut limited))
            .await
            .ok(),
        None => Some(stream.read_buf(&mut limited).await),
    }
}

/// Every frame the buffer holds; with `eof`, also what is left at the end of the stream.
fn decode_available(decoder: &mut FrameDecoder, buf: &mut BytesMut, eof: bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        let next = if eof {
            decoder.decode_eof(buf)
        } else {
            decoder.decode(buf)
        };
        match next {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break,
            Err(e) => {
                // The decoders do not fail on data; this is a bug, not input.
                tracing::error!(error = %e, "frame decoder failed");
                break;
            }
        }
    }
    frames
}

fn count_errors(frames: &[Frame]) -> u64 {
    frames
        .iter()
        .filter(|f| matches!(f.kind, FrameKind::Error(_)))
        .count() as u64
}

/// The processor of one connection: encodes each read's frames into a batch and routes it.
async fn process(
    mut rx: mpsc::Receiver<Vec<Frame>>,
    peer: String,
    peer_cert: Option<String>,
    format: Format,
    classifier: Arc<Classifier>,
    router: Router,
    metrics: Arc<Metrics>,
) {
    let encoder = Encoder::new(format, &classifier);
    let mut counts = BatchCounts::new(classifier.categories().len());
    let mut out = BytesMut::new();
    while let Some(frames) = rx.recv().await {
        let received_at = now_rfc3339();
        let ctx = RecordContext {
            received_at: &received_at,
            peer: Some(&peer),
            peer_cert: peer_cert.as_deref(),
        };
        let batch = encode_batch(&encoder, &router, frames, &ctx, &mut out, &mut counts);
        metrics.add(&counts);
        counts.clear();
        if let Err(closed) = router.send(batch).await {
            tracing::error!(output = closed.0, "output stopped; cannot deliver");
            break;
        }
    }
}

/// Encodes `frames` into one [`Batch`] (reusing `out`'s allocation when it can).
pub fn encode_batch(
    encoder: &Encoder<'_>,
    router: &Router,
    frames: Vec<Frame>,
    ctx: &RecordContext<'_>,
    out: &mut BytesMut,
    counts: &mut BatchCounts,
) -> Batch {
    let total: usize = frames.iter().map(|f| f.data.len()).sum();
    out.reserve(total + total / 2 + 256 * frames.len());
    let mut lines = Vec::with_capacity(frames.len());
    let (mut all, mut any) = (u64::MAX, 0u64);
    for f in &frames {
        let facts = encoder.encode(f, ctx, out, counts);
        let mask = router.mask(&facts);
        lines.push(Line {
            end: out.len() as u32,
            mask,
        });
        all &= mask;
        any |= mask;
    }
    Batch {
        json: out.split().freeze(),
        lines,
        all,
        any,
        frames,
    }
}

/// Runs the server of `config` until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<Stopped, ConfigError> {
    let server = Server::start(&config).await?;
    let token = server.shutdown_token();
    let metrics = server.metrics();
    let reload = server.tls_reload();
    let sighup = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; TLS certificates will not be reloaded");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading TLS certificates");
            // Errors are logged by reload(); the old certificates stay in use.
            let _ = reload.reload();
        }
    });
    let summary = (config.server.summary_interval_secs > 0).then(|| {
        tokio::spawn(crate::metrics::summary_loop(
            metrics.clone(),
            Duration::from_secs(config.server.summary_interval_secs),
        ))
    });
    tokio::spawn(async move {
        if let Err(e) = wait_for_signal().await {
            tracing::error!(error = %e, "cannot listen for signals");
            return;
        }
        tracing::info!("shutting down: no new connections; draining and flushing (a second signal exits at once)");
        token.cancel();
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal: exiting without waiting for outputs");
            std::process::exit(130);
        }
    });
    let started = Instant::now();
    let stopped = server
        .run(Duration::from_secs(config.server.shutdown_grace_secs))
        .await;
    if let Some(s) = summary {
        s.abort();
    }
    sighup.abort();
    tracing::info!(target: "syslog_sink::summary", "{}", metrics.summary(0, started.elapsed()));
    match stopped {
        Stopped::Clean => tracing::info!("stopped: every record read was written"),
        Stopped::GraceExpired => tracing::error!(
            grace_secs = config.server.shutdown_grace_secs,
            "stopped before the outputs finished: records still queued were not written"
        ),
    }
    Ok(stopped)
}

async fn wait_for_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
