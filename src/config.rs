//! Config: the TOML file (`config/syslog-sink.toml` documents every key and its default).
//!
//! Unknown keys are errors. [`Config::load`] reads and checks a file; every error names the
//! key (`listen[0].address`, `output[1] "events".path`, ...) and says why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::classify::{Classifier, Rule};
use crate::framing::{FramingMode, Trailer, DEFAULT_MAX_FRAME_BYTES};
use crate::parse::Format;

/// Smallest accepted `max_frame_bytes`.
pub const MIN_FRAME_BYTES: usize = 1;
/// Largest accepted `max_frame_bytes` (16 MiB).
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// `max_buffered_bytes` must leave at least this much room for a read beyond one frame.
pub const MIN_READ_ROOM: usize = 64;
/// Largest accepted `max_buffered_bytes` (1 GiB).
pub const MAX_BUFFERED_BYTES: usize = 1 << 30;
/// At most this many outputs (each output is one bit of a record's routing mask).
pub const MAX_OUTPUTS: usize = 64;

/// A config error: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: process-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[listen]]`: one entry per listening socket.
    #[serde(default)]
    pub listen: Vec<ListenConfig>,
    /// `[[output]]`: where records go.
    #[serde(default)]
    pub output: Vec<OutputConfig>,
    /// `[classify]`: extra classification rules.
    #[serde(default)]
    pub classify: ClassifyConfig,
    /// `[admin]`: the HTTP admin listener (metrics, health, status page).
    #[serde(default)]
    pub admin: AdminConfig,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// `[admin]`: the HTTP admin listener ([`crate::admin`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `ip:port` of the admin listener; `""` (the default when the section is absent) turns it
    /// off. The shipped config sets `127.0.0.1:9514`.
    pub address: String,
    /// Namespaces exported with their own label in `/metrics` (the most active ones); the rest
    /// are summed under `namespace="other"`.
    pub top_namespaces: usize,
    /// Event categories counted as failures: kept in the last-failures list and shown per
    /// namespace on the status page.
    pub failure_categories: Vec<String>,
    /// Seconds between the status page's chart samples (1 .. 60).
    pub sample_interval_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: String::new(),
            top_namespaces: 20,
            failure_categories: crate::stats::DEFAULT_FAILURE_CATEGORIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            sample_interval_secs: 5,
        }
    }
}

impl AdminConfig {
    /// The admin listener's address, `None` when it is off.
    pub fn socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.address.is_empty() {
            return Ok(None);
        }
        self.address.parse().map(Some).map_err(|e| {
            ConfigError(format!(
                "admin.address: invalid socket address {:?} ({e}); expected ip:port, e.g. \
                 \"127.0.0.1:9514\", or \"\" for no admin listener",
                self.address
            ))
        })
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Seconds between the one-line summaries on stderr; 0 turns them off.
    pub summary_interval_secs: u64,
    /// After SIGINT/SIGTERM, how long to wait for connections to drain and outputs to flush.
    pub shutdown_grace_secs: u64,
    /// Log filter (`info`, `debug`, `syslog_sink::server=debug,info`); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Folder of the outputs' disk buffers that have no `buffer.path`: `data_dir/<output name>`
    /// (default `data`, relative to the working directory).
    pub data_dir: PathBuf,
    /// Most bytes of reads and their JSON on the way to the outputs, all connections together;
    /// when spent, connections stop reading until outputs catch up (backpressure).
    pub max_inflight_bytes: usize,
    /// `text` (default) or `json` log lines on stderr.
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            summary_interval_secs: 10,
            shutdown_grace_secs: 30,
            log_level: "info".to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            log_format: LogFormat::Text,
        }
    }
}

/// Default `[server] data_dir`.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default `[server] max_inflight_bytes` (16 MiB): with the PKS mix, 64 busy connections
/// stay under 64 MiB resident (BENCHMARKS.md), and one connection never waits for it.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 << 20;

/// What a listener does when `max_connections` are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AtLimit {
    /// Accept and close the new connection at once, with a log line.
    #[default]
    Refuse,
    /// Stop accepting until a connection closes (new ones wait in the kernel's backlog).
    Wait,
}

/// `[[listen]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// `ip:port` to listen on (TCP).
    pub address: String,
    /// `auto` (per frame), `octet` or `lf`.
    #[serde(default)]
    pub framing: FramingMode,
    /// What ends a non-transparent frame: `crlf` (LF, one CR before it removed), `lf`, `nul`,
    /// `lf-or-nul`.
    #[serde(default)]
    pub trailer: Trailer,
    /// `auto` (RFC 5424 as senders write it, else RFC 3164), `rfc5424` (strict) or `rfc3164`.
    #[serde(default)]
    pub format: Format,
    /// Largest SYSLOG-MSG accepted; longer ones are delivered truncated.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Most connections open at once on this listener.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `refuse` or `wait` when `max_connections` are open.
    #[serde(default)]
    pub at_connection_limit: AtLimit,
    /// Close a connection that sent nothing for this many seconds; 0 = never.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Bytes asked of the socket per read.
    #[serde(default = "default_read_buffer_bytes")]
    pub read_buffer_bytes: usize,
    /// Most connections open at once from one peer IP on this listener; more are refused.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Most bytes buffered for one connection (read but not yet cut into frames); reads take
    /// only what fits. Default `max_frame_bytes + read_buffer_bytes`; see [`Self::max_buffered`].
    pub max_buffered_bytes: Option<usize>,
    /// Messages per second one peer IP may send (all its connections together); above it the
    /// connections' reads pause (TCP backpressure, nothing dropped). No limit when absent.
    pub max_messages_per_sec: Option<u64>,
    /// `[listen.tls]`: TLS (RFC 5425) on this listener; plain TCP when absent.
    pub tls: Option<TlsConfig>,
}

/// `[listen.tls]`: the listener speaks TLS (RFC 5425), optionally requiring client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the server certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM file: the certificate's private key (PKCS#8, RSA or EC).
    pub key: PathBuf,
    /// PEM file of CA certificates: when set, clients must present a certificate they issued.
    pub client_ca: Option<PathBuf>,
    /// When non-empty (needs `client_ca`), the client certificate's subject CN or a DNS SAN
    /// must match one of these: exact names, or `*.example.com` (one label in place of `*`).
    #[serde(default)]
    pub allowed_client_names: Vec<String>,
    /// A connection that has not completed its TLS handshake within this many seconds is closed.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

fn default_handshake_timeout_secs() -> u64 {
    10
}

impl TlsConfig {
    /// `handshake_timeout_secs` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}

fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_ip() -> usize {
    64
}
fn default_idle_timeout_secs() -> u64 {
    600
}
fn default_read_buffer_bytes() -> usize {
    128 * 1024
}

impl ListenConfig {
    /// The checked socket address.
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.address.parse().map_err(|e| {
            ConfigError(format!(
                "invalid socket address {:?} ({e}); expected ip:port, e.g. \"0.0.0.0:1514\"",
                self.address
            ))
        })
    }

    /// `max_buffered_bytes`, or its default `max_frame_bytes + read_buffer_bytes`.
    pub fn max_buffered(&self) -> usize {
        self.max_buffered_bytes
            .unwrap_or(self.max_frame_bytes.saturating_add(self.read_buffer_bytes))
    }

    /// `idle_timeout_secs` as a duration, `None` for never.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }
}

/// Output types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    /// JSON lines appended to a file.
    File,
    /// JSON lines on standard output.
    Stdout,
    /// RFC 5424 syslog forwarded over TCP or TLS to another receiver.
    Syslog,
    /// Batches POSTed to a URL: JSON webhook, Splunk HEC or Elasticsearch `_bulk`.
    Http,
    /// JSON records published to a NATS JetStream stream, acknowledged.
    Nats,
    /// JSON records produced to a Kafka topic (acks = all).
    Kafka,
}

impl OutputType {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputType::File => "file",
            OutputType::Stdout => "stdout",
            OutputType::Syslog => "syslog",
            OutputType::Http => "http",
            OutputType::Nats => "nats",
            OutputType::Kafka => "kafka",
        }
    }

    /// Whether the output sends over the network, so it gets a disk buffer unless `buffer =
    /// false` (see [`OutputConfig::buffer_config`]).
    pub fn is_network(self) -> bool {
        match self {
            OutputType::Syslog | OutputType::Http | OutputType::Nats | OutputType::Kafka => true,
            OutputType::File | OutputType::Stdout => false,
        }
    }

    /// What its disk buffer stores per record: the received frame (`true`: the `syslog` output
    /// forwards frames), or the JSON line (`false`).
    pub fn buffers_frames(self) -> bool {
        match self {
            OutputType::Syslog => true,
            OutputType::File
            | OutputType::Stdout
            | OutputType::Http
            | OutputType::Nats
            | OutputType::Kafka => false,
        }
    }
}

/// `[[output]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `file`, `stdout`, `syslog`, `http`, `nats` or `kafka`.
    #[serde(rename = "type")]
    pub kind: OutputType,
    /// `file`: the JSON-lines file (appended to; parent folders are created).
    pub path: Option<PathBuf>,
    /// `syslog`: the receiver, `host:port`.
    pub address: Option<String>,
    /// `syslog`: `octet` (RFC 6587 octet counting, the default) or `lf` (one message per line).
    pub framing: Option<ForwardFraming>,
    /// `syslog`: forward each received frame byte for byte (`true`) or re-serialise RFC 5424
    /// from the parsed message (`false`, the default).
    pub passthrough: Option<bool>,
    /// `syslog`: `[output.tls]`, forward over TLS (RFC 5425); plain TCP when absent.
    /// `http`: the CA (and client certificate) for an `https` URL; public roots when absent.
    /// `nats`: the CA (and client certificate) for `tls://` servers.
    /// `kafka`: connect to every broker over TLS, verified with this CA (Kafka's `SSL` and
    /// `SASL_SSL`); plaintext when absent.
    pub tls: Option<ForwardTlsConfig>,
    /// `syslog`, `http`: give up one connection attempt after this many milliseconds (default
    /// 5000).
    pub connect_timeout_ms: Option<u64>,
    /// `syslog`: TCP keepalive probes after this many idle seconds (default 60; 0 = off), so a
    /// receiver that vanished while the connection was idle is noticed.
    pub keepalive_secs: Option<u64>,
    /// `syslog`: drop the connection when written data stays unacknowledged by the receiver's
    /// TCP this long (Linux `TCP_USER_TIMEOUT`; default 30000; 0 = the kernel's own, minutes).
    /// A receiver that is alive but not reading still acknowledges the window probes: that is
    /// backpressure, not a timeout.
    pub write_timeout_ms: Option<u64>,
    /// `syslog`: longest wait between reconnection attempts (default 30000).
    pub max_backoff_ms: Option<u64>,
    /// `syslog`: a written batch counts as delivered once the connection was still open this
    /// many milliseconds later (default 1000).
    pub confirm_after_ms: Option<u64>,
    /// `syslog`: most bytes written but not yet confirmed; the output waits for confirmations
    /// above it (default 64 MiB).
    pub max_unconfirmed_bytes: Option<usize>,
    /// `http`: where batches are POSTed (`http://` or `https://`). `nats`: the server(s),
    /// `nats://host:port`, several separated by commas.
    pub url: Option<String>,
    /// `http`: `json` (a JSON array of records, the default), `splunk_hec` or
    /// `elasticsearch_bulk`.
    pub encoding: Option<HttpEncoding>,
    /// `http` with `splunk_hec`: the HEC token (sent as `Authorization: Splunk <token>`).
    pub token: Option<String>,
    /// `http` with `splunk_hec`: the events' `sourcetype` (the token's default when absent).
    pub sourcetype: Option<String>,
    /// `http` with `splunk_hec`: the events' `source` (default: the record's `app_name`).
    pub source: Option<String>,
    /// `http`: with `splunk_hec` the Splunk index (the token's default when absent); with
    /// `elasticsearch_bulk` the index name, strftime patterns allowed, taken from the record's
    /// time in UTC (default `syslog-sink-%Y.%m.%d`).
    pub index: Option<String>,
    /// `http`: gzip request bodies (`Content-Encoding: gzip`; default false).
    pub gzip: Option<bool>,
    /// `http`: extra request headers (`Authorization = "ApiKey ..."`).
    pub headers: Option<BTreeMap<String, String>>,
    /// `http`: most bytes of records in one request (default 1 MiB; a larger record goes alone).
    /// `kafka`: most record bytes in one produce request to one partition (default 1 MiB).
    pub batch_max_bytes: Option<usize>,
    /// `http`: most records in one request; `kafka`: most records in one produce request to
    /// one partition (default 10000 for both).
    pub batch_max_records: Option<usize>,
    /// `http`: give up one request (sending it and reading the answer) after this many
    /// milliseconds (default 30000); retried. `kafka`: the same for one connection attempt or
    /// produce request; its records are kept and sent again.
    pub request_timeout_ms: Option<u64>,
    /// `http`: JSON-lines file where records the receiver refused for good (4xx other than
    /// 408/429, Elasticsearch item errors other than 429/5xx) are appended; without it they are
    /// logged, one error line each.
    pub dead_letter_path: Option<PathBuf>,
    /// `nats`: the JetStream stream (created with the subject's fixed prefix when missing).
    pub stream: Option<String>,
    /// `nats`: the subject template, e.g. `k8s.events.{category}.{namespace}`.
    pub subject: Option<String>,
    /// `nats`: most publishes awaiting their JetStream acknowledgement at once (default 1024).
    pub max_inflight: Option<usize>,
    /// `nats`: a publish not acknowledged within this many milliseconds is resent (default 5000).
    pub ack_timeout_ms: Option<u64>,
    /// `kafka`: bootstrap brokers, `host:port` each.
    pub brokers: Option<Vec<String>>,
    /// `kafka`: the topic records are produced to.
    pub topic: Option<String>,
    /// `kafka`: dotted path of a record field whose value is the message key (e.g.
    /// `k8s.namespace`); records without it have no key.
    pub key: Option<String>,
    /// `kafka`: `key` (hash of the key, as Kafka's Java client; records without a key round
    /// robin) or `round_robin`; default `key` when `key` is set, else `round_robin`.
    pub partitioning: Option<KafkaPartitioning>,
    /// `kafka`: create the topic when it does not exist (default true).
    pub create_topic: Option<bool>,
    /// `kafka`: partitions of a topic the output creates (default 3).
    pub topic_partitions: Option<u32>,
    /// `kafka`: replication factor of a topic the output creates (default 1).
    pub replication_factor: Option<u16>,
    /// `kafka`: `[output.sasl]`, authenticate to the brokers with SASL (PLAIN or SCRAM).
    pub sasl: Option<KafkaSaslConfig>,
    /// `kafka`: compression of each produce request's record batch: `none` (the default),
    /// `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: Option<KafkaCompression>,
    /// Flush buffered records at least this often (milliseconds).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Batches waiting for this output before the listeners stop reading (backpressure).
    #[serde(default = "default_queue_batches")]
    pub queue_batches: usize,
    /// Which records this output gets; all when absent.
    pub filter: Option<FilterConfig>,
    /// Disk buffer: `false`, `true` or `[output.buffer]`. Absent: on for network outputs
    /// (`syslog`, `http`, `nats`, `kafka`), off for `file` and `stdout`. See [`OutputConfig::buffer_config`].
    pub buffer: Option<BufferSetting>,
}

/// `buffer` of an output: `buffer = false` (memory only), `buffer = true` (a disk buffer with
/// the defaults) or an `[output.buffer]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferSetting {
    /// No disk buffer.
    Off,
    /// A disk buffer.
    On(BufferConfig),
}

impl<'de> Deserialize<'de> for BufferSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BufferSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or an [output.buffer] table")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<BufferSetting, E> {
                Ok(if on {
                    BufferSetting::On(BufferConfig::default())
                } else {
                    BufferSetting::Off
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BufferSetting, A::Error> {
                BufferConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(BufferSetting::On)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[output.buffer]`: the output's disk buffer (a segmented write-ahead log, [`crate::buffer`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Folder of the segment files; default `[server] data_dir` / the output's name. Must not
    /// be another output's.
    pub path: Option<PathBuf>,
    /// Most bytes on disk; when full, the output's queue fills and the listeners stop reading.
    #[serde(default = "default_buffer_max_bytes")]
    pub max_bytes: u64,
    /// `fdatasync` the segment being written at most this many milliseconds after a write;
    /// 0 = after every write.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            path: None,
            max_bytes: default_buffer_max_bytes(),
            fsync_interval_ms: default_fsync_interval_ms(),
        }
    }
}

/// Default `buffer.max_bytes` (1 GiB).
pub const DEFAULT_BUFFER_MAX_BYTES: u64 = 1 << 30;
/// Default `buffer.fsync_interval_ms`.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1000;
/// Smallest accepted `buffer.max_bytes` (64 KiB).
pub const MIN_BUFFER_BYTES: u64 = 64 << 10;
/// Largest accepted `buffer.max_bytes` (1 PiB).
pub const MAX_BUFFER_BYTES: u64 = 1 << 50;

fn default_buffer_max_bytes() -> u64 {
    DEFAULT_BUFFER_MAX_BYTES
}
fn default_fsync_interval_ms() -> u64 {
    DEFAULT_FSYNC_INTERVAL_MS
}

/// How a `syslog` output frames messages on the wire (RFC 6587).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFraming {
    /// Octet counting: `MSG-LEN SP SYSLOG-MSG`.
    #[default]
    Octet,
    /// Non-transparent framing: the message, then LF (a message holding LF is split by the
    /// receiver).
    Lf,
}

/// How an `http` output encodes a batch (see README "Outputs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpEncoding {
    /// A JSON array of records (`application/json`).
    #[default]
    Json,
    /// Splunk HTTP Event Collector envelopes, one per record.
    SplunkHec,
    /// Elasticsearch `_bulk` NDJSON: a `create` action line, then the record.
    ElasticsearchBulk,
}

/// `[output.tls]` of a `syslog` output: the client side of TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTlsConfig {
    /// PEM file of CA certificates that verify the receiver's certificate (required: the
    /// receiver is always verified).
    pub ca: PathBuf,
    /// Name checked against the receiver's certificate; default: the host of `address`.
    pub server_name: Option<String>,
    /// PEM file: a client certificate (and intermediates) to present; needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM file: the client certificate's private key; needs `cert`.
    pub key: Option<PathBuf>,
}

/// `[output.sasl]` of a `kafka` output: SASL authentication on every broker connection (Kafka's
/// `SASL_PLAINTEXT`, or `SASL_SSL` with `[output.tls]`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslConfig {
    /// `plain`, `scram-sha-256` or `scram-sha-512`.
    pub mechanism: KafkaSaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (keep the config file readable by the service user only).
    pub password: String,
}

impl std::fmt::Debug for KafkaSaslConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A SASL mechanism of a `kafka` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KafkaSaslMechanism {
    /// `PLAIN` (RFC 4616): the password goes to the broker as it is; use it with TLS.
    #[serde(rename = "plain")]
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677): the password never leaves this process.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// Compression of a `kafka` output's record batches (the codecs Kafka defines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip (7.1x smaller on the PKS sample; the slowest of the four in `kafka_throughput`).
    Gzip,
    /// Snappy (3.9x smaller on the PKS sample).
    Snappy,
    /// LZ4 (4.0x smaller on the PKS sample).
    Lz4,
    /// Zstandard (7.9x smaller on the PKS sample, the smallest and fastest of the four there).
    Zstd,
}

/// How a `kafka` output picks the partition of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaPartitioning {
    /// murmur2 hash of the key modulo the partition count (Kafka's default partitioner), so
    /// one key stays in one partition, in order; records without a key go round robin.
    Key,
    /// Record by record over the partitions.
    RoundRobin,
}

/// Default `topic_partitions` of a `kafka` output.
pub const DEFAULT_KAFKA_TOPIC_PARTITIONS: u32 = 3;
/// Default `batch_max_bytes` of a `kafka` output (1 MiB).
pub const DEFAULT_KAFKA_BATCH_MAX_BYTES: usize = 1 << 20;
/// Default `batch_max_records` of a `kafka` output.
pub const DEFAULT_KAFKA_BATCH_MAX_RECORDS: usize = 10_000;
/// Default `request_timeout_ms` of a `kafka` output.
pub const DEFAULT_KAFKA_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Default `connect_timeout_ms` of a `syslog` output.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5000;
/// Default `keepalive_secs` of a `syslog` output.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 60;
/// Default `write_timeout_ms` of a `syslog` output.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Default `max_backoff_ms` of a `syslog` output.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 30_000;
/// Default `confirm_after_ms` of a `syslog` output.
pub const DEFAULT_CONFIRM_AFTER_MS: u64 = 1000;
/// Default `max_unconfirmed_bytes` of a `syslog` output (64 MiB).
pub const DEFAULT_MAX_UNCONFIRMED_BYTES: usize = 64 << 20;

fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_queue_batches() -> usize {
    64
}

impl OutputConfig {
    /// `flush_interval_ms` as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The output's disk buffer, with its path resolved (`data_dir/<name>` when not given):
    /// `buffer = false` has none; an `[output.buffer]` section or `buffer = true` has one; an
    /// output without `buffer` has one when it is a network output ([`OutputType::is_network`]).
    pub fn buffer_config(&self, data_dir: &Path) -> Option<BufferConfig> {
        let mut b = match &self.buffer {
            Some(BufferSetting::Off) => return None,
            Some(BufferSetting::On(b)) => b.clone(),
            None if self.kind.is_network() => BufferConfig::default(),
            None => return None,
        };
        if b.path.is_none() {
            b.path = Some(data_dir.join(&self.name));
        }
        Some(b)
    }
}

/// `filter = { ... }` of an output: a record passes when it passes every key given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Event categories (`err_image_pull`, `back_off`, ...); only events pass.
    pub category: Option<Vec<String>>,
    /// Record kinds: `event`, `pod_log`, `other` (any non-Kubernetes record).
    pub kind: Option<Vec<String>>,
    /// APP-NAME prefixes (`k8s.event`, `pod.log/kube-system/`).
    pub app_name_prefix: Option<Vec<String>>,
    /// Severity at most this (0 emergency .. 7 debug).
    pub max_severity: Option<u8>,
}

/// `[classify]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// `[[classify.rule]]`: tried before the built-in rules.
    #[serde(default)]
    pub rule: Vec<Rule>,
}

/// Checks a `[listen.tls]` section, reading its files (so `check-config` finds a missing or
/// mismatched certificate); `prefix` is the section's key (`listen[0].tls`).
fn validate_tls(t: &TlsConfig, prefix: &str) -> Result<(), ConfigError> {
    if !(1..=300).contains(&t.handshake_timeout_secs) {
        return Err(ConfigError(format!(
            "{prefix}.handshake_timeout_secs: {} is out of range 1..=300",
            t.handshake_timeout_secs
        )));
    }
    if !t.allowed_client_names.is_empty() && t.client_ca.is_none() {
        return Err(ConfigError(format!(
            "{prefix}.allowed_client_names: needs client_ca (client certificates are only \
             asked for and verified when client_ca is set)"
        )));
    }
    for n in &t.allowed_client_names {
        if let Err(why) = crate::tls::check_name_pattern(n) {
            return Err(ConfigError(format!(
                "{prefix}.allowed_client_names: {n:?}: {why}"
            )));
        }
    }
    crate::tls::server_config(t)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("{prefix}.{e}")))
}

/// Checks the `syslog` keys of a `type = "syslog"` output: required and in range (the other
/// types' are refused by [`check_keys_apply`]). `key` names a key of this output.
fn validate_syslog(o: &OutputConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let err = |k: &str, why: String| Err(ConfigError(format!("{}: {why}", key(k))));
    if o.kind != OutputType::Syslog {
        return Ok(());
    }
    let Some(address) = &o.address else {
        return err("address", "is required for type \"syslog\"".into());
    };
    if crate::output::syslog::split_host_port(address).is_none() {
        return err(
            "address",
            format!("{address:?} is not host:port (e.g. \"siem.example:6514\", \"[::1]:514\")"),
        );
    }
    for (k, v, lo, hi) in [
        ("connect_timeout_ms", o.connect_timeout_ms, 1, 600_000),
        ("keepalive_secs", o.keepalive_secs, 0, 86_400),
        ("write_timeout_ms", o.write_timeout_ms, 0, 3_600_000),
        ("max_backoff_ms", o.max_backoff_ms, 1, 3_600_000),
        ("confirm_after_ms", o.confirm_after_ms, 1, 600_000),
    ] {
        if let Some(v) = v {
            if !(lo..=hi).contains(&v) {
                return err(k, format!("{v} is out of range {lo}..={hi}"));
            }
        }
    }
    if let Some(b) = o.max_unconfirmed_bytes {
        if !(4096..=MAX_BUFFERED_BYTES).contains(&b) {
            return err(
                "max_unconfirmed_bytes",
                format!("{b} is out of range 4096..={MAX_BUFFERED_BYTES}"),
            );
        }
    }
    Ok(())
}

/// Config text with every `${NAME}` replaced by the value `lookup` gives for `NAME` (the
/// environment, for [`Config::load`]), so that secrets (an HEC token, a SASL password, NATS
/// credentials in a URL) can come from the service's environment instead of the file.
///
/// `NAME` is a letter or `_`, then letters, digits and `_`. The value is escaped for a TOML
/// double-quoted string (`\`, `"` and control characters), which is where it belongs: `token =
/// "${HEC_TOKEN}"`; line numbers stay as in the file. `$${` stands for a literal `${`; any other
/// `$` is left alone, and so are comment lines (first non-blank character `#`). A name that is
/// not set is an error naming it and its line: an empty secret is never sent by mistake.
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    if !text.contains("${") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(literal) = after.strip_prefix("${") {
                out.push_str("${");
                rest = literal;
            } else if let Some(inner) = after.strip_prefix('{') {
                let Some(end) = inner.find('}') else {
                    return Err(ConfigError(format!(
                        "line {}: \"${{\" without its closing \"}}\" (write \"$${{\" for a literal \"${{\")",
                        n + 1
                    )));
                };
                let name = &inner[..end];
                let mut chars = name.chars();
                let well_formed = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !well_formed {
                    return Err(ConfigError(format!(
                        "line {}: \"${{{name}}}\" is not an environment variable name (letters, digits and _; write \"$${{\" for a literal \"${{\")",
                        n + 1
                    )));
                }
                let Some(value) = lookup(name) else {
                    return Err(ConfigError(format!(
                        "line {}: ${{{name}}}: the environment variable {name} is not set",
                        n + 1
                    )));
                };
                for c in value.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                        c => out.push(c),
                    }
                }
                rest = &inner[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

impl OutputConfig {
    /// The keys that only some output types take: each key's name, whether this output sets
    /// it, and the types that take it. The one table behind every "does not apply" error; the
    /// keys every type takes (name, type, flush_interval_ms, queue_batches, filter, buffer)
    /// are not in it.
    fn typed_keys(&self) -> [(&'static str, bool, &'static [OutputType]); 36] {
        use OutputType::{File, Http, Kafka, Nats, Syslog};
        [
            ("path", self.path.is_some(), &[File]),
            ("address", self.address.is_some(), &[Syslog]),
            ("framing", self.framing.is_some(), &[Syslog]),
            ("passthrough", self.passthrough.is_some(), &[Syslog]),
            ("tls", self.tls.is_some(), &[Syslog, Http, Nats, Kafka]),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms.is_some(),
                &[Syslog, Http],
            ),
            ("keepalive_secs", self.keepalive_secs.is_some(), &[Syslog]),
            (
                "write_timeout_ms",
                self.write_timeout_ms.is_some(),
                &[Syslog],
            ),
            ("max_backoff_ms", self.max_backoff_ms.is_some(), &[Syslog]),
            (
                "confirm_after_ms",
                self.confirm_after_ms.is_some(),
                &[Syslog],
            ),
            (
                "max_unconfirmed_bytes",
                self.max_unconfirmed_bytes.is_some(),
                &[Syslog],
            ),
            ("url", self.url.is_some(), &[Http, Nats]),
            ("encoding", self.encoding.is_some(), &[Http]),
            ("token", self.token.is_some(), &[Http]),
            ("sourcetype", self.sourcetype.is_some(), &[Http]),
            ("source", self.source.is_some(), &[Http]),
            ("index", self.index.is_some(), &[Http]),
            ("gzip", self.gzip.is_some(), &[Http]),
            ("headers", self.headers.is_some(), &[Http]),
            (
                "batch_max_bytes",
                self.batch_max_bytes.is_some(),
                &[Http, Kafka],
            ),
            (
                "batch_max_records",
                self.batch_max_records.is_some(),
                &[Http, Kafka],
            ),
            (
                "request_timeout_ms",
                self.request_timeout_ms.is_some(),
                &[Http, Kafka],
            ),
            ("dead_letter_path", self.dead_letter_path.is_some(), &[Http]),
            ("stream", self.stream.is_some(), &[Nats]),
            ("subject", self.subject.is_some(), &[Nats]),
            ("max_inflight", self.max_inflight.is_some(), &[Nats]),
            ("ack_timeout_ms", self.ack_timeout_ms.is_some(), &[Nats]),
            ("brokers", self.brokers.is_some(), &[Kafka]),
            ("topic", self.topic.is_some(), &[Kafka]),
            ("key", self.key.is_some(), &[Kafka]),
            ("partitioning", self.partitioning.is_some(), &[Kafka]),
            ("create_topic", self.create_topic.is_some(), &[Kafka]),
            (
                "topic_partitions",
                self.topic_partitions.is_some(),
                &[Kafka],
            ),
            (
                "replication_factor",
                self.replication_factor.is_some(),
                &[Kafka],
            ),
            ("sasl", self.sasl.is_some(), &[Kafka]),
            ("compression", self.compression.is_some(), &[Kafka]),
        ]
    }
}

/// Refuses a key the output's type does not take, naming the types that do ("`gzip`: does
/// not apply to type "nats" (only to "http")").
fn check_keys_apply(o: &OutputConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    for (k, set, types) in o.typed_keys() {
        if set && !types.contains(&o.kind) {
            let names: Vec<String> = types.iter().map(|t| format!("{:?}", t.as_str())).collect();
            let only = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            return Err(ConfigError(format!(
                "{}: does not apply to type {:?} (only to {only})",
                key(k),
                o.kind.as_str()
            )));
        }
    }
    Ok(())
}

/// Whether `name` can be one folder name (no separator, not `.` or `..`).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// `path` with `.` components and repeated separators removed (for comparing buffer paths).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

impl Config {
    /// Creates every output's disk-buffer folder and checks it can be written (what
    /// `check-config` and `serve` do before anything else). The error names the key the folder
    /// comes from: `buffer.path`, or `server.data_dir` for the default.
    pub fn check_buffer_dirs(&self) -> Result<(), ConfigError> {
        for (i, o) in self.output.iter().enumerate() {
            let Some(b) = o.buffer_config(&self.server.data_dir) else {
                continue;
            };
            let path = b.path.unwrap_or_default();
            let explicit = matches!(&o.buffer, Some(BufferSetting::On(c)) if c.path.is_some());
            let key = if explicit {
                format!("output[{i}] {:?}.buffer.path", o.name)
            } else {
                format!("server.data_dir (disk buffer of output[{i}] {:?})", o.name)
            };
            let probe = path.join(".write-check");
            let r = std::fs::create_dir_all(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
                .and_then(|()| {
                    std::fs::write(&probe, b"ok")
                        .map_err(|e| format!("cannot write in {}: {e}", path.display()))
                })
                .and_then(|()| {
                    std::fs::remove_file(&probe)
                        .map_err(|e| format!("cannot remove {}: {e}", probe.display()))
                });
            if let Err(why) = r {
                return Err(ConfigError(format!("{key}: {why}")));
            }
        }
        Ok(())
    }

    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let text = expand_env(&text, |name| std::env::var(name).ok())
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and checks config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The classifier with this config's rules.
    pub fn classifier(&self) -> Result<Classifier, ConfigError> {
        Classifier::with_rules(&self.classify.rule)
            .map_err(|e| ConfigError(format!("classify.rule: {e}")))
    }

    /// Checks what serde cannot: addresses, ranges, names, filters, rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: String, why: String| Err(ConfigError(format!("{key}: {why}")));
        if self.listen.is_empty() {
            return err(
                "listen".into(),
                "no [[listen]] section: at least one listener is needed".into(),
            );
        }
        if self.output.is_empty() {
            return err(
                "output".into(),
                "no [[output]] section: at least one output is needed".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.server.log_level) {
            return err(
                "server.log_level".into(),
                format!("{:?} is not a log filter ({e})", self.server.log_level),
            );
        }
        let inflight = self.server.max_inflight_bytes;
        if !(1 << 20..=1 << 36).contains(&inflight) {
            return err(
                "server.max_inflight_bytes".into(),
                format!("{inflight} is out of range 1048576..=68719476736 (1 MiB .. 64 GiB)"),
            );
        }
        let mut addrs = Vec::new();
        for (i, l) in self.listen.iter().enumerate() {
            let key = |k: &str| format!("listen[{i}].{k}");
            let addr = l
                .socket_addr()
                .map_err(|e| ConfigError(format!("{}: {e}", key("address"))))?;
            // Port 0 (an ephemeral port, tests) is a different port each time.
            if addr.port() != 0 && addrs.contains(&addr) {
                return err(
                    key("address"),
                    format!("{addr} is used by an earlier listener"),
                );
            }
            addrs.push(addr);
            if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&l.max_frame_bytes) {
                return err(
                    key("max_frame_bytes"),
                    format!(
                        "{} is out of range {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES}",
                        l.max_frame_bytes
                    ),
                );
            }
            if l.max_connections == 0 || l.max_connections > 1_000_000 {
                return err(
                    key("max_connections"),
                    format!("{} is out of range 1..=1000000", l.max_connections),
                );
            }
            if !(4096..=16 << 20).contains(&l.read_buffer_bytes) {
                return err(
                    key("read_buffer_bytes"),
                    format!("{} is out of range 4096..=16777216", l.read_buffer_bytes),
                );
            }
            if l.max_connections_per_ip == 0 || l.max_connections_per_ip > 1_000_000 {
                return err(
                    key("max_connections_per_ip"),
                    format!("{} is out of range 1..=1000000", l.max_connections_per_ip),
                );
            }
            // The decoder keeps up to max_frame_bytes plus a 21-octet MSG-LEN between reads;
            // the buffer must hold that and still leave room to read.
            let min_buffered = l.max_frame_bytes + MIN_READ_ROOM;
            if let Some(b) = l.max_buffered_bytes {
                if !(min_buffered..=MAX_BUFFERED_BYTES).contains(&b) {
                    return err(
                        key("max_buffered_bytes"),
                        format!(
                            "{b} is out of range {min_buffered}..={MAX_BUFFERED_BYTES} \
                             (at least max_frame_bytes + {MIN_READ_ROOM})"
                        ),
                    );
                }
            }
            if let Some(r) = l.max_messages_per_sec {
                if r == 0 || r > 100_000_000 {
                    return err(
                        key("max_messages_per_sec"),
                        format!("{r} is out of range 1..=100000000"),
                    );
                }
            }
            if let Some(t) = &l.tls {
                validate_tls(t, &format!("listen[{i}].tls"))?;
            }
        }
        if self.output.len() > MAX_OUTPUTS {
            return err(
                "output".into(),
                format!(
                    "{} outputs, at most {MAX_OUTPUTS} are supported",
                    self.output.len()
                ),
            );
        }
        let classifier = self.classifier()?;
        self.admin.socket_addr()?;
        if !(1..=1000).contains(&self.admin.top_namespaces) {
            return err(
                "admin.top_namespaces".into(),
                format!("{} is out of range 1..=1000", self.admin.top_namespaces),
            );
        }
        if !(1..=60).contains(&self.admin.sample_interval_secs) {
            return err(
                "admin.sample_interval_secs".into(),
                format!("{} is out of range 1..=60", self.admin.sample_interval_secs),
            );
        }
        for c in &self.admin.failure_categories {
            if !classifier.categories().iter().any(|k| k == c) {
                return err(
                    "admin.failure_categories".into(),
                    format!(
                        "unknown category {c:?}; known: {}",
                        classifier.categories().join(", ")
                    ),
                );
            }
        }
        let mut names: Vec<&str> = Vec::new();
        let mut buffers: Vec<(PathBuf, String)> = Vec::new();
        for (i, o) in self.output.iter().enumerate() {
            let key = |k: &str| format!("output[{i}] {:?}.{k}", o.name);
            if o.name.is_empty() {
                return err(format!("output[{i}].name"), "must not be empty".into());
            }
            if names.contains(&o.name.as_str()) {
                return err(key("name"), "is used by an earlier output".into());
            }
            names.push(&o.name);
            check_keys_apply(o, &key)?;
            validate_syslog(o, &key)?;
            crate::output::http::validate(o, &key)?;
            crate::output::nats::validate(o, &key)?;
            crate::output::kafka::validate(o, &key)?;
            // `[output.tls]` of any type that takes it (check_keys_apply refused the others):
            // its files are read and must make a client config.
            if let Some(t) = &o.tls {
                crate::output::syslog::client_config(t)
                    .map_err(|e| ConfigError(format!("{}.{e}", key("tls"))))?;
            }
            match (o.kind, &o.path) {
                (OutputType::File, None) => {
                    return err(key("path"), "is required for type \"file\"".into())
                }
                (OutputType::File, Some(p)) if p.as_os_str().is_empty() => {
                    return err(key("path"), "must not be empty".into())
                }
                _ => {}
            }
            if o.flush_interval_ms == 0 || o.flush_interval_ms > 3_600_000 {
                return err(
                    key("flush_interval_ms"),
                    format!("{} is out of range 1..=3600000", o.flush_interval_ms),
                );
            }
            if o.queue_batches == 0 || o.queue_batches > 65_536 {
                return err(
                    key("queue_batches"),
                    format!("{} is out of range 1..=65536", o.queue_batches),
                );
            }
            if let Some(b) = o.buffer_config(&self.server.data_dir) {
                let explicit = matches!(&o.buffer, Some(BufferSetting::On(c)) if c.path.is_some());
                if !explicit && !is_plain_name(&o.name) {
                    return err(
                        key("name"),
                        "cannot be a folder name under server.data_dir (its disk buffer); \
                         set buffer.path or choose a name without '/'"
                            .into(),
                    );
                }
                if !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&b.max_bytes) {
                    return err(
                        key("buffer.max_bytes"),
                        format!(
                            "{} is out of range {MIN_BUFFER_BYTES}..={MAX_BUFFER_BYTES}",
                            b.max_bytes
                        ),
                    );
                }
                if b.fsync_interval_ms > 3_600_000 {
                    return err(
                        key("buffer.fsync_interval_ms"),
                        format!("{} is out of range 0..=3600000", b.fsync_interval_ms),
                    );
                }
                let path = b.path.unwrap_or_default();
                if path.as_os_str().is_empty() {
                    return err(key("buffer.path"), "must not be empty".into());
                }
                let norm = normalize(&path);
                if let Some((_, other)) = buffers.iter().find(|(p, _)| *p == norm) {
                    return err(
                        key("buffer.path"),
                        format!(
                            "{} is also the disk buffer of {other}: two outputs cannot share one",
                            path.display()
                        ),
                    );
                }
                buffers.push((norm, format!("output[{i}] {:?}", o.name)));
            }
            if let Some(f) = &o.filter {
                for c in f.category.iter().flatten() {
                    if !classifier.categories().iter().any(|k| k == c) {
                        return err(
                            key("filter.category"),
                            format!(
                                "unknown category {c:?}; known: {}",
                                classifier.categories().join(", ")
                            ),
                        );
                    }
                }
                for k in f.kind.iter().flatten() {
                    if !["event", "pod_log", "other"].contains(&k.as_str()) {
                        return err(
                            key("filter.kind"),
                            format!("unknown kind {k:?}; known: event, pod_log, other"),
                        );
                    }
                }
                if let Some(s) = f.max_severity {
                    if s > 7 {
                        return err(
                            key("filter.max_severity"),
                            format!("{s} is out of range 0..=7"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"fwd\"\n";

    fn error(output: &str) -> String {
        match Config::from_toml(&format!("{BASE}{output}")) {
            Ok(_) => panic!("accepted: {output}"),
            Err(e) => e.0,
        }
    }

    /// The config shape the outputs were specified with (issue #6) is accepted as written, with
    /// the disk buffer where it says and on by default for the other network outputs.
    #[test]
    fn the_documented_output_shape_parses() {
        let c = Config::from_toml(
            r#"
[[listen]]
address = "127.0.0.1:1514"

[[output]]
name = "siem"
type = "syslog"                 # syslog | http | nats | file | stdout
address = "127.0.0.1:7514"
framing = "octet"               # octet | lf
passthrough = false
[output.buffer]                 # disk buffer; omit for memory only
path = "/var/lib/syslog-sink/siem"
max_bytes = 1073741824

[[output]]
name = "alerts"
type = "http"
url = "https://hooks.example/alerts"
encoding = "json"               # json | splunk_hec | elasticsearch_bulk
filter = { category = ["err_image_pull", "back_off"] }

[[output]]
name = "bus"
type = "nats"
url = "nats://127.0.0.1:4222"
stream = "K8S_EVENTS"
subject = "k8s.events.{category}.{namespace}"
"#,
        )
        .unwrap();
        let data = Path::new("data");
        let b: Vec<_> = c
            .output
            .iter()
            .map(|o| o.buffer_config(data).and_then(|b| b.path))
            .collect();
        assert_eq!(
            b,
            [
                Some(PathBuf::from("/var/lib/syslog-sink/siem")),
                Some(PathBuf::from("data/alerts")),
                Some(PathBuf::from("data/bus")),
            ]
        );
        assert_eq!(c.output[1].encoding, Some(HttpEncoding::Json));
    }

    /// A key of another output type is refused with the types that take it, from the one table.
    #[test]
    fn keys_of_other_types_name_the_types_that_take_them() {
        let tls = "[output.tls]\nca = \"ca.pem\"\n";
        for (text, want) in [
            (
                format!("type = \"file\"\npath = \"x\"\n{tls}"),
                "output[0] \"fwd\".tls: does not apply to type \"file\" (only to \"syslog\", \"http\", \"nats\" and \"kafka\")",
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\nurl = \"http://h/\"\n".into(),
                "output[0] \"fwd\".url: does not apply to type \"syslog\" (only to \"http\" and \"nats\")",
            ),
            (
                "type = \"stdout\"\npath = \"x\"\n".into(),
                "output[0] \"fwd\".path: does not apply to type \"stdout\" (only to \"file\")",
            ),
            (
                "type = \"nats\"\nurl = \"nats://h:4222\"\nconnect_timeout_ms = 5\n".into(),
                "output[0] \"fwd\".connect_timeout_ms: does not apply to type \"nats\" (only to \"syslog\" and \"http\")",
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\nstream = \"S\"\n".into(),
                "output[0] \"fwd\".stream: does not apply to type \"http\" (only to \"nats\")",
            ),
        ] {
            assert_eq!(error(&text), want, "{text:?}");
        }
        // Every key in the table is taken by at least one type, and named once.
        let o = Config::from_toml(&format!("{BASE}type = \"stdout\"\n"))
            .unwrap()
            .output
            .remove(0);
        let keys = o.typed_keys();
        for (i, (k, set, types)) in keys.iter().enumerate() {
            assert!(!set && !types.is_empty(), "{k}");
            assert!(
                keys[..i].iter().all(|(other, _, _)| other != k),
                "{k} twice"
            );
        }
    }

    #[test]
    fn admin_and_log_format_keys_are_checked() {
        let base = "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"o\"\ntype = \"stdout\"\n";
        let ok = Config::from_toml(base).unwrap();
        assert_eq!(
            ok.admin.socket_addr(),
            Ok(None),
            "no [admin]: no admin listener"
        );
        assert_eq!(ok.server.log_format, LogFormat::Text);
        let on = Config::from_toml(&format!(
            "[server]\nlog_format = \"json\"\n[admin]\naddress = \"127.0.0.1:9514\"\n{base}"
        ))
        .unwrap();
        assert_eq!(on.server.log_format, LogFormat::Json);
        assert_eq!(on.admin.top_namespaces, 20);
        assert!(on.admin.socket_addr().unwrap().is_some());
        for (text, needles) in [
            (
                "[admin]\naddress = \"localhost\"\n",
                &["admin.address", "ip:port"][..],
            ),
            (
                "[admin]\ntop_namespaces = 0\n",
                &["admin.top_namespaces", "1..=1000"],
            ),
            (
                "[admin]\nsample_interval_secs = 0\n",
                &["admin.sample_interval_secs"],
            ),
            (
                "[admin]\nfailure_categories = [\"nope\"]\n",
                &["admin.failure_categories", "nope", "back_off"],
            ),
            ("[admin]\nport = 1\n", &["port"]),
            ("[server]\nlog_format = \"xml\"\n", &["xml"]),
        ] {
            let e = Config::from_toml(&format!("{text}{base}")).unwrap_err().0;
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn environment_variables_are_expanded_escaped_and_required() {
        let env = |name: &str| match name {
            "HEC_TOKEN" => Some("t0k\"en\\x\n".to_string()),
            "PORT" => Some("9092".to_string()),
            _ => None,
        };
        let text = "# ${NOT_SET} in a comment\ntoken = \"${HEC_TOKEN}\"\n\
                    brokers = [\"k:${PORT}\"]\nprice = \"$5 and $${literal}\"\n";
        let got = expand_env(text, env).unwrap();
        assert_eq!(
            got,
            "# ${NOT_SET} in a comment\ntoken = \"t0k\\\"en\\\\x\\n\"\n\
             brokers = [\"k:9092\"]\nprice = \"$5 and ${literal}\"\n"
        );
        let v: toml::Value = toml::from_str(&got).unwrap();
        assert_eq!(
            v["token"].as_str(),
            Some("t0k\"en\\x\n"),
            "the TOML string is the value"
        );
        for (text, needles) in [
            (
                "a = 1\nb = \"${NOT_SET}\"\n",
                &["line 2", "NOT_SET", "not set"][..],
            ),
            (
                "b = \"${1X}\"\n",
                &["line 1", "${1X}", "not an environment variable name"],
            ),
            ("b = \"${OPEN\"\n", &["line 1", "closing"]),
        ] {
            let e = expand_env(text, env).unwrap_err().to_string();
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
        assert_eq!(expand_env("no dollars", env).unwrap(), "no dollars");
    }

    #[test]
    fn kafka_output_keys_are_checked_and_named() {
        let ok = Config::from_toml(&format!(
            "{BASE}type = \"kafka\"\nbrokers = [\"k1:9092\", \"[::1]:9093\"]\n\
             topic = \"k8s-events\"\nkey = \"k8s.namespace\"\ntopic_partitions = 6\n\
             batch_max_bytes = 65536\nbatch_max_records = 7\nrequest_timeout_ms = 1000\n"
        ))
        .unwrap();
        assert_eq!(ok.output[0].kind, OutputType::Kafka);
        assert_eq!(
            ok.output[0].partitioning, None,
            "defaults to key in the output"
        );
        let sasl = Config::from_toml(&format!(
            "{BASE}type = \"kafka\"\nbrokers = [\"k1:9092\"]\ntopic = \"t\"\n\
             [output.sasl]\nmechanism = \"scram-sha-512\"\nusername = \"sink\"\npassword = \"pw-42\"\n"
        ))
        .unwrap();
        let s = sasl.output[0].sasl.as_ref().expect("sasl");
        assert_eq!(s.mechanism, KafkaSaslMechanism::ScramSha512);
        assert!(
            !format!("{s:?}").contains("pw-42"),
            "Debug hides the password"
        );
        let k = "type = \"kafka\"\nbrokers = [\"k:9092\"]\n";
        for (text, needles) in [
            (
                "type = \"kafka\"\ntopic = \"t\"\n".to_string(),
                &["output[0] \"fwd\".brokers", "required"][..],
            ),
            (
                "type = \"kafka\"\nbrokers = []\ntopic = \"t\"\n".into(),
                &["brokers", "required"],
            ),
            (
                "type = \"kafka\"\nbrokers = [\"k\"]\ntopic = \"t\"\n".into(),
                &["brokers", "\"k\"", "host:port"],
            ),
            (k.to_string(), &["topic", "required"]),
            (
                format!("{k}topic = \"a b\"\n"),
                &["topic", "not a Kafka topic"],
            ),
            (
                format!("{k}topic = \"..\"\n"),
                &["topic", "not a Kafka topic"],
            ),
            (
                format!("{k}topic = \"t\"\nkey = \"k8s..namespace\"\n"),
                &["key", "field path"],
            ),
            (
                format!("{k}topic = \"t\"\npartitioning = \"key\"\n"),
                &["partitioning", "needs `key`"],
            ),
            (
                format!("{k}topic = \"t\"\npartitioning = \"sticky\"\n"),
                &["sticky"],
            ),
            (
                format!("{k}topic = \"t\"\ntopic_partitions = 0\n"),
                &["topic_partitions", "out of range"],
            ),
            (
                format!("{k}topic = \"t\"\nbatch_max_bytes = 10\n"),
                &["batch_max_bytes", "out of range"],
            ),
            (
                format!("{k}topic = \"t\"\nrequest_timeout_ms = 0\n"),
                &["request_timeout_ms", "out of range"],
            ),
            (
                format!("{k}topic = \"t\"\npath = \"x\"\n"),
                &["path", "does not apply"],
            ),
            (
                "type = \"stdout\"\ntopic = \"t\"\n".into(),
                &["topic", "does not apply", "only to \"kafka\""],
            ),
            (
                format!("{k}topic = \"t\"\naddress = \"h:1\"\n"),
                &["address", "does not apply"],
            ),
            (
                format!("{k}topic = \"t\"\ncompression = \"brotli\"\n"),
                &["brotli", "zstd"],
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\ncompression = \"gzip\"\n".into(),
                &["compression", "does not apply", "only to \"kafka\""],
            ),
            (
                format!("{k}topic = \"t\"\n[output.tls]\nca = \"c.pem\"\nserver_name = \"k\"\n"),
                &["tls.server_name", "does not apply to type \"kafka\""],
            ),
            (
                format!("{k}topic = \"t\"\n[output.tls]\nca = \"/nonexistent/ca.pem\"\n"),
                &["tls.ca", "/nonexistent/ca.pem"],
            ),
            (
                format!("{k}topic = \"t\"\n[output.sasl]\nmechanism = \"gssapi\"\nusername = \"u\"\npassword = \"p\"\n"),
                &["gssapi", "plain", "scram-sha-512"],
            ),
            (
                format!("{k}topic = \"t\"\n[output.sasl]\nmechanism = \"plain\"\nusername = \"\"\npassword = \"p\"\n"),
                &["sasl.username", "empty"],
            ),
            (
                format!("{k}topic = \"t\"\n[output.sasl]\nmechanism = \"plain\"\nusername = \"u\"\n"),
                &["password"],
            ),
            (
                "type = \"http\"\nurl = \"http://h/\"\n[output.sasl]\nmechanism = \"plain\"\nusername = \"u\"\npassword = \"p\"\n".into(),
                &["sasl", "does not apply to type \"http\"", "only to \"kafka\""],
            ),
        ] {
            let e = error(&text);
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn syslog_output_keys_are_checked_and_named() {
        let ok = Config::from_toml(&format!(
            "{BASE}type = \"syslog\"\naddress = \"siem.example:6514\"\nframing = \"lf\"\n\
             passthrough = true\nmax_backoff_ms = 500\n"
        ))
        .unwrap();
        assert_eq!(ok.output[0].framing, Some(ForwardFraming::Lf));
        for (text, needles) in [
            ("type = \"syslog\"\n", &["output[0] \"fwd\".address", "required"][..]),
            (
                "type = \"syslog\"\naddress = \"siem.example\"\n",
                &["address", "host:port"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\npath = \"x\"\n",
                &["path", "does not apply"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\nmax_backoff_ms = 0\n",
                &["max_backoff_ms", "out of range"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\nconfirm_after_ms = 0\n",
                &["confirm_after_ms", "out of range"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\nmax_unconfirmed_bytes = 10\n",
                &["max_unconfirmed_bytes", "out of range"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\nframing = \"auto\"\n",
                &["auto"],
            ),
            (
                "type = \"stdout\"\naddress = \"h:1\"\n",
                &["address", "does not apply", "stdout"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\n[output.tls]\nca = \"/nonexistent/ca.pem\"\n",
                &["tls.ca", "/nonexistent/ca.pem"],
            ),
            (
                "type = \"syslog\"\naddress = \"h:1\"\n[output.tls]\nca = \"a\"\ncert = \"c\"\n",
                &["tls", "cert and key"],
            ),
        ] {
            let e = error(text);
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn disk_buffers_default_on_for_network_outputs_and_paths_must_differ() {
        let two = |a: &str, b: &str| {
            format!(
                "[server]\ndata_dir = \"/var/lib/s\"\n[[listen]]\naddress = \"127.0.0.1:1514\"\n\
                 [[output]]\nname = \"a\"\n{a}\n[[output]]\nname = \"b\"\n{b}\n"
            )
        };
        let fwd = "type = \"syslog\"\naddress = \"h:1\"";
        let c = Config::from_toml(&two(fwd, "type = \"stdout\"")).unwrap();
        let dir = c.server.data_dir.clone();
        let b = c.output[0].buffer_config(&dir).unwrap();
        assert_eq!(b.path.as_deref(), Some(Path::new("/var/lib/s/a")));
        assert_eq!(b.max_bytes, DEFAULT_BUFFER_MAX_BYTES);
        assert_eq!(b.fsync_interval_ms, DEFAULT_FSYNC_INTERVAL_MS);
        assert_eq!(
            c.output[1].buffer_config(&dir),
            None,
            "stdout: none by default"
        );
        let c = Config::from_toml(&two(
            &format!("{fwd}\nbuffer = false"),
            "type = \"stdout\"\nbuffer = true",
        ))
        .unwrap();
        assert_eq!(c.output[0].buffer_config(&dir), None);
        assert!(c.output[1].buffer_config(&dir).is_some());
        assert_eq!(
            ServerConfig::default().data_dir,
            Path::new(DEFAULT_DATA_DIR)
        );
        for (a, b, needles) in [
            (
                format!("{fwd}\n[output.buffer]\npath = \"/var/lib/s/./b\""),
                "type = \"stdout\"\nbuffer = true".to_string(),
                &["output[1] \"b\".buffer.path", "output[0] \"a\"", "share"][..],
            ),
            (
                format!("{fwd}\n[output.buffer]\nmax_bytes = 10"),
                "type = \"stdout\"".into(),
                &["output[0] \"a\".buffer.max_bytes", "out of range"],
            ),
            (
                format!("{fwd}\n[output.buffer]\nfsync_interval_ms = 99999999"),
                "type = \"stdout\"".into(),
                &["buffer.fsync_interval_ms"],
            ),
            (
                format!("{fwd}\n[output.buffer]\nmax_byte = 1"),
                "type = \"stdout\"".into(),
                &["max_byte"],
            ),
            (
                format!("{fwd}\nbuffer = 3"),
                "type = \"stdout\"".into(),
                &["true, false or an [output.buffer] table"],
            ),
        ] {
            let e = Config::from_toml(&two(&a, &b)).unwrap_err().0;
            for n in needles {
                assert!(e.contains(n), "{a:?}: {e:?} lacks {n:?}");
            }
        }
        let e = Config::from_toml(&format!(
            "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"x/y\"\n{fwd}\n"
        ))
        .unwrap_err()
        .0;
        assert!(e.contains("buffer.path"), "{e}");
    }

    #[test]
    fn buffer_dirs_are_created_and_an_unusable_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let text = |data: &Path| {
            format!(
                "[server]\ndata_dir = {:?}\n[[listen]]\naddress = \"127.0.0.1:1514\"\n\
                 [[output]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"h:1\"\n",
                data.display().to_string()
            )
        };
        let ok = Config::from_toml(&text(&dir.path().join("data"))).unwrap();
        ok.check_buffer_dirs().unwrap();
        assert!(dir.path().join("data/siem").is_dir());
        let bad = Config::from_toml(&text(&blocker.join("data"))).unwrap();
        let e = bad.check_buffer_dirs().unwrap_err().0;
        assert!(e.starts_with("server.data_dir"), "{e}");
        assert!(e.contains("siem") && e.contains("cannot create"), "{e}");
    }
}
