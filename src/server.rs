//! Server: listeners, connections, limits and graceful shutdown.
//!
//! [`Server::start`] binds every `[[listen]]` socket and starts every output. Each
//! [`Listener`] accepts connections under a connection limit (a semaphore) and gives each one
//! three tasks: the *reader* (`Handler`) reads into one `BytesMut` and cuts it into frames
//! (zero-copy `Bytes`), and two *processors* take its reads in turn, each parsing, classifying
//! and encoding a whole read's frames into one batch and handing it to the [`Router`] when the
//! batch of the read before has gone (a ring of turns keeps the connection's records in order).
//! Bounded channels (one read per processor) join them, so one connection keeps both cores
//! busy, and a full output queue or a spent in-flight budget stops the reads (TCP backpressure).
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
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::buffer::DiskBuffer;
use crate::config::{AtLimit, Config, ConfigError, ListenConfig, OutputType};
use crate::framing::{Frame, FrameDecoder, FrameKind};
use crate::limits::{read_room, PeerGuard, PeerLimits};
use crate::metrics::{BatchCounts, Metrics};
use crate::output::{
    self, file::FileOutput, http::HttpOutput, kafka::KafkaOutput, nats::NatsOutput,
    stdout::StdoutOutput, syslog::SyslogOutput,
};
use crate::parse::Format;
use crate::record::{now_rfc3339, Encoder, RecordContext};
use crate::reload::{Reloader, Rules, SharedRules};
use crate::route::{mask_with, Batch, Budget, Filter, Line, QueueProbe, Router, Share};
use crate::tls::{TlsListener, TlsReload};

/// A read's share of the in-flight budget, in multiples of its frames' bytes: the frames
/// themselves and the JSON records made of them (about 1.5 times their size, more for short
/// messages).
const INFLIGHT_FACTOR: usize = 3;
/// Processors per connection: reads go to them in turn and their batches leave in read order,
/// so one busy connection can use more than one core for parsing and encoding.
const PROCESSORS: usize = 2;
/// Reads waiting between a connection's reader and each of its processors.
const READS_IN_FLIGHT: usize = 1;
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
    /// Classification rules and output filters in use (swapped on reload).
    rules: SharedRules,
    /// Reads the outputs' queue depths.
    probe: QueueProbe,
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
        let filters: Vec<_> = config.output.iter().map(|o| o.filter.clone()).collect();
        let rules = Rules::build(config, &filters, None, 0)?;
        let output_names: Vec<String> = config.output.iter().map(|o| o.name.clone()).collect();
        let listen_addrs: Vec<String> = config.listen.iter().map(|l| l.address.clone()).collect();
        let metrics = Arc::new(
            Metrics::new(rules.classifier.categories(), &output_names)
                .with_listeners(&listen_addrs),
        );
        let rules: SharedRules = Arc::new(arc_swap::ArcSwap::from_pointee(rules));
        let mut router = Router::with_budget(config.server.max_inflight_bytes);
        let mut outputs = Vec::new();
        for (i, o) in config.output.iter().enumerate() {
            // Records are routed with the live filters of `rules` (see `process`).
            let rx = router.add(None::<Filter>, o.queue_batches);
            let m = metrics.clone();
            let buffer = match o.buffer_config(&config.server.data_dir) {
                Some(b) => {
                    let opened = DiskBuffer::open(&b, o.kind.buffers_frames(), i, m.clone())
                        .map_err(|e| {
                            ConfigError(format!("output[{i}] {:?}.buffer: {e}", o.name))
                        })?;
                    tracing::info!(output = %o.name, path = ?b.path, max_bytes = b.max_bytes,
                        fsync_interval_ms = b.fsync_interval_ms, "disk buffer ready");
                    Some(opened)
                }
                None => None,
            };
            let spawned = match o.kind {
                OutputType::File => {
                    let path = o.path.as_deref().unwrap_or(std::path::Path::new(""));
                    let out = FileOutput::open(path)
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}: {e}", o.name)))?;
                    spawn_output(out, i, rx, o, m, buffer)
                }
                OutputType::Stdout => spawn_output(StdoutOutput::new(), i, rx, o, m, buffer),
                OutputType::Syslog => {
                    let out = SyslogOutput::new(o, i, m.clone())
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}.{e}", o.name)))?;
                    spawn_output(out, i, rx, o, m, buffer)
                }
                OutputType::Http => {
                    let out = HttpOutput::new(o, i, m.clone())
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}.{e}", o.name)))?;
                    spawn_output(out, i, rx, o, m, buffer)
                }
                OutputType::Nats => {
                    let out = NatsOutput::new(o, i, m.clone())
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}.{e}", o.name)))?;
                    spawn_output(out, i, rx, o, m, buffer)
                }
                OutputType::Kafka => {
                    let out = KafkaOutput::new(o, i, m.clone())
                        .map_err(|e| ConfigError(format!("output[{i}] {:?}.{e}", o.name)))?;
                    spawn_output(out, i, rx, o, m, buffer)
                }
            };
            let handle = spawned
                .map_err(|e| ConfigError(format!("output[{i}] {:?}: cannot start: {e}", o.name)))?;
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
                i,
                tls,
                router.clone(),
                rules.clone(),
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
            probe: router.probe(),
            router: Some(router),
            metrics,
            tls_reload: TlsReload::new(tls_listeners),
            rules,
        })
    }

    /// The classification rules and output filters in use; a [`Reloader`] swaps them.
    pub fn rules(&self) -> SharedRules {
        self.rules.clone()
    }

    /// Reads the outputs' queue depths (does not keep the queues open).
    pub fn queue_probe(&self) -> QueueProbe {
        self.probe.clone()
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

/// Runs output `out` (number `i`, config `o`) in its own task: behind its disk buffer when it
/// has one ([`crate::buffer::run`]), else straight from its queue ([`output::run`]).
fn spawn_output<O: output::Output>(
    out: O,
    i: usize,
    rx: crate::route::Receiver,
    o: &crate::config::OutputConfig,
    metrics: Arc<Metrics>,
    buffer: Option<DiskBuffer>,
) -> io::Result<JoinHandle<()>> {
    match buffer {
        Some(b) => crate::buffer::run(b, out, i, rx, o.flush_interval(), o.queue_batches),
        None => Ok(tokio::spawn(output::run(
            out,
            i,
            rx,
            o.flush_interval(),
            metrics,
        ))),
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
    /// Its index in the config (its [`crate::metrics::ListenerMetrics`]).
    index: usize,
    /// TLS state when the listener has `[listen.tls]`.
    tls: Option<Arc<TlsListener>>,
    /// One permit per open connection.
    limit: Arc<Semaphore>,
    /// Per-peer-IP connection count and message rate.
    peers: Arc<PeerLimits>,
    /// Where the connections' batches go.
    router: Router,
    /// Classification rules and output filters in use.
    rules: SharedRules,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown.
    shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    tracker: TaskTracker,
}

impl Listener {
    /// Binds the socket of `cfg` (listener `index` of the config); with `tls`, connections
    /// must speak TLS.
    #[allow(clippy::too_many_arguments)]
    pub async fn bind(
        cfg: &ListenConfig,
        index: usize,
        tls: Option<Arc<TlsListener>>,
        router: Router,
        rules: SharedRules,
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
        if let Some(l) = metrics.listeners.get(index) {
            let _ = l.bound.set(local_addr);
        }
        tracing::info!(address = %local_addr, tls = tls.is_some(), framing = ?cfg.framing, format = ?cfg.format,
            max_frame_bytes = cfg.max_frame_bytes, max_connections = cfg.max_connections, "listening");
        Ok(Listener {
            listener,
            local_addr,
            tls,
            limit: Arc::new(Semaphore::new(cfg.max_connections)),
            peers: Arc::new(PeerLimits::new(cfg, metrics.clone())),
            cfg: Arc::new(cfg.clone()),
            index,
            router,
            rules,
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
                        if let Some(l) = self.metrics.listeners.get(self.index) {
                            l.refused.fetch_add(1, Relaxed);
                        }
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
                if let Some(l) = self.metrics.listeners.get(self.index) {
                    l.refused.fetch_add(1, Relaxed);
                }
                drop((stream, permit));
                continue;
            };
            self.metrics.connections_accepted.fetch_add(1, Relaxed);
            if let Some(l) = self.metrics.listeners.get(self.index) {
                l.accepted.fetch_add(1, Relaxed);
            }
            let conn = Connection {
                peer,
                permit,
                peer_guard,
                cfg: self.cfg.clone(),
                index: self.index,
                router: self.router.clone(),
                rules: self.rules.clone(),
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
                                if let Some(l) = conn.metrics.listeners.get(conn.index) {
                                    l.closed.fetch_add(1, Relaxed);
                                }
                            }
                        }
                    }
                }
            });
        }
        tracing::debug!(address = %self.local_addr, "listener stopped");
    }
}

/// What a connection's reader and processor share, before the stream is known.
struct Connection {
    peer: SocketAddr,
    /// Its slot under `max_connections`.
    permit: OwnedSemaphorePermit,
    peer_guard: PeerGuard,
    cfg: Arc<ListenConfig>,
    index: usize,
    router: Router,
    rules: SharedRules,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Connection {
    /// Starts the processors and reads `stream` (plain TCP or TLS) until it ends.
    async fn run<S: AsyncRead + Unpin + Send>(self, stream: S, peer_cert: Option<String>) {
        let budget = self.router.budget().cloned();
        let peer = self.peer.to_string();
        // A ring of turns: processor i routes its batch once processor i-1 has routed the
        // read before it. The first holds the first turn.
        let turns: Vec<_> = (0..PROCESSORS).map(|_| mpsc::channel::<()>(1)).collect();
        let (turn_txs, turn_rxs): (Vec<_>, Vec<_>) = turns.into_iter().unzip();
        let _ = turn_txs[0].try_send(());
        let mut txs = Vec::with_capacity(PROCESSORS);
        for (i, my_turn) in turn_rxs.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(READS_IN_FLIGHT);
            txs.push(tx);
            self.tracker.spawn(process(
                rx,
                Turn {
                    mine: my_turn,
                    next: turn_txs[(i + 1) % PROCESSORS].clone(),
                },
                peer.clone(),
                peer_cert.clone(),
                self.cfg.format,
                self.rules.clone(),
                self.router.clone(),
                self.metrics.clone(),
            ));
        }
        drop(turn_txs);
        let handler = Handler {
            budget,
            stream,
            peer: self.peer,
            permit: self.permit,
            peer_guard: self.peer_guard,
            cfg: self.cfg,
            index: self.index,
            metrics: self.metrics,
            shutdown: self.shutdown,
        };
        handler.run(Dispatch { txs, next: 0 }).await;
    }
}

/// The reader's side of the processors: hands each read to the next processor in turn.
#[derive(Debug)]
struct Dispatch {
    txs: Vec<mpsc::Sender<Read>>,
    next: usize,
}

impl Dispatch {
    /// Sends `read` to the next processor; `Err` when it is gone.
    async fn send(&mut self, read: Read) -> Result<(), ()> {
        let tx = &self.txs[self.next];
        self.next = (self.next + 1) % self.txs.len();
        tx.send(read).await.map_err(|_| ())
    }
}

/// A processor's place in the ring of turns that keeps batches in read order.
#[derive(Debug)]
struct Turn {
    /// Receives the turn when the previous read's batch has been routed.
    mine: mpsc::Receiver<()>,
    /// Passes the turn on to the processor of the next read.
    next: mpsc::Sender<()>,
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
    /// Its slot under `max_connections`, given back (like `peer_guard`) before the socket is
    /// closed, so that a sender that sees the close can connect again at once.
    permit: OwnedSemaphorePermit,
    /// Its share of the per-IP limits (the slot is given back when the handler ends).
    peer_guard: PeerGuard,
    /// The listener's settings.
    cfg: Arc<ListenConfig>,
    /// The listener's index (its [`crate::metrics::ListenerMetrics`]).
    index: usize,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown.
    shutdown: CancellationToken,
    /// The process's in-flight memory bound: each read's frames take their share before they go on.
    budget: Option<Budget>,
}

/// One read's frames and their share of the in-flight budget.
type Read = (Vec<Frame>, Option<Share>);

impl<S: AsyncRead + Unpin + Send> Handler<S> {
    /// Takes the in-flight share of `frames`, waiting (and so not reading) while the budget is
    /// spent; at shutdown the frames go on without one. One take per read, for the frames and
    /// the JSON to be made of them (`INFLIGHT_FACTOR` times the frames' bytes): a connection
    /// never holds a share while waiting for another, so the budget cannot deadlock.
    async fn share(&self, frames: &[Frame]) -> Option<Share> {
        let budget = self.budget.as_ref()?;
        let bytes = INFLIGHT_FACTOR * frames.iter().map(|f| f.data.len()).sum::<usize>();
        if let Some(s) = budget.try_take(bytes) {
            return Some(s);
        }
        self.metrics.budget_waits.fetch_add(1, Relaxed);
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            s = budget.take(bytes) => s,
        }
    }

    /// Reads until EOF, idle timeout, error or shutdown; sends each read's frames to the processor.
    async fn run(mut self, mut tx: Dispatch) {
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
                    self.listener_count(n as u64, 0);
                }
                Some(Err(e)) => {
                    tracing::info!(peer = %self.peer, error = %e, "read failed");
                    break Close::Error;
                }
            }
            let frames = decode_available(&mut decoder, &mut buf, false);
            let n_frames = frames.len();
            frames_total += n_frames as u64;
            self.listener_count(0, n_frames as u64);
            framing_errors += count_errors(&frames);
            if !frames.is_empty() {
                let share = self.share(&frames).await;
                if tx.send((frames, share)).await.is_err() {
                    break Close::ProcessorGone;
                }
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
                        self.listener_count(n as u64, 0);
                    }
                    _ => break,
                }
                let frames = decode_available(&mut decoder, &mut buf, false);
                frames_total += frames.len() as u64;
                self.listener_count(0, frames.len() as u64);
                framing_errors += count_errors(&frames);
                if !frames.is_empty() && tx.send((frames, None)).await.is_err() {
                    break;
                }
            }
        }
        // Whatever is left (a frame cut by the peer's disconnect, or by shutdown) becomes a record.
        let frames = decode_available(&mut decoder, &mut buf, true);
        frames_total += frames.len() as u64;
        self.listener_count(0, frames.len() as u64);
        framing_errors += count_errors(&frames);
        if !frames.is_empty() {
            let _ = tx.send((frames, None)).await;
        }
        self.metrics.connections_closed.fetch_add(1, Relaxed);
        if let Some(l) = self.metrics.listeners.get(self.index) {
            l.closed.fetch_add(1, Relaxed);
        }
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
        // The slots first, then the socket: a sender that sees the close finds them free.
        let Handler {
            stream,
            permit,
            peer_guard,
            ..
        } = self;
        drop(permit);
        drop(peer_guard);
        drop(stream);
    }
}

impl<S> Handler<S> {
    /// Counts bytes read and frames cut on the listener.
    fn listener_count(&self, bytes: u64, frames: u64) {
        if let Some(l) = self.metrics.listeners.get(self.index) {
            if bytes > 0 {
                l.bytes.fetch_add(bytes, Relaxed);
            }
            if frames > 0 {
                l.frames.fetch_add(frames, Relaxed);
            }
        }
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

/// One of the processors of a connection: encodes each read it gets into a batch and routes it
/// when its turn comes (after the batch of the read before).
#[allow(clippy::too_many_arguments)]
async fn process(
    mut rx: mpsc::Receiver<Read>,
    mut turn: Turn,
    peer: String,
    peer_cert: Option<String>,
    format: Format,
    rules: SharedRules,
    router: Router,
    metrics: Arc<Metrics>,
) {
    let mut counts = BatchCounts::default();
    let mut generation = None;
    let mut sizer = JsonSizer::default();
    while let Some((frames, share)) = rx.recv().await {
        let received_at = now_rfc3339();
        let ctx = RecordContext {
            received_at: &received_at,
            peer: Some(&peer),
            peer_cert: peer_cert.as_deref(),
        };
        // The rules in use, once per batch (a reload takes effect at the next batch).
        let rules_now = rules.load_full();
        if generation != Some(rules_now.generation) {
            counts = BatchCounts::new(rules_now.classifier.categories().len());
            counts.detail.set_failures(&rules_now.failure);
            generation = Some(rules_now.generation);
        }
        let encoder = Encoder::new(format, &rules_now.classifier);
        let mut batch = encode_batch(
            &encoder,
            &rules_now.filters,
            frames,
            &ctx,
            &mut sizer,
            &mut counts,
        );
        batch.budget = share.map(Arc::new);
        if turn.mine.recv().await.is_none() {
            // The processor before stopped (its outputs are gone): so do we.
            metrics.add_mapped(&counts, rules_now.slots.as_deref(), &batch.frames);
            break;
        }
        // Counted in read order too (the last failure events stay in order).
        metrics.add_mapped(&counts, rules_now.slots.as_deref(), &batch.frames);
        counts.clear();
        if let Err(closed) = router.send(batch).await {
            tracing::error!(output = closed.0, "output stopped; cannot deliver");
            break;
        }
        let _ = turn.next.try_send(());
    }
}

/// Sizes each batch's JSON buffer from the previous batches' JSON-to-frame ratio, so that a
/// batch allocates about what it needs: its buffer lives until every output is done with it,
/// and spare capacity there (or a buffer shared with the next batch) would be memory held for
/// nothing, times the number of connections.
#[derive(Debug, Clone, Copy)]
pub struct JsonSizer {
    /// JSON bytes per 1,024 frame bytes, from the last batch (the PKS sample: about 1,300).
    per_kib: usize,
}

impl Default for JsonSizer {
    fn default() -> Self {
        JsonSizer { per_kib: 1536 }
    }
}

impl JsonSizer {
    /// Capacity for the JSON of `frames` bytes in `n` frames: the learnt ratio plus 1/8, and
    /// 64 bytes a frame.
    pub fn capacity(&self, frame_bytes: usize, n: usize) -> usize {
        let est = frame_bytes / 1024 * self.per_kib + frame_bytes % 1024 * self.per_kib / 1024;
        est + est / 8 + 64 * n + 256
    }

    /// Learns from a batch: `json` bytes made of `frame_bytes`.
    pub fn learn(&mut self, frame_bytes: usize, json: usize) {
        if frame_bytes >= 4096 {
            self.per_kib = (json / (frame_bytes / 1024)).clamp(256, 16 * 1024);
        }
    }
}

/// Encodes `frames` into one [`Batch`], its JSON in a buffer of its own sized by `sizer`,
/// routed by `filters` (one per output, see [`mask_with`]).
pub fn encode_batch(
    encoder: &Encoder<'_>,
    filters: &[Option<Filter>],
    frames: Vec<Frame>,
    ctx: &RecordContext<'_>,
    sizer: &mut JsonSizer,
    counts: &mut BatchCounts,
) -> Batch {
    let total: usize = frames.iter().map(|f| f.data.len()).sum();
    let mut out = BytesMut::with_capacity(sizer.capacity(total, frames.len()));
    let out = &mut out;
    let mut lines = Vec::with_capacity(frames.len());
    let (mut all, mut any) = (u64::MAX, 0u64);
    for f in &frames {
        let facts = encoder.encode(f, ctx, out, counts);
        let mask = mask_with(filters, &facts);
        lines.push(Line {
            end: out.len() as u32,
            mask,
        });
        all &= mask;
        any |= mask;
    }
    sizer.learn(total, out.len());
    Batch {
        json: out.split().freeze(),
        lines,
        all,
        any,
        frames,
        budget: None,
    }
}

/// Runs the server of `config` until SIGINT or SIGTERM, then shuts down gracefully.
///
/// With `config_path` (the file `config` was read from), SIGHUP reloads classification rules,
/// output filters and TLS certificates from it ([`Reloader`]); without, SIGHUP reloads the TLS
/// certificates only. The admin listener (`[admin] address`) is bound before anything starts,
/// so a port in use is an error naming the key.
pub async fn serve(
    config: Config,
    config_path: Option<&std::path::Path>,
) -> Result<Stopped, ConfigError> {
    let admin_listener = match config.admin.socket_addr()? {
        Some(addr) => Some(crate::admin::bind(addr).await?),
        None => None,
    };
    let server = Server::start(&config).await?;
    let token = server.shutdown_token();
    let metrics = server.metrics();
    let reload = server.tls_reload();
    let reloader = config_path.map(|p| {
        Arc::new(Reloader::new(
            p.to_path_buf(),
            config.clone(),
            server.rules(),
            metrics.clone(),
            reload.clone(),
        ))
    });
    let admin = admin_listener.map(|l| {
        let state = crate::admin::AdminState::new(&config, &server, reloader.clone());
        // Not stopped by the shutdown token: during the drain /readyz answers 503 "shutting
        // down" (a load balancer stops sending); the task is aborted once the server stopped.
        tokio::spawn(crate::admin::run(l, state, CancellationToken::new()))
    });
    let sighup = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; the config will not be reloaded");
                return;
            }
        };
        while hup.recv().await.is_some() {
            match &reloader {
                Some(r) => {
                    tracing::info!("SIGHUP: reloading the config");
                    // Logged by reload(); on error the rules in use stay.
                    let _ = r.reload();
                }
                None => {
                    tracing::info!("SIGHUP: reloading TLS certificates");
                    // Errors are logged by reload(); the old certificates stay in use.
                    let _ = reload.reload();
                }
            }
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
    if let Some(a) = admin {
        a.abort();
    }
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
