//! `kafka` output: produces each record (its JSON line, without the LF) as one Kafka message
//! to a fixed topic, with acks = all, through `rskafka` (pure Rust, tokio).
//!
//! **Partitions and keys.** With `key = "k8s.namespace"` the value of that record field is the
//! message key, and with `partitioning = "key"` (the default when `key` is set) the partition is
//! murmur2(key) modulo the partition count, as Kafka's Java client computes it: one namespace
//! stays in one partition, in order. Records without the field have no key and go round robin,
//! as they all do with `partitioning = "round_robin"`.
//!
//! **Delivery (at least once, acknowledged by the broker).** Records taken from the queue wait
//! in per-partition queues until a produce request holding them is acknowledged by the
//! partition's leader with acks = all (every in-sync replica has them). `flush` sends every
//! waiting record (one request per partition at a time, at most `batch_max_bytes` and
//! `batch_max_records` each, the partitions in parallel) and returns `Ok` only once all of them
//! are acknowledged; on a failure it returns the error and keeps what was not acknowledged, in
//! order, and [`super::run`] retries `flush` with backoff while the queue fills and the listeners
//! slow down. After a failure the client is dropped and made anew on the next attempt (one log
//! line when the broker is lost, one when it is back). A request that failed after the broker
//! stored it (the acknowledgement was lost) is sent again: duplicates are possible, losses are
//! not while syslog-sink runs. Metrics count records when acknowledged.
//!
//! **Compression.** `compression` compresses each produce request's record batch (gzip,
//! snappy, lz4 or zstd, as Kafka defines them); `batch_max_bytes` bounds the records before it.
//!
//! **Security.** With `[output.tls]` every broker connection (the bootstrap ones and those to
//! the leaders the metadata names) is TLS, the certificate verified against `ca` under the host
//! name the broker is reached by, with an optional client certificate (Kafka's `SSL`). With
//! `[output.sasl]` each connection authenticates first, `PLAIN`, `SCRAM-SHA-256` or
//! `SCRAM-SHA-512` (`SASL_PLAINTEXT`, or `SASL_SSL` with both). A refused handshake or login is
//! a failed attempt like a broker that is down: the records are kept and the error is the
//! output's last error (status page, `/readyz`).
//!
//! **Topic.** With `create_topic = true` (the default) a missing topic is created with
//! `topic_partitions` and `replication_factor`; an existing topic is used as it is. The
//! partition count is read on every (re)connect.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rskafka::client::error::Error as KafkaError;
use rskafka::client::error::ProtocolError;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{bounded, retry_flush, Output};
use crate::config::{
    ConfigError, KafkaCompression, KafkaPartitioning, KafkaSaslConfig, KafkaSaslMechanism,
    OutputConfig, OutputType, DEFAULT_KAFKA_BATCH_MAX_BYTES, DEFAULT_KAFKA_BATCH_MAX_RECORDS,
    DEFAULT_KAFKA_REQUEST_TIMEOUT_MS, DEFAULT_KAFKA_TOPIC_PARTITIONS,
};
use crate::metrics::{Metrics, OutputMetrics};
use crate::route::Batch;

/// Checks the `kafka` keys of a `type = "kafka"` output: required and in range (other types'
/// outputs are refused them by `config::check_keys_apply`). `key` names a key of this output.
pub fn validate(o: &OutputConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let err = |k: &str, why: String| Err(ConfigError(format!("{}: {why}", key(k))));
    if o.kind != OutputType::Kafka {
        return Ok(());
    }
    let brokers = o.brokers.as_deref().unwrap_or_default();
    if brokers.is_empty() {
        return err(
            "brokers",
            "is required for type \"kafka\": at least one \"host:port\"".into(),
        );
    }
    for b in brokers {
        if crate::output::syslog::split_host_port(b).is_none() {
            return err(
                "brokers",
                format!("{b:?} is not host:port (e.g. \"kafka-1.example:9092\")"),
            );
        }
    }
    let Some(topic) = &o.topic else {
        return err("topic", "is required for type \"kafka\"".into());
    };
    // Kafka's own rule for topic names.
    if topic.is_empty()
        || topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return err(
            "topic",
            format!(
                "{topic:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, not \".\" or \"..\")"
            ),
        );
    }
    if let Some(k) = &o.key {
        if k.split('.').any(str::is_empty) {
            return err(
                "key",
                format!(
                    "{k:?} is not a field path (names joined by \".\", e.g. \"k8s.namespace\")"
                ),
            );
        }
    }
    if o.partitioning == Some(KafkaPartitioning::Key) && o.key.is_none() {
        return err(
            "partitioning",
            "\"key\" needs `key` (the record field to hash)".into(),
        );
    }
    for (k, v, lo, hi) in [
        (
            "topic_partitions",
            o.topic_partitions.map(u64::from),
            1,
            10_000,
        ),
        (
            "replication_factor",
            o.replication_factor.map(u64::from),
            1,
            32_767,
        ),
        (
            "batch_max_bytes",
            o.batch_max_bytes.map(|v| v as u64),
            1024,
            64 << 20,
        ),
        (
            "batch_max_records",
            o.batch_max_records.map(|v| v as u64),
            1,
            1_000_000,
        ),
        ("request_timeout_ms", o.request_timeout_ms, 100, 600_000),
    ] {
        if let Some(v) = v {
            if !(lo..=hi).contains(&v) {
                return err(k, format!("{v} is out of range {lo}..={hi}"));
            }
        }
    }
    if o.tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
        return err(
            "tls.server_name",
            "does not apply to type \"kafka\" (each broker's certificate is checked \
                 against the host the cluster names it by)"
                .into(),
        );
    }
    if let Some(s) = &o.sasl {
        if s.username.is_empty() {
            return err("sasl.username", "must not be empty".into());
        }
        if s.password.is_empty() {
            return err("sasl.password", "must not be empty".into());
        }
    }
    Ok(())
}

/// The rskafka form of `[output.sasl]`.
fn sasl_config(s: &KafkaSaslConfig) -> SaslConfig {
    let c = Credentials::new(s.username.clone(), s.password.clone());
    match s.mechanism {
        KafkaSaslMechanism::Plain => SaslConfig::Plain(c),
        KafkaSaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
        KafkaSaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
    }
}

/// The rskafka form of `compression`.
fn compression(c: KafkaCompression) -> Compression {
    match c {
        KafkaCompression::None => Compression::NoCompression,
        KafkaCompression::Gzip => Compression::Gzip,
        KafkaCompression::Snappy => Compression::Snappy,
        KafkaCompression::Lz4 => Compression::Lz4,
        KafkaCompression::Zstd => Compression::Zstd,
    }
}

/// Records waiting before `write` sends them: `batch_max_bytes` times the partition count,
/// the count capped at this.
const MAX_PARTITIONS_PENDING: usize = 8;

/// One record waiting for its acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    key: Option<Vec<u8>>,
    /// The JSON line without its LF: a slice of the batch's own buffer.
    value: Bytes,
    /// When the output took it (the Kafka message timestamp).
    taken: DateTime<Utc>,
    /// Whether it was in a request that failed (it may have reached the broker already).
    resent: bool,
}

impl Pending {
    fn record(&self) -> Record {
        Record {
            key: self.key.clone(),
            value: Some(self.value.to_vec()),
            headers: Default::default(),
            timestamp: self.taken,
        }
    }
}

/// A live client: the topic's partitions, in partition-id order.
struct Conn {
    _client: Client,
    partitions: Vec<Arc<PartitionClient>>,
}

/// Produces records to Kafka; see the [module documentation](self).
pub struct KafkaOutput {
    brokers: Vec<String>,
    topic: String,
    key: Option<Vec<String>>,
    partitioning: KafkaPartitioning,
    create_topic: bool,
    topic_partitions: i32,
    replication_factor: i16,
    batch_max_bytes: usize,
    batch_max_records: usize,
    request_timeout: Duration,
    /// Codec of every produce request's record batch.
    compression: Compression,
    /// `[output.tls]`: every broker connection over TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `[output.sasl]`: authentication on every broker connection.
    sasl: Option<SaslConfig>,
    conn: Option<Conn>,
    /// Records not yet given a partition (taken while no client was connected), oldest first.
    unassigned: VecDeque<Pending>,
    /// Per partition (same index as `Conn::partitions`), records not yet acknowledged, in order.
    queues: Vec<VecDeque<Pending>>,
    /// Records and value bytes in `unassigned` and `queues`.
    pending_records: usize,
    pending_bytes: usize,
    /// Next partition for a record without a key.
    round_robin: usize,
    /// Whether a connection was ever made (later ones count as reconnects).
    connected_once: bool,
    /// Since when the broker is unreachable (logged once when lost, once when back).
    down_since: Option<Instant>,
    metrics: Arc<Metrics>,
    index: usize,
}

impl std::fmt::Debug for KafkaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutput")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("connected", &self.conn.is_some())
            .field("pending_records", &self.pending_records)
            .finish()
    }
}

impl KafkaOutput {
    /// The output of `cfg` (a checked `type = "kafka"` output), counting in output `index` of
    /// `metrics`. Does not connect: the startup probe or the first flush does.
    pub fn new(
        cfg: &OutputConfig,
        index: usize,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaOutput, ConfigError> {
        let brokers = cfg.brokers.clone().unwrap_or_default();
        if brokers.is_empty() {
            return Err(ConfigError("brokers: at least one broker is needed".into()));
        }
        let Some(topic) = cfg.topic.clone() else {
            return Err(ConfigError("topic: is required".into()));
        };
        let key: Option<Vec<String>> = cfg
            .key
            .as_ref()
            .map(|k| k.split('.').map(str::to_string).collect());
        let partitioning = cfg.partitioning.unwrap_or(if key.is_some() {
            KafkaPartitioning::Key
        } else {
            KafkaPartitioning::RoundRobin
        });
        let topic_partitions = cfg
            .topic_partitions
            .unwrap_or(DEFAULT_KAFKA_TOPIC_PARTITIONS);
        let tls = match &cfg.tls {
            Some(t) => Some(
                crate::output::syslog::client_config(t)
                    .map_err(|e| ConfigError(format!("tls.{e}")))?,
            ),
            None => None,
        };
        let sasl = cfg.sasl.as_ref().map(sasl_config);
        if let (Some(s), None) = (&cfg.sasl, &tls) {
            if s.mechanism == KafkaSaslMechanism::Plain {
                tracing::warn!(output = %cfg.name, "kafka: SASL PLAIN without [output.tls] sends \
                    the password in clear text to every broker");
            }
        }
        Ok(KafkaOutput {
            brokers,
            topic,
            key,
            partitioning,
            create_topic: cfg.create_topic.unwrap_or(true),
            topic_partitions: i32::try_from(topic_partitions).unwrap_or(i32::MAX),
            replication_factor: i16::try_from(cfg.replication_factor.unwrap_or(1))
                .unwrap_or(i16::MAX),
            batch_max_bytes: cfg.batch_max_bytes.unwrap_or(DEFAULT_KAFKA_BATCH_MAX_BYTES),
            batch_max_records: cfg
                .batch_max_records
                .unwrap_or(DEFAULT_KAFKA_BATCH_MAX_RECORDS)
                .max(1),
            request_timeout: Duration::from_millis(
                cfg.request_timeout_ms
                    .unwrap_or(DEFAULT_KAFKA_REQUEST_TIMEOUT_MS),
            ),
            compression: compression(cfg.compression.unwrap_or_default()),
            tls,
            sasl,
            conn: None,
            unassigned: VecDeque::new(),
            queues: Vec::new(),
            pending_records: 0,
            pending_bytes: 0,
            round_robin: 0,
            connected_once: false,
            down_since: None,
            metrics,
            index,
        })
    }

    fn m(&self) -> Option<&OutputMetrics> {
        self.metrics.outputs.get(self.index)
    }

    /// Bytes pending before `write` sends them.
    fn flush_at(&self) -> usize {
        let parts = self.queues.len().clamp(1, MAX_PARTITIONS_PENDING);
        self.batch_max_bytes.saturating_mul(parts)
    }

    /// Connects, finds (or creates) the topic and a client per partition.
    async fn connect(&self) -> Result<Conn, String> {
        let t = self.request_timeout;
        // rskafka retries failed requests itself; bound that so a failure comes back to
        // `flush` (which keeps the records and reports it) with its own reason. Its deadline
        // counts only the pauses between attempts, not the attempts (a TLS handshake, a SCRAM
        // login), so it is a quarter of the request timeout: rskafka gives up, naming the last
        // error ("Sasl handshake failed: ..."), before `bounded` would, which can only say that
        // nothing came back in time.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(t / 4),
        };
        let mut builder = ClientBuilder::new(self.brokers.clone())
            .client_id("syslog-sink")
            .backoff_config(backoff);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        let client = bounded(t, "connecting", builder.build()).await?;
        let mut parts = self.partition_ids(&client).await?;
        if parts.is_empty() {
            if !self.create_topic {
                return Err(format!(
                    "topic {:?} does not exist (create_topic = false)",
                    self.topic
                ));
            }
            let controller = client
                .controller_client()
                .map_err(|e| format!("controller client: {e}"))?;
            let timeout_ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
            match bounded(
                t,
                "creating the topic",
                controller.create_topic(
                    self.topic.clone(),
                    self.topic_partitions,
                    self.replication_factor,
                    timeout_ms,
                ),
            )
            .await
            {
                Ok(()) => tracing::info!(topic = %self.topic, partitions = self.topic_partitions,
                    replication_factor = self.replication_factor, "kafka: created the topic"),
                Err(e) if e.contains("TopicAlreadyExists") => {}
                Err(e) => return Err(e),
            }
            // The new topic's metadata may take a moment to show on every broker.
            let deadline = Instant::now() + t;
            loop {
                parts = self.partition_ids(&client).await?;
                if !parts.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "topic {:?} created but not in the metadata",
                        self.topic
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut partitions = Vec::with_capacity(parts.len());
        for p in parts {
            let pc = bounded(
                t,
                "finding the partition leader",
                client.partition_client(self.topic.clone(), p, UnknownTopicHandling::Retry),
            )
            .await?;
            partitions.push(Arc::new(pc));
        }
        Ok(Conn {
            _client: client,
            partitions,
        })
    }

    /// The topic's partition ids, sorted; empty when the topic does not exist.
    async fn partition_ids(&self, client: &Client) -> Result<Vec<i32>, String> {
        let topics = bounded(
            self.request_timeout,
            "reading the metadata",
            client.list_topics(),
        )
        .await?;
        Ok(topics
            .into_iter()
            .find(|t| t.name == self.topic)
            .map(|t| t.partitions.into_iter().collect())
            .unwrap_or_default())
    }

    /// Connects when not connected, and spreads the records that wait for a partition.
    async fn ensure_connected(&mut self) -> Result<(), String> {
        if self.conn.is_some() {
            return Ok(());
        }
        let conn = self.connect().await?;
        let n = conn.partitions.len();
        if self.queues.len() != n {
            // First connect, or the partition count changed: every waiting record is placed
            // anew (queue by queue, so records of one key keep their order).
            let mut all: VecDeque<Pending> = self.queues.drain(..).flatten().collect();
            all.append(&mut self.unassigned);
            self.unassigned = all;
            self.queues = (0..n).map(|_| VecDeque::new()).collect();
        }
        if self.connected_once {
            if let Some(m) = self.m() {
                m.reconnects.fetch_add(1, Relaxed);
            }
        }
        self.connected_once = true;
        self.conn = Some(conn);
        while let Some(p) = self.unassigned.pop_front() {
            let i = self.partition_of(p.key.as_deref());
            self.queues[i].push_back(p);
        }
        Ok(())
    }

    /// The partition index of a record with `key` (`queues` is not empty).
    fn partition_of(&mut self, key: Option<&[u8]>) -> usize {
        let n = self.queues.len().max(1);
        match (self.partitioning, key) {
            (KafkaPartitioning::Key, Some(k)) => (murmur2(k) & 0x7fff_ffff) as usize % n,
            _ => {
                self.round_robin = (self.round_robin + 1) % n;
                self.round_robin
            }
        }
    }

    /// Sends every waiting record; see the [module documentation](self).
    async fn send_all(&mut self) -> Result<(), String> {
        self.ensure_connected().await?;
        let Some(conn) = &self.conn else {
            return Err("not connected".into());
        };
        let t = self.request_timeout;
        let (max_bytes, max_records) = (self.batch_max_bytes, self.batch_max_records);
        let codec = self.compression;
        let mut sends = tokio::task::JoinSet::new();
        for (i, q) in self.queues.iter().enumerate() {
            if q.is_empty() {
                continue;
            }
            let Some(client) = conn.partitions.get(i).cloned() else {
                continue;
            };
            // Cheap clones (reference-counted values); the queue keeps the originals until
            // they are acknowledged.
            let records: Vec<Pending> = q.iter().cloned().collect();
            sends.spawn(async move {
                let r = produce_in_order(&client, &records, max_bytes, max_records, codec, t).await;
                (i, r)
            });
        }
        let mut first_err = None;
        while let Some(joined) = sends.join_next().await {
            let (i, outcome) = match joined {
                Ok(v) => v,
                Err(e) => {
                    first_err.get_or_insert_with(|| format!("produce task failed: {e}"));
                    continue;
                }
            };
            let Some(q) = self.queues.get_mut(i) else {
                continue;
            };
            for p in q.drain(..outcome.done.min(q.len())) {
                self.pending_records -= 1;
                self.pending_bytes -= p.value.len();
            }
            for p in q.iter_mut().take(outcome.failed) {
                p.resent = true;
            }
            if let Some(m) = self.metrics.outputs.get(self.index) {
                m.records.fetch_add(outcome.acked_records, Relaxed);
                m.bytes.fetch_add(outcome.acked_bytes, Relaxed);
                m.errors.fetch_add(outcome.rejected, Relaxed);
                m.retries.fetch_add(outcome.resent, Relaxed);
            }
            if let Some(e) = outcome.error {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What producing one partition's records came to.
struct Produced {
    /// Records done with, from the front: acknowledged, or refused for good.
    done: usize,
    /// Of those, acknowledged records and their bytes (with the LF, as the other outputs count).
    acked_records: u64,
    acked_bytes: u64,
    /// Of those, records the broker refused for good (too large): dropped with an error log.
    rejected: u64,
    /// Of the acknowledged records, those sent before in a request that failed.
    resent: u64,
    /// Records after `done` that were in the request that failed.
    failed: usize,
    /// Why it stopped before the end.
    error: Option<String>,
}

/// Produces `records` to one partition in order, in requests of at most `max_bytes` and
/// `max_records` (before `codec`), each waiting for its acknowledgement; stops at the first
/// failure.
async fn produce_in_order(
    client: &PartitionClient,
    records: &[Pending],
    max_bytes: usize,
    max_records: usize,
    codec: Compression,
    t: Duration,
) -> Produced {
    let mut out = Produced {
        done: 0,
        acked_records: 0,
        acked_bytes: 0,
        rejected: 0,
        resent: 0,
        failed: 0,
        error: None,
    };
    // Records refused as too large are retried one per request, to find the one at fault.
    let mut one_by_one = false;
    let mut pos = 0;
    while pos < records.len() {
        let mut end = pos;
        let mut bytes = 0;
        while end < records.len()
            && end - pos < if one_by_one { 1 } else { max_records }
            && (end == pos || bytes + records[end].value.len() <= max_bytes)
        {
            bytes += records[end].value.len();
            end += 1;
        }
        let batch: Vec<Record> = records[pos..end].iter().map(Pending::record).collect();
        match tokio::time::timeout(t, client.produce(batch, codec)).await {
            Ok(Ok(_offsets)) => {
                out.resent += records[pos..end].iter().filter(|r| r.resent).count() as u64;
                out.acked_records += (end - pos) as u64;
                out.acked_bytes += (bytes + (end - pos)) as u64;
                pos = end;
                out.done = pos;
            }
            Ok(Err(KafkaError::ServerError {
                protocol_error: ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge,
                ..
            })) if end - pos > 1 => one_by_one = true,
            Ok(Err(KafkaError::ServerError {
                protocol_error:
                    e @ (ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge),
                ..
            })) => {
                // One record the broker will never take: dropping it (counted, logged) is the
                // only way on; holding it would stop the output for good.
                tracing::error!(topic = client.topic(), partition = client.partition(), bytes,
                    error = %e, "kafka: the broker refuses this record as too large; dropped (raise the topic's max.message.bytes)");
                out.rejected += 1;
                pos = end;
                out.done = pos;
            }
            Ok(Err(e)) => {
                out.error = Some(format!(
                    "producing to partition {}: {e}",
                    client.partition()
                ));
                out.failed = end - pos;
                return out;
            }
            Err(_) => {
                out.error = Some(format!(
                    "producing to partition {}: no acknowledgement within {} ms",
                    client.partition(),
                    t.as_millis()
                ));
                out.failed = end - pos;
                return out;
            }
        }
    }
    out
}

impl Output for KafkaOutput {
    async fn write_batch(&mut self, batch: &Arc<Batch>, bit: u64, m: &OutputMetrics) {
        // Records are counted when acknowledged (in `flush`), not here.
        for (run, _n) in batch.runs(bit) {
            if let Err(e) = self.write(run).await {
                retry_flush(self, m, e).await;
            }
        }
    }

    fn unconfirmed(&self) -> bool {
        self.pending_records > 0
    }

    /// Connects, finds (or creates) the topic and its partition leaders; the client is kept.
    async fn probe(&mut self) -> io::Result<()> {
        self.ensure_connected().await.map_err(io::Error::other)
    }

    async fn write(&mut self, lines: Bytes) -> io::Result<()> {
        let taken = Utc::now();
        let mut start = 0;
        while start < lines.len() {
            let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i);
            let value = lines.slice(start..end);
            start = end + 1;
            let key = self.key.as_deref().and_then(|path| key_of(&value, path));
            let p = Pending {
                key,
                value,
                taken,
                resent: false,
            };
            self.pending_records += 1;
            self.pending_bytes += p.value.len();
            if self.queues.is_empty() {
                self.unassigned.push_back(p);
            } else {
                let i = self.partition_of(p.key.as_deref());
                self.queues[i].push_back(p);
            }
        }
        if self.pending_bytes >= self.flush_at() {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.pending_records == 0 {
            return Ok(());
        }
        match self.send_all().await {
            Ok(()) => {
                if let Some(since) = self.down_since.take() {
                    tracing::info!(topic = %self.topic, down_ms = since.elapsed().as_millis() as u64,
                        "kafka: broker reachable again; held records delivered");
                }
                Ok(())
            }
            Err(e) => {
                // Make the client anew on the next attempt (the broker may have restarted,
                // moved a leader or lost the topic).
                self.conn = None;
                if self.down_since.is_none() {
                    self.down_since = Some(Instant::now());
                    tracing::warn!(topic = %self.topic, brokers = ?self.brokers, error = %e,
                        pending = self.pending_records,
                        "kafka: cannot deliver; holding the records and retrying");
                }
                Err(io::Error::other(format!("kafka: {e}")))
            }
        }
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), for the same key-to-partition mapping.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The value at `path` (object keys) of the JSON record `line`, as key bytes: a string's
/// text, a number's or boolean's JSON text; `None` when absent, null, an object or an array.
pub fn key_of(line: &[u8], path: &[String]) -> Option<Vec<u8>> {
    let mut de = serde_json::Deserializer::from_slice(line);
    PathSeed(path).deserialize(&mut de).ok().flatten()
}

/// Finds the value at a path of object keys, skipping everything else without allocating.
struct PathSeed<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PathSeed<'_> {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0.first().map(String::as_str)))? {
            if hit && found.is_none() {
                found = if self.0.len() == 1 {
                    map.next_value_seed(Leaf)?
                } else {
                    map.next_value_seed(PathSeed(&self.0[1..]))?
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether an object key equals the wanted name.
struct KeyIs<'a>(Option<&'a str>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(self.0 == Some(v))
    }
}

/// The key bytes of a leaf value.
struct Leaf;

impl<'de> DeserializeSeed<'de> for Leaf {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaf {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.as_bytes().to_vec()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into_bytes()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into_bytes()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into_bytes()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into_bytes()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sasl_mechanism_maps_to_its_own_with_the_credentials() {
        for (m, name) in [
            (KafkaSaslMechanism::Plain, "Plain"),
            (KafkaSaslMechanism::ScramSha256, "ScramSha256"),
            (KafkaSaslMechanism::ScramSha512, "ScramSha512"),
        ] {
            let c = sasl_config(&KafkaSaslConfig {
                mechanism: m,
                username: "u1".into(),
                password: "p1".into(),
            });
            let (SaslConfig::Plain(got)
            | SaslConfig::ScramSha256(got)
            | SaslConfig::ScramSha512(got)) = &c
            else {
                panic!("{m:?} made {c:?}");
            };
            assert!(format!("{c:?}").starts_with(name), "{m:?} made {c:?}");
            assert_eq!((got.username.as_str(), got.password.as_str()), ("u1", "p1"));
        }
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest (signed ints there).
        for (data, want) in [
            (&b"21"[..], -973_932_308i32),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(
                murmur2(data) as i32,
                want,
                "{:?}",
                std::str::from_utf8(data)
            );
        }
    }

    #[test]
    fn key_of_follows_the_path() {
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        let line = br#"{"a":1,"k8s":{"kind":"event","namespace":"kube-sys\"tem","n":[1,{"x":2}]},"s":"x","k8s2":{}}"#;
        assert_eq!(
            key_of(line, &path("k8s.namespace")).as_deref(),
            Some(&b"kube-sys\"tem"[..])
        );
        assert_eq!(key_of(line, &path("a")).as_deref(), Some(&b"1"[..]));
        assert_eq!(key_of(line, &path("s")).as_deref(), Some(&b"x"[..]));
        assert_eq!(key_of(line, &path("k8s")), None, "an object is no key");
        assert_eq!(key_of(line, &path("k8s.n")), None, "an array is no key");
        assert_eq!(key_of(line, &path("k8s.missing")), None);
        assert_eq!(key_of(line, &path("s.deeper")), None);
        assert_eq!(key_of(b"not json", &path("a")), None);
    }
}
