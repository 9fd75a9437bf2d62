//! Outputs: where records go. Each output implements [`Output`] and runs in its own task
//! ([`run`]), reading batches from its own bounded queue (see [`crate::route`]).
//!
//! - [`file::FileOutput`]: JSON lines appended to a file.
//! - [`stdout::StdoutOutput`]: JSON lines on standard output.
//! - [`syslog::SyslogOutput`]: RFC 5424 forwarded to another receiver over TCP or TLS.
//! - [`http::HttpOutput`]: batches POSTed to a URL (JSON webhook, Splunk HEC, Elasticsearch bulk).
//! - [`nats::NatsOutput`]: JSON records published to a NATS JetStream stream, acknowledged.
//! - [`kafka::KafkaOutput`]: JSON records produced to a Kafka topic (acks = all).

pub mod file;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod stdout;
pub mod syslog;

use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};

use crate::buffer::EntryId;
use crate::metrics::{Metrics, OutputMetrics, OutputState};
use crate::route::{Batch, Receiver};

/// A destination for records.
///
/// [`run`] hands each batch to `write_batch`. By default that takes the JSON lines the output
/// wants (as few contiguous runs of the batch's own buffer as possible) and passes them to
/// `write`; an output that needs something else (the original frames) overrides `write_batch`.
///
/// `write` takes complete lines. When it (or `flush`) fails, the output keeps what it could not
/// write and writes it on a later successful `flush`: the caller retries `flush`, never `write`.
///
/// State for `/readyz` and the status page: [`run`] sets the output's
/// [`crate::metrics::OutputState`] (`Up` at start, `Retrying` while it retries a failed flush,
/// `Down` at the end). An output that holds its own connection also calls
/// [`OutputMetrics::set_failed`] when the connection is lost or cannot be made and
/// `set_state(OutputState::Up)` once it is back (see the `syslog` output).
pub trait Output: Send + 'static {
    /// Takes the records of `batch` whose mask has `bit`, counting them in `m`. The default
    /// writes the JSON runs with `write`, retrying `flush` with backoff when a write fails.
    fn write_batch(
        &mut self,
        batch: &Arc<Batch>,
        bit: u64,
        m: &OutputMetrics,
    ) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move {
            for (run, n) in batch.runs(bit) {
                m.records.fetch_add(n, Relaxed);
                m.bytes.fetch_add(run.len() as u64, Relaxed);
                if let Err(e) = self.write(run).await {
                    retry_flush(self, m, e).await;
                }
            }
        }
    }
    /// Takes the records of one disk-buffer entry: what the buffer ([`crate::buffer`]) calls
    /// instead of `write_batch`, with `entry` naming these records for good (the same when
    /// they are delivered again after a restart). The default ignores `entry`; the `nats`
    /// output makes its `Nats-Msg-Id`s of it.
    fn write_entry(
        &mut self,
        batch: &Arc<Batch>,
        bit: u64,
        m: &OutputMetrics,
        entry: EntryId<'_>,
    ) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        let _ = entry;
        self.write_batch(batch, bit, m)
    }
    /// Whether the output holds records it has yet to confirm, so [`run`] calls `flush` on its
    /// interval even when no new batch came in.
    fn unconfirmed(&self) -> bool {
        false
    }
    /// How many of the records taken by `write_batch` so far are confirmed delivered (counted
    /// from the output's creation), for an output that confirms later than `flush` (the
    /// `syslog` output's window). `None`, the default, means: everything taken is confirmed
    /// once `flush` returned `Ok` (file, stdout, and outputs whose `flush` waits for the
    /// destination's acknowledgement). The disk buffer ([`crate::buffer`]) removes records only
    /// once they are confirmed.
    fn confirmed(&self) -> Option<u64> {
        None
    }
    /// One attempt to reach the destination (connect, log in, find the stream or topic),
    /// keeping what it set up for the records to come. [`run`] (and the disk buffer's reader)
    /// call it at start and, while it fails, again with backoff until it succeeds or records
    /// arrive, so `/readyz` tells an unreachable destination before the first record does. An
    /// attempt is dropped after 5 s, so it must leave the output usable when cancelled at an
    /// `await`. The default (file, stdout) has nothing to reach.
    fn probe(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
    /// Takes one or more complete JSON lines; may write them at once or buffer them.
    fn write(&mut self, lines: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Writes everything taken so far to the destination.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Last call at shutdown, after a successful `flush` (a file syncs to disk here).
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// Lines waiting to be written, kept as the batches' own `Bytes` (no copy), written with
/// vectored writes on a blocking thread. Shared by the file and stdout outputs.
#[derive(Debug)]
pub struct Pending<W> {
    writer: Option<W>,
    chunks: Vec<Bytes>,
    bytes: usize,
    /// Write to the destination once this many bytes are pending.
    pub flush_at: usize,
}

impl<W: Write + Send + 'static> Pending<W> {
    /// Pending lines for `writer`, written once `flush_at` bytes are pending.
    pub fn new(writer: W, flush_at: usize) -> Self {
        Pending {
            writer: Some(writer),
            chunks: Vec::new(),
            bytes: 0,
            flush_at,
        }
    }

    /// Adds lines; writes when over `flush_at`.
    pub async fn push(&mut self, lines: Bytes) -> io::Result<()> {
        self.bytes += lines.len();
        self.chunks.push(lines);
        if self.bytes >= self.flush_at {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Writes every pending byte; on error keeps what was not written.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.bytes == 0 {
            return Ok(());
        }
        let Some(mut writer) = self.writer.take() else {
            return Err(io::Error::other("output writer lost after a failed write"));
        };
        let mut chunks = std::mem::take(&mut self.chunks);
        let joined = tokio::task::spawn_blocking(move || {
            let r = write_chunks(&mut writer, &mut chunks).and_then(|()| writer.flush());
            (writer, chunks, r)
        })
        .await;
        match joined {
            Ok((writer, chunks, r)) => {
                self.writer = Some(writer);
                self.bytes = chunks.iter().map(Bytes::len).sum();
                self.chunks = chunks;
                r
            }
            Err(e) => Err(io::Error::other(format!(
                "output writer thread failed: {e}"
            ))),
        }
    }

    /// The writer, for a final sync.
    pub fn writer(&mut self) -> Option<&mut W> {
        self.writer.as_mut()
    }
}

/// Writes `chunks` with vectored writes, removing what was written (also on error).
pub(crate) fn write_chunks<W: Write>(w: &mut W, chunks: &mut Vec<Bytes>) -> io::Result<()> {
    let mut done = 0; // chunks fully written
    let result = loop {
        if done == chunks.len() {
            break Ok(());
        }
        let slices: Vec<IoSlice<'_>> = chunks[done..]
            .iter()
            .take(256)
            .map(|c| IoSlice::new(c))
            .collect();
        match w.write_vectored(&slices) {
            Ok(0) => break Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(mut n) => {
                while n > 0 {
                    let c = &mut chunks[done];
                    if n >= c.len() {
                        n -= c.len();
                        done += 1;
                    } else {
                        c.advance(n);
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    chunks.drain(..done);
    result
}

/// Longest one probe attempt may take: the output's task waits for it, so this bounds how
/// long a shutdown (or the first batch) can wait behind a destination that does not answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The startup check of an output ([`Output::probe`]): at start, then with backoff (100 ms
/// doubling to 5 s) while it fails, until it succeeds or a flush does; each attempt within
/// [`PROBE_TIMEOUT`]. Each failure is counted in `errors` and makes the state `Retrying` with
/// the error; the first is logged.
#[derive(Debug)]
pub(crate) struct Probe {
    /// When to try next; `None` once the destination was reached.
    next: Option<tokio::time::Instant>,
    delay: Duration,
    failed: bool,
}

impl Probe {
    pub(crate) fn new() -> Probe {
        Probe {
            next: Some(tokio::time::Instant::now()),
            delay: Duration::from_millis(100),
            failed: false,
        }
    }

    /// Whether a probe is still due (the destination was not reached yet).
    pub(crate) fn active(&self) -> bool {
        self.next.is_some()
    }

    /// Waits until the next attempt is due (never returns when none is).
    pub(crate) async fn due(&self) {
        match self.next {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    }

    /// One attempt.
    pub(crate) async fn attempt<O: Output>(&mut self, out: &mut O, m: &OutputMetrics) {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, out.probe()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            )),
        };
        match outcome {
            Ok(()) => self.reached(m),
            Err(e) => {
                m.errors.fetch_add(1, Relaxed);
                m.set_failed(&e);
                if !self.failed {
                    tracing::warn!(output = %m.name, error = %e,
                        "output cannot reach its destination; trying again with backoff (records that arrive meanwhile are held)");
                }
                self.failed = true;
                self.next = Some(tokio::time::Instant::now() + self.delay);
                self.delay = (self.delay * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// The destination was reached (by the probe or a successful flush): no more probes, and
    /// the state is `Up` again after a failed one.
    pub(crate) fn reached(&mut self, m: &OutputMetrics) {
        if self.next.take().is_some() && self.failed {
            m.set_state(OutputState::Up);
            tracing::info!(output = %m.name, "output reached its destination");
        }
    }
}

/// Runs output number `index` until its queue closes: takes the lines it wants from each batch,
/// writes them as soon as its queue is empty (so under load many batches go out in one vectored
/// write), at the latest every `flush_every`, and at the end. A failing write or flush is retried with backoff
/// (and logged) while the queue fills up and pushes back on the listeners: nothing is dropped.
pub async fn run<O: Output>(
    mut out: O,
    index: usize,
    mut rx: Receiver,
    flush_every: Duration,
    metrics: Arc<Metrics>,
) {
    let bit = 1u64 << index;
    let Some(m) = metrics.outputs.get(index) else {
        return;
    };
    m.set_state(OutputState::Up);
    let mut probe = Probe::new();
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                out.write_batch(&batch, bit, m).await;
                dirty = true;
                // Nothing else waiting: write now (low latency when idle; under load batches
                // pile up meanwhile and go out in fewer, larger writes).
                if dirty && rx.is_empty() {
                    if let Err(e) = out.flush().await {
                        retry_flush(&mut out, m, e).await;
                    }
                    probe.reached(m);
                    dirty = false;
                }
            }
            _ = tick.tick(), if dirty || out.unconfirmed() => {
                if let Err(e) = out.flush().await {
                    retry_flush(&mut out, m, e).await;
                }
                probe.reached(m);
                dirty = false;
            }
            _ = probe.due(), if probe.active() && !dirty => probe.attempt(&mut out, m).await,
        }
    }
    if let Err(e) = out.flush().await {
        retry_flush(&mut out, m, e).await;
    }
    if let Err(e) = out.close().await {
        m.errors.fetch_add(1, Relaxed);
        tracing::error!(output = %m.name, error = %e, "closing output failed");
    }
    m.set_state(OutputState::Down);
    tracing::debug!(output = %m.name, "output stopped");
}

/// Retries `flush` with capped exponential backoff until it succeeds. Meanwhile the output's
/// state is [`OutputState::Retrying`] (with the error), `Up` again after.
pub(crate) async fn retry_flush<O: Output>(out: &mut O, m: &OutputMetrics, first: io::Error) {
    let name = &m.name;
    let mut delay = Duration::from_millis(100);
    let mut err = first;
    loop {
        m.errors.fetch_add(1, Relaxed);
        m.set_failed(&err);
        tracing::warn!(output = %name, error = %err, retry_in_ms = delay.as_millis() as u64,
            "output write failed; holding its records and retrying (listeners slow down when its queue is full)");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        match out.flush().await {
            Ok(()) => {
                m.set_state(OutputState::Up);
                tracing::info!(output = %name, "output recovered");
                return;
            }
            Err(e) => err = e,
        }
    }
}

/// `fut` within `t`: its value, or its error or the timeout as text naming `what` (`"{what}:
/// {error}"`, `"{what}: no answer within {t} ms"`). For outputs whose client calls have no
/// deadline of their own.
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    t: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(t, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} ms", t.as_millis())),
    }
}

/// 16 lowercase hex digits that differ from call to call and process to process (the time in
/// nanoseconds, the process id and `salt`, hashed with std's randomly keyed SipHash): the
/// `nats` output's instance id and the disk buffer folder's id.
pub(crate) fn random_id(salt: &[u8]) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write(salt);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `limit` bytes per call and fails every other call.
    struct Flaky {
        data: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::Error::other("flaky"));
            }
            let n = buf.len().min(self.limit);
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_chunks_keeps_unwritten_bytes_on_error() {
        let mut w = Flaky {
            data: Vec::new(),
            limit: 3,
            calls: 0,
        };
        let mut chunks = vec![Bytes::from("abcde"), Bytes::from("fg"), Bytes::from("hij")];
        let mut errors = 0;
        while !chunks.is_empty() {
            if write_chunks(&mut w, &mut chunks).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0);
        assert_eq!(w.data, b"abcdefghij");
    }
}
