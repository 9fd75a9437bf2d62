//! Metrics: process-wide counters (atomics, updated once per batch, not per message) and the
//! periodic one-line summary on stderr.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::classify::Category;
use crate::stats::{BatchDetail, Detail};

/// Category counters the process has room for: the initial classifier's categories plus those
/// a reloaded config adds (a reload that would need more is refused: restart instead).
pub const CATEGORY_SLOTS: usize = 256;

/// Whether an output can take records now, as its task last saw it (`/readyz`, the status page,
/// `syslog_sink_output_up`).
///
/// Every output sets it through [`OutputMetrics::set_state`] / [`OutputMetrics::set_failed`]:
/// [`crate::output::run`] sets `Up` at start, `Retrying` while the startup probe
/// ([`crate::output::Output::probe`]) fails or `retry_flush` holds records after a failed
/// write, and `Down` when the task ends; an output with its own connection (the `syslog`
/// output) sets `Retrying` when a connection is lost or cannot be made and `Up` once it is
/// connected again. A new output type only has to implement `probe` and call these where it
/// connects, fails and recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OutputState {
    /// Taking records (connected, or nothing has failed).
    Up = 0,
    /// A write or connection failed; the records are held and retried with backoff.
    Retrying = 1,
    /// The output task ended (shutdown, or it stopped): it takes nothing more.
    Down = 2,
}

impl OutputState {
    /// `up`, `retrying` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputState::Up => "up",
            OutputState::Retrying => "retrying",
            OutputState::Down => "down",
        }
    }
}

/// How a value is exported to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Only grows (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Counters of one listener (`[[listen]]` section).
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// The configured address.
    pub address: String,
    /// The bound address (port 0 resolved), once bound.
    pub bound: OnceLock<std::net::SocketAddr>,
    /// Frames cut (one record each).
    pub frames: AtomicU64,
    /// Bytes read.
    pub bytes: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed.
    pub closed: AtomicU64,
    /// Connections refused (at `max_connections` or `max_connections_per_ip`).
    pub refused: AtomicU64,
}

impl ListenerMetrics {
    /// The bound address when known, else the configured one (the label in `/metrics`).
    pub fn label(&self) -> String {
        self.bound
            .get()
            .map_or_else(|| self.address.clone(), |a| a.to_string())
    }
}

/// Counters of one output.
#[derive(Debug, Default)]
pub struct OutputMetrics {
    /// The output's name.
    pub name: String,
    /// Records written (handed to the file or stream); for a `syslog` output, records whose
    /// delivery was confirmed; for an `http` output, records the receiver accepted (see README
    /// "Outputs").
    pub records: AtomicU64,
    /// Bytes written (confirmed, for a `syslog` output).
    pub bytes: AtomicU64,
    /// Write, flush or connect errors (each one retried).
    pub errors: AtomicU64,
    /// `syslog`: records written again on a new connection after the previous one failed;
    /// `http`: records sent again after a failed request (or a retriable bulk item error);
    /// `kafka`: records acknowledged after a request holding them failed.
    pub retries: AtomicU64,
    /// `syslog`, `http`, `kafka`: connections made after a failed or closed one.
    pub reconnects: AtomicU64,
    /// Disk buffer: bytes of its segment files now (gauge).
    pub buffer_bytes: AtomicU64,
    /// Disk buffer: records in it not yet confirmed by the output (gauge).
    pub buffer_records: AtomicU64,
    /// Disk buffer: when the oldest record not yet confirmed was written to it, Unix time in
    /// milliseconds; 0 when there is none (gauge).
    pub buffer_oldest_unix_ms: AtomicU64,
    /// Disk buffer: damaged entries found (a torn or corrupt entry; the rest of its segment
    /// file is skipped).
    pub buffer_corrupt: AtomicU64,
    /// An [`OutputState`] as `u8`: whether the output can take records now (see [`OutputState`]).
    pub state: AtomicU8,
    /// The last error the output reported, and when (kept after recovery, for the status page).
    pub last_error: Mutex<Option<(String, SystemTime)>>,
    /// `http`: records the receiver refused for good, written to the dead-letter file (or log).
    pub dead_letters: AtomicU64,
}

impl OutputMetrics {
    /// Every numeric field, for `/metrics` (as `syslog_sink_output_<name>`, `_total` for
    /// counters) and the status page: (name, kind, help, value). A new field is exported by
    /// adding its line here.
    pub fn values(&self) -> Vec<(&'static str, ValueKind, &'static str, u64)> {
        use ValueKind::Counter;
        vec![
            (
                "records",
                Counter,
                "Records written (syslog: confirmed delivered).",
                self.records.load(Relaxed),
            ),
            (
                "bytes",
                Counter,
                "Bytes written (syslog: confirmed).",
                self.bytes.load(Relaxed),
            ),
            (
                "errors",
                Counter,
                "Failed writes, flushes and connection attempts (each retried).",
                self.errors.load(Relaxed),
            ),
            (
                "retries",
                Counter,
                "Records written again after a failure.",
                self.retries.load(Relaxed),
            ),
            (
                "reconnects",
                Counter,
                "Connections made after a failed one.",
                self.reconnects.load(Relaxed),
            ),
            (
                "dead_letters",
                Counter,
                "http: records the receiver refused for good (dead-letter file or log).",
                self.dead_letters.load(Relaxed),
            ),
            (
                "buffer_bytes",
                ValueKind::Gauge,
                "Disk buffer: bytes of its segment files.",
                self.buffer_bytes.load(Relaxed),
            ),
            (
                "buffer_records",
                ValueKind::Gauge,
                "Disk buffer: records not yet confirmed by the output.",
                self.buffer_records.load(Relaxed),
            ),
            (
                "buffer_corrupt",
                Counter,
                "Disk buffer: damaged entries found (the rest of their segment file skipped).",
                self.buffer_corrupt.load(Relaxed),
            ),
        ]
    }

    /// The output's state now.
    pub fn state(&self) -> OutputState {
        match self.state.load(Relaxed) {
            0 => OutputState::Up,
            1 => OutputState::Retrying,
            _ => OutputState::Down,
        }
    }

    /// Sets the state (`Up` when connected or recovered, `Down` when the task ends).
    pub fn set_state(&self, s: OutputState) {
        self.state.store(s as u8, Relaxed);
    }

    /// Records a failure: state `Retrying` and `error` as the last error.
    pub fn set_failed(&self, error: &dyn std::fmt::Display) {
        self.set_state(OutputState::Retrying);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((error.to_string(), SystemTime::now()));
        }
    }

    /// The last error and when it happened.
    pub fn last_error(&self) -> Option<(String, SystemTime)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Every counter of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Connections closed.
    pub connections_closed: AtomicU64,
    /// Bytes read from sockets.
    pub bytes: AtomicU64,
    /// Connections refused at `max_connections_per_ip`.
    pub connections_refused_per_ip: AtomicU64,
    /// Times a connection's reads paused at `max_messages_per_sec` (backpressure).
    pub rate_limit_pauses: AtomicU64,
    /// Milliseconds those pauses added up to.
    pub rate_limit_paused_ms: AtomicU64,
    /// Reads shortened because the connection's buffer was at `max_buffered_bytes`.
    pub buffer_limit_hits: AtomicU64,
    /// Times a connection waited for the in-flight budget (`[server] max_inflight_bytes`).
    pub budget_waits: AtomicU64,
    /// TLS connections refused in the handshake (no or bad client certificate, name not
    /// allowed, protocol error, handshake timeout).
    pub tls_handshake_failures: AtomicU64,
    /// Plain-text senders on a TLS listener (closed at once).
    pub tls_plaintext_clients: AtomicU64,
    /// Records produced (one per frame, including error and truncated frames).
    pub records: AtomicU64,
    /// Records whose frame did not parse (delivered with `parse_error` and `raw`).
    pub parse_errors: AtomicU64,
    /// Framing errors (bad MSG-LEN ...; delivered with `framing_error` and `raw`).
    pub framing_errors: AtomicU64,
    /// Truncated frames (over the size limit or cut by EOF).
    pub truncated: AtomicU64,
    /// Kubernetes events.
    pub events: AtomicU64,
    /// Kubernetes container logs.
    pub pod_logs: AtomicU64,
    /// Events per category slot: the initial classifier's categories by [`Category`] index,
    /// then those a reload added ([`Metrics::category_slots`]); [`CATEGORY_SLOTS`] or more.
    pub categories: Vec<AtomicU64>,
    /// Category names, by slot (only grows).
    pub category_names: RwLock<Vec<String>>,
    /// Per output, in config order.
    pub outputs: Vec<OutputMetrics>,
    /// Per listener, in config order (empty unless [`Metrics::with_listeners`]).
    pub listeners: Vec<ListenerMetrics>,
    /// Records per namespace, errors by kind, the last failure events ([`crate::stats`]).
    pub detail: Detail,
}

impl Metrics {
    /// Counters for these categories and outputs.
    pub fn new(category_names: &[String], output_names: &[String]) -> Metrics {
        Metrics {
            categories: (0..category_names.len().max(CATEGORY_SLOTS))
                .map(|_| AtomicU64::new(0))
                .collect(),
            category_names: RwLock::new(category_names.to_vec()),
            outputs: output_names
                .iter()
                .map(|n| OutputMetrics {
                    name: n.clone(),
                    ..OutputMetrics::default()
                })
                .collect(),
            ..Metrics::default()
        }
    }

    /// The same counters with one [`ListenerMetrics`] per configured listen address.
    pub fn with_listeners(mut self, addresses: &[String]) -> Metrics {
        self.listeners = addresses
            .iter()
            .map(|a| ListenerMetrics {
                address: a.clone(),
                ..ListenerMetrics::default()
            })
            .collect();
        self
    }

    /// The slot of each of `names` (a classifier's categories), adding the names not seen yet;
    /// `None` when there is no room left (a restart is needed).
    pub fn category_slots(&self, names: &[String]) -> Option<Vec<u16>> {
        let mut known = self.category_names.write().ok()?;
        let mut slots = Vec::with_capacity(names.len());
        for n in names {
            let i = match known.iter().position(|k| k == n) {
                Some(i) => i,
                None => {
                    if known.len() >= self.categories.len() {
                        return None;
                    }
                    known.push(n.clone());
                    known.len() - 1
                }
            };
            slots.push(u16::try_from(i).ok()?);
        }
        Some(slots)
    }

    /// Category names by slot.
    pub fn category_names(&self) -> Vec<String> {
        self.category_names
            .read()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// Adds what one batch counted.
    pub fn add(&self, c: &BatchCounts) {
        self.add_mapped(c, None, &[]);
    }

    /// Adds what one batch counted, its category `i` counted in slot `slots[i]` (a classifier
    /// loaded after start; identity when `None`). `frames` are the batch's frames: the text of
    /// its failure events is taken from them (none without).
    pub fn add_mapped(
        &self,
        c: &BatchCounts,
        slots: Option<&[u16]>,
        frames: &[crate::framing::Frame],
    ) {
        self.records.fetch_add(c.records, Relaxed);
        self.parse_errors.fetch_add(c.parse_errors, Relaxed);
        self.framing_errors.fetch_add(c.framing_errors, Relaxed);
        self.truncated.fetch_add(c.truncated, Relaxed);
        self.events.fetch_add(c.events, Relaxed);
        self.pod_logs.fetch_add(c.pod_logs, Relaxed);
        for (i, n) in c.categories.iter().enumerate() {
            if *n > 0 {
                let slot = slots.map_or(i, |s| s.get(i).map_or(i, |&s| usize::from(s)));
                if let Some(a) = self.categories.get(slot) {
                    a.fetch_add(*n, Relaxed);
                }
            }
        }
        self.detail.add(&c.detail, slots, frames);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_accepted
            .load(Relaxed)
            .saturating_sub(self.connections_closed.load(Relaxed))
    }

    /// The summary line: totals, rate since `prev`, errors, events per category.
    pub fn summary(&self, prev_records: u64, elapsed: Duration) -> String {
        let records = self.records.load(Relaxed);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rate = (records.saturating_sub(prev_records)) as f64 / secs;
        let mut line = format!(
            "records={records} rate={rate:.0}/s conns={} accepted={} refused={} bytes={} parse_errors={} framing_errors={} truncated={} events={} pod_logs={}",
            self.connections_open(),
            self.connections_accepted.load(Relaxed),
            self.connections_refused.load(Relaxed),
            self.bytes.load(Relaxed),
            self.parse_errors.load(Relaxed),
            self.framing_errors.load(Relaxed),
            self.truncated.load(Relaxed),
            self.events.load(Relaxed),
            self.pod_logs.load(Relaxed),
        );
        for (name, c) in [
            ("tls_handshake_failures", &self.tls_handshake_failures),
            ("tls_plaintext_clients", &self.tls_plaintext_clients),
            ("refused_per_ip", &self.connections_refused_per_ip),
            ("rate_limit_pauses", &self.rate_limit_pauses),
            ("rate_limit_paused_ms", &self.rate_limit_paused_ms),
            ("buffer_limit_hits", &self.buffer_limit_hits),
            ("budget_waits", &self.budget_waits),
        ] {
            let v = c.load(Relaxed);
            if v > 0 {
                line.push_str(&format!(" {name}={v}"));
            }
        }
        let cats: Vec<String> = self
            .category_names()
            .iter()
            .zip(&self.categories)
            .filter_map(|(n, c)| {
                let v = c.load(Relaxed);
                (v > 0).then(|| format!("{n}={v}"))
            })
            .collect();
        if !cats.is_empty() {
            line.push_str(" [");
            line.push_str(&cats.join(" "));
            line.push(']');
        }
        for o in &self.outputs {
            line.push_str(&format!(" out.{}={}", o.name, o.records.load(Relaxed)));
            let mut extra: Vec<String> = [
                ("errors", &o.errors),
                ("retries", &o.retries),
                ("reconnects", &o.reconnects),
                ("buffer_bytes", &o.buffer_bytes),
                ("buffer_records", &o.buffer_records),
                ("buffer_corrupt", &o.buffer_corrupt),
                ("dead_letters", &o.dead_letters),
            ]
            .iter()
            .filter_map(|(n, c)| {
                let v = c.load(Relaxed);
                (v > 0).then(|| format!("{n}={v}"))
            })
            .chain((o.state() == OutputState::Retrying).then(|| "retrying".to_string()))
            .collect();
            let oldest = o.buffer_oldest_unix_ms.load(Relaxed);
            if oldest > 0 {
                let age = unix_ms().saturating_sub(oldest);
                extra.push(format!("buffer_oldest_age_ms={age}"));
            }
            if !extra.is_empty() {
                line.push_str(&format!("({})", extra.join(" ")));
            }
        }
        line
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one batch counted, added to [`Metrics`] at once.
#[derive(Debug, Default, Clone)]
pub struct BatchCounts {
    /// Records.
    pub records: u64,
    /// Parse errors.
    pub parse_errors: u64,
    /// Framing errors.
    pub framing_errors: u64,
    /// Truncated frames.
    pub truncated: u64,
    /// Events.
    pub events: u64,
    /// Pod logs.
    pub pod_logs: u64,
    /// Events per category.
    pub categories: Vec<u64>,
    /// Per namespace, errors by kind, failure events ([`crate::stats`]).
    pub detail: BatchDetail,
}

impl BatchCounts {
    /// Zeroed counts for `n` categories.
    pub fn new(n: usize) -> BatchCounts {
        BatchCounts {
            categories: vec![0; n],
            detail: BatchDetail::new(n),
            ..BatchCounts::default()
        }
    }

    /// Counts one event of category `c`.
    pub fn category(&mut self, c: Category) {
        if let Some(n) = self.categories.get_mut(c.0 as usize) {
            *n += 1;
        }
    }

    /// Back to zero, keeping the allocation.
    pub fn clear(&mut self) {
        let mut cats = std::mem::take(&mut self.categories);
        cats.iter_mut().for_each(|n| *n = 0);
        let mut detail = std::mem::take(&mut self.detail);
        detail.clear();
        *self = BatchCounts {
            categories: cats,
            detail,
            ..BatchCounts::default()
        };
    }
}

/// Logs [`Metrics::summary`] every `interval` until the process ends.
pub async fn summary_loop(metrics: Arc<Metrics>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut prev = (metrics.records.load(Relaxed), Instant::now());
    loop {
        tick.tick().await;
        let now = Instant::now();
        tracing::info!(target: "syslog_sink::summary", "{}", metrics.summary(prev.0, now - prev.1));
        prev = (metrics.records.load(Relaxed), now);
    }
}
