//! `syslog` output: forwards records as RFC 5424 syslog to another receiver over TCP or TLS
//! (RFC 5425), octet-counted or LF-framed (RFC 6587), with at-least-once delivery up to the
//! receiver's socket.
//!
//! **What goes on the wire.** With `passthrough = true` each received frame is sent byte for
//! byte (the frame's own `Bytes`, no copy), whatever it is: a message that did not parse, a
//! truncated message (its kept prefix) and the bytes of a framing error are forwarded raw too, so
//! the receiver sees what the sender sent. With `passthrough = false` each frame is parsed again
//! (`Format::Auto`) and written as RFC 5424: PRI, VERSION 1, TIMESTAMP (an RFC 3164 timestamp
//! without a year becomes NILVALUE), HOSTNAME, APP-NAME, PROCID, MSGID (characters outside
//! PRINTUSASCII replaced by `_`, cut to RFC 5424's lengths, NILVALUE when absent),
//! STRUCTURED-DATA with PARAM-VALUEs re-escaped, and MSG (with its BOM when it had one). A frame
//! that does not parse, or was truncated or is a framing error, is sent as its raw bytes. With
//! `framing = "lf"` one trailing LF of a message is dropped (the LF trailer replaces it); a LF
//! inside a message splits it at the receiver, as with any LF framing.
//!
//! **Delivery.** Every batch taken from the queue is kept in a bounded window until it is
//! *confirmed*: it was written to a connection, at least `confirm_after` has passed since, and a
//! check of that connection then finds it still open (a read returns "would block": no EOF, no
//! reset). When a write fails, or a check finds the connection closed by the peer or reset, the
//! output reconnects (capped exponential backoff with jitter) and writes the whole window again,
//! oldest first. So nothing taken is lost while the process runs, and messages the receiver had
//! already received before a failure may arrive twice. TCP carries no application
//! acknowledgement: a receiver that read a message into memory and then crashed before storing
//! it, more than `confirm_after` after the write, loses it. While disconnected the output does
//! not take new batches: its queue fills and the listeners slow down (backpressure).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Output;
use crate::config::{
    ConfigError, ForwardFraming, ForwardTlsConfig, OutputConfig, DEFAULT_CONFIRM_AFTER_MS,
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_KEEPALIVE_SECS, DEFAULT_MAX_BACKOFF_MS,
    DEFAULT_MAX_UNCONFIRMED_BYTES, DEFAULT_WRITE_TIMEOUT_MS,
};
use crate::framing::FrameKind;
use crate::metrics::{Metrics, OutputMetrics};
use crate::parse::{self, Format, Message, Protocol};
use crate::route::Batch;
use crate::tls::{load_certs, load_key, provider, TlsError};

/// Socket options of a forwarding connection: no Nagle delay, TCP keepalive after `keepalive`
/// idle (probes every third of it, the kernel's count), and on Linux `TCP_USER_TIMEOUT` =
/// `write_timeout`, so a receiver that vanished without FIN or RST fails the connection in
/// seconds instead of the kernel's retransmission timeout (minutes).
pub fn tune(
    tcp: &TcpStream,
    keepalive: Option<Duration>,
    write_timeout: Option<Duration>,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let sock = socket2::SockRef::from(tcp);
    if let Some(idle) = keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 3).max(Duration::from_secs(1)));
        sock.set_tcp_keepalive(&ka)?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(t) = write_timeout {
        sock.set_tcp_user_timeout(Some(t))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = write_timeout;
    Ok(())
}

/// First wait before reconnecting; doubles up to `max_backoff_ms`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// `host` and `port` of `host:port` (`[v6]:port` too); `None` when it is not that.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty() && port != 0).then_some((host, port))
}

/// The rustls client config of `[output.tls]`: the receiver is verified against `ca`; with
/// `cert` and `key` a client certificate is presented.
pub fn client_config(t: &ForwardTlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    if t.cert.is_some() != t.key.is_some() {
        return Err(TlsError {
            key: if t.cert.is_some() { "key" } else { "cert" },
            reason: "cert and key go together (a client certificate needs its key)".into(),
        });
    }
    let mut roots = RootCertStore::empty();
    for c in load_certs("ca", &t.ca)? {
        roots.add(c).map_err(|e| TlsError {
            key: "ca",
            reason: format!("{}: unusable CA certificate ({e})", t.ca.display()),
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: "ca",
            reason: format!("TLS setup failed: {e}"),
        })?
        .with_root_certificates(roots);
    let config = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs("cert", cert)?, load_key(key)?)
            .map_err(|e| TlsError {
                key: "key",
                reason: format!("{} does not go with {}: {e}", key.display(), cert.display()),
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A connection to the receiver, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// One batch's messages, encoded for the wire, kept until confirmed.
#[derive(Debug)]
struct Entry {
    chunks: Vec<Bytes>,
    records: u64,
    bytes: u64,
    /// When it was last written (on the current connection).
    written_at: Instant,
    /// Times it was written (more than once: resent after a failure).
    sends: u32,
}

/// What a check of the connection found.
#[derive(Debug)]
enum Health {
    Open,
    Closed(io::Error),
}

/// Forwards records to a syslog receiver; see the [module documentation](self).
pub struct SyslogOutput {
    address: String,
    framing: ForwardFraming,
    passthrough: bool,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// TCP keepalive idle time; `None` = off.
    keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`; `None` = the kernel's default.
    write_timeout: Option<Duration>,
    max_backoff: Duration,
    confirm_after: Duration,
    max_unconfirmed: usize,
    conn: Option<Box<dyn Stream>>,
    /// Unconfirmed batches, oldest first; the first `written` were written to `conn`.
    window: VecDeque<Entry>,
    window_bytes: usize,
    written: usize,
    /// Whether a connection was ever made (later ones count as reconnects).
    connected_once: bool,
    /// Whether the last state logged was "down" (log once per state change).
    logged_down: bool,
    /// Records confirmed since the output was made ([`Output::confirmed`]).
    confirmed_total: u64,
    rng: u64,
    metrics: Arc<Metrics>,
    index: usize,
}

impl std::fmt::Debug for SyslogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogOutput")
            .field("address", &self.address)
            .field("framing", &self.framing)
            .field("passthrough", &self.passthrough)
            .field("tls", &self.tls.is_some())
            .field("connected", &self.conn.is_some())
            .field("unconfirmed_batches", &self.window.len())
            .finish()
    }
}

impl SyslogOutput {
    /// The output of `cfg` (a checked `type = "syslog"` output), counting in output `index` of
    /// `metrics`. Does not connect: the startup probe or the first batch does.
    pub fn new(
        cfg: &OutputConfig,
        index: usize,
        metrics: Arc<Metrics>,
    ) -> Result<SyslogOutput, ConfigError> {
        let address = cfg.address.clone().unwrap_or_default();
        let Some((host, _)) = split_host_port(&address) else {
            return Err(ConfigError(format!(
                "address: {address:?} is not host:port"
            )));
        };
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let config = client_config(t).map_err(|e| ConfigError(format!("tls.{e}")))?;
                let name = t.server_name.as_deref().unwrap_or(host).to_string();
                let name = ServerName::try_from(name.clone()).map_err(|e| {
                    ConfigError(format!(
                        "tls.server_name: {name:?} is not a DNS name or IP ({e})"
                    ))
                })?;
                Some((TlsConnector::from(config), name))
            }
        };
        Ok(SyslogOutput {
            address,
            framing: cfg.framing.unwrap_or_default(),
            passthrough: cfg.passthrough.unwrap_or(false),
            tls,
            connect_timeout: Duration::from_millis(
                cfg.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
            ),
            keepalive: Some(cfg.keepalive_secs.unwrap_or(DEFAULT_KEEPALIVE_SECS))
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            write_timeout: Some(cfg.write_timeout_ms.unwrap_or(DEFAULT_WRITE_TIMEOUT_MS))
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            max_backoff: Duration::from_millis(
                cfg.max_backoff_ms.unwrap_or(DEFAULT_MAX_BACKOFF_MS),
            ),
            confirm_after: Duration::from_millis(
                cfg.confirm_after_ms.unwrap_or(DEFAULT_CONFIRM_AFTER_MS),
            ),
            max_unconfirmed: cfg
                .max_unconfirmed_bytes
                .unwrap_or(DEFAULT_MAX_UNCONFIRMED_BYTES),
            conn: None,
            window: VecDeque::new(),
            window_bytes: 0,
            written: 0,
            connected_once: false,
            logged_down: false,
            confirmed_total: 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1),
            metrics,
            index,
        })
    }

    fn m(&self) -> Option<&OutputMetrics> {
        self.metrics.outputs.get(self.index)
    }

    fn name(&self) -> &str {
        self.m().map_or("syslog", |m| m.name.as_str())
    }

    /// Encodes the messages of `batch` output `bit` wants.
    fn encode(&self, batch: &Batch, bit: u64) -> Entry {
        let mut chunks = Vec::new();
        let mut records = 0;
        let mut headers = BytesMut::new();
        let mut body = BytesMut::new();
        let mut scratch = Vec::new();
        // Octet-counting headers of passthrough frames: one buffer, split per frame.
        let mut header_ends = Vec::new();
        let wanted = batch
            .lines
            .iter()
            .zip(&batch.frames)
            .filter(|(l, _)| l.mask & bit != 0)
            .map(|(_, f)| f);
        for frame in wanted {
            records += 1;
            let raw = &frame.data;
            if self.passthrough {
                let data = match self.framing {
                    ForwardFraming::Lf => strip_lf(raw),
                    ForwardFraming::Octet => raw.clone(),
                };
                match self.framing {
                    ForwardFraming::Octet => {
                        headers.put_slice(format!("{} ", data.len()).as_bytes());
                        header_ends.push(headers.len());
                        chunks.push(Bytes::new()); // header placeholder, filled below
                        chunks.push(data);
                    }
                    ForwardFraming::Lf => {
                        chunks.push(data);
                        chunks.push(Bytes::from_static(b"\n"));
                    }
                }
                continue;
            }
            scratch.clear();
            let parsed = match frame.kind {
                FrameKind::Complete => parse::parse(raw, Format::Auto).ok(),
                _ => None,
            };
            match parsed {
                Some(msg) => write_5424(&mut scratch, &msg),
                None => scratch.extend_from_slice(raw),
            }
            if self.framing == ForwardFraming::Lf && scratch.last() == Some(&b'\n') {
                scratch.pop();
            }
            match self.framing {
                ForwardFraming::Octet => {
                    body.put_slice(format!("{} ", scratch.len()).as_bytes());
                    body.put_slice(&scratch);
                }
                ForwardFraming::Lf => {
                    body.put_slice(&scratch);
                    body.put_u8(b'\n');
                }
            }
        }
        if !header_ends.is_empty() {
            let headers = headers.freeze();
            let mut start = 0;
            let mut ends = header_ends.into_iter();
            for c in chunks.iter_mut().step_by(2) {
                if let Some(end) = ends.next() {
                    *c = headers.slice(start..end);
                    start = end;
                }
            }
        }
        if !body.is_empty() {
            chunks.push(body.freeze());
        }
        let bytes = chunks.iter().map(|c| c.len() as u64).sum();
        Entry {
            chunks,
            records,
            bytes,
            written_at: Instant::now(),
            sends: 0,
        }
    }

    /// Jittered `d`: between half and all of it.
    fn jitter(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        half + Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1))
    }

    /// One connection attempt (TCP, then the TLS handshake when configured).
    async fn connect_once(&self) -> io::Result<Box<dyn Stream>> {
        let tcp = TcpStream::connect(self.address.as_str()).await?;
        tune(&tcp, self.keepalive, self.write_timeout)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let s = connector.connect(name.clone(), tcp).await?;
                Ok(Box::new(s))
            }
        }
    }

    /// One connection attempt within `connect_timeout`; on success the connection is the
    /// output's and the state `Up`.
    async fn try_connect(&mut self) -> io::Result<()> {
        let c = match tokio::time::timeout(self.connect_timeout, self.connect_once()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                ))
            }
        };
        if self.connected_once {
            if let Some(m) = self.m() {
                m.reconnects.fetch_add(1, Relaxed);
            }
        }
        tracing::info!(output = %self.name(), address = %self.address,
            resending = self.window.iter().map(|e| e.records).sum::<u64>(),
            "syslog output connected");
        self.connected_once = true;
        self.logged_down = false;
        if let Some(m) = self.m() {
            m.set_state(crate::metrics::OutputState::Up);
        }
        self.conn = Some(c);
        self.written = 0;
        Ok(())
    }

    /// Connects, retrying with capped exponential backoff (with jitter) until it succeeds.
    async fn connect(&mut self) {
        let mut delay = FIRST_BACKOFF.min(self.max_backoff);
        loop {
            match self.try_connect().await {
                Ok(()) => return,
                Err(e) => {
                    if let Some(m) = self.m() {
                        m.errors.fetch_add(1, Relaxed);
                        m.set_failed(&format_args!("cannot connect to {}: {e}", self.address));
                    }
                    if !self.logged_down {
                        tracing::warn!(output = %self.name(), address = %self.address, error = %e,
                            max_backoff_ms = self.max_backoff.as_millis() as u64,
                            "syslog output cannot connect; retrying with backoff (listeners slow down when its queue is full)");
                        self.logged_down = true;
                    } else {
                        tracing::debug!(output = %self.name(), error = %e, "connect retry failed");
                    }
                    let wait = self.jitter(delay);
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.max_backoff);
                }
            }
        }
    }

    /// Drops the connection after `e`; the window is written again on the next one.
    fn fail(&mut self, e: io::Error) {
        if let Some(m) = self.m() {
            m.errors.fetch_add(1, Relaxed);
            m.set_failed(&format_args!("connection to {} lost: {e}", self.address));
        }
        if !self.logged_down {
            tracing::warn!(output = %self.name(), address = %self.address, error = %e,
                unconfirmed = self.window.iter().map(|en| en.records).sum::<u64>(),
                "syslog output connection lost; reconnecting and resending unconfirmed records");
            self.logged_down = true;
        }
        self.conn = None;
        self.written = 0;
    }

    /// Writes every entry of the window not yet written on the current connection,
    /// (re)connecting as often as needed. Returns once all are written.
    async fn pump(&mut self) {
        loop {
            if self.conn.is_none() {
                self.connect().await;
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            if self.written < self.window.len() {
                // A peer that closed is noticed before writing into its socket.
                if let Health::Closed(e) = check(conn.as_mut()).await {
                    self.fail(e);
                    continue;
                }
            }
            let mut result = Ok(());
            while self.written < self.window.len() {
                let e = &mut self.window[self.written];
                if let Err(err) = write_all_chunks(conn.as_mut(), &e.chunks).await {
                    result = Err(err);
                    break;
                }
                e.written_at = Instant::now();
                e.sends += 1;
                if e.sends > 1 {
                    if let Some(m) = self.metrics.outputs.get(self.index) {
                        m.retries.fetch_add(e.records, Relaxed);
                    }
                }
                self.written += 1;
            }
            if result.is_ok() {
                result = conn.flush().await;
            }
            match result {
                Ok(()) => return,
                Err(e) => self.fail(e),
            }
        }
    }

    /// Confirms the written entries old enough when the connection is still open; on a closed
    /// connection, drops it (the next `pump` resends).
    async fn confirm(&mut self) {
        let now = Instant::now();
        let n = self
            .window
            .iter()
            .take(self.written)
            .take_while(|e| now >= e.written_at + self.confirm_after)
            .count();
        if n == 0 {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Health::Closed(e) = check(conn.as_mut()).await {
            self.fail(e);
            return;
        }
        let (mut records, mut bytes) = (0, 0);
        for e in self.window.drain(..n) {
            records += e.records;
            bytes += e.bytes;
            self.window_bytes = self.window_bytes.saturating_sub(e.bytes as usize);
        }
        self.written -= n;
        self.confirmed_total += records;
        if let Some(m) = self.m() {
            m.records.fetch_add(records, Relaxed);
            m.bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// How long until the oldest written entry can be confirmed.
    fn until_confirmable(&self) -> Duration {
        self.window.front().map_or(Duration::ZERO, |e| {
            (e.written_at + self.confirm_after).saturating_duration_since(Instant::now())
        })
    }

    /// Writes and confirms until the window holds at most `limit` bytes.
    async fn drain_to(&mut self, limit: usize) {
        while self.window_bytes > limit || (limit == 0 && !self.window.is_empty()) {
            self.pump().await;
            tokio::time::sleep(self.until_confirmable()).await;
            self.confirm().await;
        }
    }
}

/// Drops one trailing LF (the LF trailer replaces it).
fn strip_lf(b: &Bytes) -> Bytes {
    match b.last() {
        Some(b'\n') => b.slice(..b.len() - 1),
        _ => b.clone(),
    }
}

/// Whether the connection is still open: a read that would block means yes; EOF, a reset or
/// any error means no. Bytes the receiver sent are read and ignored.
async fn check(conn: &mut dyn Stream) -> Health {
    let mut buf = [0u8; 512];
    // Bounded: a chatty receiver cannot keep us here.
    for _ in 0..64 {
        let r = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *conn).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(rb.filled().len()))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            }
        })
        .await;
        match r {
            Ok(None) => return Health::Open,
            Ok(Some(0)) => {
                return Health::Closed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the receiver",
                ))
            }
            Ok(Some(_)) => {}
            Err(e) => return Health::Closed(e),
        }
    }
    Health::Open
}

/// Writes every chunk with vectored writes.
async fn write_all_chunks(conn: &mut dyn Stream, chunks: &[Bytes]) -> io::Result<()> {
    let mut i = 0; // first chunk not fully written
    let mut off = 0; // bytes of chunks[i] already written
    while i < chunks.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[i][off..])
            .chain(chunks[i + 1..].iter().take(255).map(|c| &c[..]))
            .map(IoSlice::new)
            .collect();
        let mut n = conn.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"));
        }
        while n > 0 && i < chunks.len() {
            let left = chunks[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        // Skip empty chunks so the loop ends.
        while i < chunks.len() && chunks[i].len() == off {
            i += 1;
            off = 0;
        }
    }
    Ok(())
}

/// Most octets of each RFC 5424 header field: HOSTNAME, APP-NAME, PROCID, MSGID.
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const PROCID_MAX: usize = 128;
const MSGID_MAX: usize = 32;

/// Writes `f` as an RFC 5424 header field: NILVALUE when absent or empty, else its characters
/// with anything outside PRINTUSASCII replaced by `_`, cut to `max` octets.
fn put_field(out: &mut Vec<u8>, f: Option<&str>, max: usize) {
    match f {
        Some(s) if !s.is_empty() => {
            out.extend(
                s.bytes()
                    .take(max)
                    .map(|b| if (33..=126).contains(&b) { b } else { b'_' }),
            )
        }
        _ => out.push(b'-'),
    }
}

/// Writes `msg` as an RFC 5424 SYSLOG-MSG (no framing).
pub fn write_5424(out: &mut Vec<u8>, msg: &Message<'_>) {
    out.extend_from_slice(format!("<{}>1 ", msg.pri).as_bytes());
    match (msg.protocol, msg.timestamp) {
        (Protocol::Rfc5424, Some(ts)) => put_field(out, Some(ts), 64),
        (Protocol::Rfc3164, Some(_)) => match msg.timestamp_parsed() {
            Some(t) => out.extend_from_slice(
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .as_bytes(),
            ),
            None => out.push(b'-'),
        },
        (_, None) => out.push(b'-'),
    }
    for (f, max) in [
        (msg.hostname, HOSTNAME_MAX),
        (msg.app_name, APP_NAME_MAX),
        (msg.procid, PROCID_MAX),
        (msg.msgid, MSGID_MAX),
    ] {
        out.push(b' ');
        put_field(out, f, max);
    }
    out.push(b' ');
    match &msg.structured_data {
        None => out.push(b'-'),
        Some(sd) => {
            for el in sd.elements() {
                out.push(b'[');
                out.extend_from_slice(el.id.as_bytes());
                for (name, value) in el.params() {
                    out.push(b' ');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"=\"");
                    for chunk in value.chunks() {
                        for &b in chunk.as_bytes() {
                            if matches!(b, b'"' | b'\\' | b']') {
                                out.push(b'\\');
                            }
                            out.push(b);
                        }
                    }
                    out.push(b'"');
                }
                out.push(b']');
            }
        }
    }
    if let Some(m) = msg.msg.filter(|m| !m.is_empty()) {
        out.push(b' ');
        if msg.bom {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend_from_slice(m);
    }
}

impl Output for SyslogOutput {
    async fn write_batch(&mut self, batch: &Arc<Batch>, bit: u64, _m: &OutputMetrics) {
        let entry = self.encode(batch, bit);
        if entry.records == 0 {
            return;
        }
        self.window_bytes += entry.bytes as usize;
        self.window.push_back(entry);
        self.pump().await;
        self.confirm().await;
        let limit = self.max_unconfirmed;
        self.drain_to(limit).await;
    }

    fn unconfirmed(&self) -> bool {
        !self.window.is_empty()
    }

    fn confirmed(&self) -> Option<u64> {
        Some(self.confirmed_total)
    }

    /// Connects once (the connection is kept for the first records).
    async fn probe(&mut self) -> io::Result<()> {
        if self.conn.is_some() {
            return Ok(());
        }
        self.try_connect().await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot connect to {}: {e}", self.address))
        })
    }

    /// Never fails: writes and confirms what it can, reconnecting as needed.
    async fn write(&mut self, _lines: Bytes) -> io::Result<()> {
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.pump().await;
        self.confirm().await;
        Ok(())
    }

    /// Waits until every record is confirmed (reconnecting and resending as needed), then
    /// closes the connection.
    async fn close(&mut self) -> io::Result<()> {
        self.drain_to(0).await;
        if let Some(mut c) = self.conn.take() {
            let _ = c.shutdown().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::framing::{Frame, FrameErrorKind};
    use crate::route::Line;

    #[tokio::test]
    async fn forwarding_sockets_get_keepalive_and_a_write_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        tune(
            &tcp,
            Some(Duration::from_secs(45)),
            Some(Duration::from_millis(7000)),
        )
        .unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(tcp.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(7000))
        );
        let plain = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        tune(&plain, None, None).unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A batch of `frames` with these masks (the JSON side is not used by this output).
    fn batch(frames: &[(&[u8], FrameKind, u64)]) -> Arc<Batch> {
        let mut b = Batch::default();
        for (i, (data, kind, mask)) in frames.iter().enumerate() {
            b.lines.push(Line {
                end: i as u32,
                mask: *mask,
            });
            b.any |= mask;
            b.frames.push(Frame {
                offset: 0,
                data: Bytes::copy_from_slice(data),
                kind: *kind,
                wire_len: data.len() as u64,
                dropped_before: 0,
            });
        }
        Arc::new(b)
    }

    /// A `syslog` output to `address` with extra config lines.
    fn output(address: &str, extra: &str) -> (SyslogOutput, Arc<Metrics>) {
        let text = format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n[[output]]\nname = \"fwd\"\n\
             type = \"syslog\"\naddress = \"{address}\"\n{extra}\n"
        );
        let config = Config::from_toml(&text).unwrap();
        let metrics = Arc::new(Metrics::new(&[], &["fwd".to_string()]));
        let out = SyslogOutput::new(&config.output[0], 0, metrics.clone()).unwrap();
        (out, metrics)
    }

    fn joined(e: &Entry) -> Vec<u8> {
        e.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn passthrough_sends_wanted_frames_raw_including_errors() {
        let trunc = FrameKind::Truncated {
            reason: FrameErrorKind::EofInFrame,
            declared_length: Some(99),
        };
        let b = batch(&[
            (b"<13>1 - h a - - - one", FrameKind::Complete, 0b1),
            (b"<13>1 - h a - - - not for us", FrameKind::Complete, 0b10),
            (b"garbage\n", FrameKind::Complete, 0b11),
            (b"<13>1 - h a - - - cut", trunc, 0b1),
        ]);
        let (out, _) = output("127.0.0.1:1", "passthrough = true");
        let e = out.encode(&b, 0b1);
        assert_eq!(e.records, 3);
        assert_eq!(
            joined(&e),
            b"21 <13>1 - h a - - - one8 garbage\n21 <13>1 - h a - - - cut"
        );
        // The frame bytes are the batch's own (no copy).
        assert_eq!(e.chunks[1].as_ptr(), b.frames[0].data.as_ptr());
        let (out, _) = output("127.0.0.1:1", "passthrough = true\nframing = \"lf\"");
        assert_eq!(
            joined(&out.encode(&b, 0b10)),
            b"<13>1 - h a - - - not for us\ngarbage\n"
        );
    }

    #[test]
    fn reserialised_frames_parse_again_and_bad_ones_go_raw() {
        let b = batch(&[
            (b"<34>Oct 11 22:14:15 box su: hi", FrameKind::Complete, 1),
            (b"<999> nope", FrameKind::Complete, 1),
        ]);
        let (out, _) = output("127.0.0.1:1", "");
        let bytes = joined(&out.encode(&b, 1));
        assert_eq!(bytes, b"23 <34>1 - box su - - - hi10 <999> nope");
    }

    /// The peer reads the first batch and closes; the output notices at the next check,
    /// reconnects and sends the unconfirmed batch again; only then is it counted.
    #[tokio::test]
    async fn unconfirmed_batch_is_resent_after_the_peer_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (mut out, metrics) = output(&addr, "confirm_after_ms = 100\nmax_backoff_ms = 50");
        let b = batch(&[(b"<13>1 - h a - - - one", FrameKind::Complete, 1)]);
        let frame = b"21 <13>1 - h a - - - one";
        let m = &metrics.outputs[0];
        let peer = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; frame.len()];
                s.read_exact(&mut buf).await.unwrap();
                got.push(buf);
                // First connection: closed after reading. Second: kept open a while.
                if got.len() == 2 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            }
            got
        });
        out.write_batch(&b, 1, m).await;
        assert_eq!(m.records.load(Relaxed), 0, "counted before confirmation");
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.records.load(Relaxed) == 0 {
            assert!(Instant::now() < deadline, "never confirmed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            out.flush().await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(5), peer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![frame.to_vec(), frame.to_vec()]);
        assert_eq!(m.records.load(Relaxed), 1);
        assert_eq!(m.retries.load(Relaxed), 1);
        assert_eq!(m.reconnects.load(Relaxed), 1);
        assert!(m.errors.load(Relaxed) >= 1);
        assert!(!out.unconfirmed());
    }

    /// With nobody listening, `write_batch` does not return (the queue backs up), and
    /// returns once a receiver appears.
    #[tokio::test]
    async fn write_batch_waits_while_the_receiver_is_down() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let (mut out, metrics) = output(&addr, "max_backoff_ms = 50");
        let b = batch(&[(b"<13>1 - h a - - - one", FrameKind::Complete, 1)]);
        let task = tokio::spawn(async move {
            let m = &metrics.outputs[0];
            out.write_batch(&b, 1, m).await;
            metrics.clone()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "took a batch with no receiver");
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        let metrics = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 24];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"21 <13>1 - h a - - - one");
        let m = &metrics.outputs[0];
        assert!(m.errors.load(Relaxed) >= 2, "connection failures counted");
        assert_eq!(
            m.reconnects.load(Relaxed),
            0,
            "first connection is no reconnect"
        );
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a.example:514"), Some(("a.example", 514)));
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1", 6514)));
        assert_eq!(split_host_port("::1:6514"), None);
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port(":514"), None);
        assert_eq!(split_host_port("h:0"), None);
    }

    #[test]
    fn reserialises_rfc5424_with_escapes_and_nil() {
        let frame = br#"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [ex@1 a="x\"y\]z\\w" b="q\n"][b@2] hi there"#;
        let msg = parse::parse(frame, Format::Auto).unwrap();
        let mut out = Vec::new();
        write_5424(&mut out, &msg);
        // A lone backslash (`\n`) is kept and written escaped: the value stays the same.
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [ex@1 a="x\"y\]z\\w" b="q\\n"][b@2] hi there"#
        );
        let again = parse::parse(&out, Format::Rfc5424).unwrap();
        let v = |m: &Message<'_>, el: &str, p: &str| {
            m.structured_data
                .unwrap()
                .element(el)
                .unwrap()
                .param(p)
                .unwrap()
                .unescaped()
                .into_owned()
        };
        assert_eq!(v(&again, "ex@1", "a"), v(&msg, "ex@1", "a"));
        assert_eq!(v(&again, "ex@1", "b"), v(&msg, "ex@1", "b"));
        let mut out = Vec::new();
        write_5424(
            &mut out,
            &parse::parse(b"<13>1 - - - - - -", Format::Auto).unwrap(),
        );
        assert_eq!(out, b"<13>1 - - - - - -");
    }

    #[test]
    fn reserialises_rfc3164_as_rfc5424() {
        let msg = parse::parse(
            b"<34>Oct 11 22:14:15 mymachine su[42]: 'su root' failed",
            Format::Auto,
        )
        .unwrap();
        let mut out = Vec::new();
        write_5424(&mut out, &msg);
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.starts_with("<34>1 - mymachine su 42 - - "), "{s}");
        assert!(s.ends_with("'su root' failed"), "{s}");
        parse::parse(&out, Format::Rfc5424).unwrap();
    }
}
