//! Metrics: process-wide counters (atomics, updated once per batch, not per message) and the
//! periodic one-line summary on stderr.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::classify::Category;

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
    /// `http`: records sent again after a failed request (or a retriable bulk item error).
    pub retries: AtomicU64,
    /// `syslog`, `http`: connections made after a failed or closed one.
    pub reconnects: AtomicU64,
    /// `http`: records the receiver refused for good, written to the dead-letter file (or log).
    pub dead_letters: AtomicU64,
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
    /// Events per category, indexed by [`Category`].
    pub categories: Vec<AtomicU64>,
    /// Category names, same index.
    pub category_names: Vec<String>,
    /// Per output, in config order.
    pub outputs: Vec<OutputMetrics>,
}

impl Metrics {
    /// Counters for these categories and outputs.
    pub fn new(category_names: &[String], output_names: &[String]) -> Metrics {
        Metrics {
            categories: category_names.iter().map(|_| AtomicU64::new(0)).collect(),
            category_names: category_names.to_vec(),
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

    /// Adds what one batch counted.
    pub fn add(&self, c: &BatchCounts) {
        self.records.fetch_add(c.records, Relaxed);
        self.parse_errors.fetch_add(c.parse_errors, Relaxed);
        self.framing_errors.fetch_add(c.framing_errors, Relaxed);
        self.truncated.fetch_add(c.truncated, Relaxed);
        self.events.fetch_add(c.events, Relaxed);
        self.pod_logs.fetch_add(c.pod_logs, Relaxed);
        for (i, n) in c.categories.iter().enumerate() {
            if *n > 0 {
                if let Some(a) = self.categories.get(i) {
                    a.fetch_add(*n, Relaxed);
                }
            }
        }
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
            .category_names
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
            let extra: Vec<String> = [
                ("errors", &o.errors),
                ("retries", &o.retries),
                ("reconnects", &o.reconnects),
                ("dead_letters", &o.dead_letters),
            ]
            .iter()
            .filter_map(|(n, c)| {
                let v = c.load(Relaxed);
                (v > 0).then(|| format!("{n}={v}"))
            })
            .collect();
            if !extra.is_empty() {
                line.push_str(&format!("({})", extra.join(" ")));
            }
        }
        line
    }
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
}

impl BatchCounts {
    /// Zeroed counts for `n` categories.
    pub fn new(n: usize) -> BatchCounts {
        BatchCounts {
            categories: vec![0; n],
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
        *self = BatchCounts {
            categories: cats,
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
