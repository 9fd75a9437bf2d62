//! `http` output: records in batches POSTed to a URL, as a JSON webhook, Splunk HEC events or
//! an Elasticsearch `_bulk` request.
//!
//! **Batches.** Records taken from the queue wait in a bounded list until a request carries
//! them: a request goes out once `batch_max_bytes` (record bytes, before the envelope and gzip)
//! or `batch_max_records` are reached, whenever the output's queue runs empty, and at least
//! every `flush_interval_ms` (see [`super::run`]). So under load requests are full, and when
//! idle a record waits no longer than one request.
//!
//! **Encodings** (the record's JSON line is spliced in as it is, never parsed again; the few
//! fields an envelope needs are taken from the line by a targeted scan, see `Fields`):
//! - `json`: one JSON array of records, `Content-Type: application/json`.
//! - `splunk_hec`: one HEC envelope per record, concatenated (newline-separated), as the
//!   `/services/collector/event` endpoint takes them: `{"time":<epoch seconds with
//!   microseconds>,"host":<hostname>,"source":<source or app_name>,"sourcetype":..,
//!   "index":..,"event":<record>}`, `Authorization: Splunk <token>`. `time` comes from the
//!   record's `timestamp` (RFC 3339), else its `received_at`; a key with nothing to say is
//!   left out (HEC then uses the token's defaults).
//! - `elasticsearch_bulk`: NDJSON, `{"create":{"_index":"<index>"}}` then the record, per
//!   record; `<index>` is the `index` pattern (strftime, default `syslog-sink-%Y.%m.%d`) applied
//!   to the record's time in UTC (as for HEC `time`).
//!
//! With `gzip = true` the body is gzip-compressed (level 1, on a blocking thread) and sent with
//! `Content-Encoding: gzip`.
//!
//! **Delivery.** `flush` returns `Ok` only once every record taken so far was accepted: a 2xx
//! answer (for Elasticsearch: every item of the bulk answer succeeded or was dead-lettered).
//! - Retried (the records are kept and `flush` fails; [`super::run`] retries it with backoff
//!   while the queue fills and the listeners slow down): connection errors, timeouts, 408, 429,
//!   5xx, 3xx, an answer that cannot be read; bulk items with status 408, 429 or 5xx (only
//!   those items are sent again).
//! - 413 (payload too large) for a request of several records: the output halves its records
//!   per request (for good) and sends them again; a single record answered 413 is dead-lettered.
//! - Dead-lettered (never retried): any other 4xx answer (the whole batch), bulk items with any
//!   other error status (mapping errors...). They are appended to `dead_letter_path` as JSON
//!   lines `{"dead_lettered_at","output","status","reason","record"}`, counted
//!   (`dead_letters`) and logged (rate limited); without `dead_letter_path` each one is logged
//!   as an error line holding the record.
//!
//! Records may arrive twice (at-least-once): a request whose answer was lost (timeout,
//! connection cut after the receiver read it) is sent again.
//!
//! One kept-alive HTTP/1.1 connection, one request at a time; a connection that fails or that
//! the receiver closed is replaced on the next request.
//!
//! **Memory.** Waiting records are slices of the batches' buffers when the output wants most of
//! a batch, and copies when it wants a few lines of it (so a selective filter does not keep
//! whole batches alive): at most about twice `batch_max_bytes` plus one batch is held.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use memchr::memmem::Finder;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Output;
use crate::config::{
    ConfigError, HttpEncoding, OutputConfig, OutputType, DEFAULT_CONNECT_TIMEOUT_MS,
};
use crate::metrics::{Metrics, OutputMetrics};
use crate::route::Batch;
use crate::tls::{provider, LogLimiter};

/// Default `batch_max_bytes` (1 MiB).
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;
/// Default `batch_max_records`.
pub const DEFAULT_BATCH_MAX_RECORDS: usize = 10_000;
/// Default `request_timeout_ms`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default `index` of `elasticsearch_bulk`.
pub const DEFAULT_ES_INDEX: &str = "syslog-sink-%Y.%m.%d";
/// HEC path appended to a `splunk_hec` URL that has none.
pub const HEC_PATH: &str = "/services/collector/event";
/// Bulk path appended to an `elasticsearch_bulk` URL that has none.
pub const BULK_PATH: &str = "/_bulk";
/// Largest answer body read (a bulk answer lists every item); a larger one is an error.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// At most this many characters of an answer body go into a log line or dead letter.
const REASON_CHARS: usize = 300;

/// Checks the `http` keys of a `type = "http"` output: required and well-formed (other types'
/// outputs are refused them by `config::check_keys_apply`). `key` names a key of this output.
pub fn validate(o: &OutputConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let err = |k: &str, why: String| Err(ConfigError(format!("{}: {why}", key(k))));
    if o.kind != OutputType::Http {
        return Ok(());
    }
    let Some(url) = &o.url else {
        return err("url", "is required for type \"http\"".into());
    };
    let encoding = o.encoding.unwrap_or_default();
    let target = Target::parse(url, encoding)
        .map_err(|why| ConfigError(format!("{}: {why}", key("url"))))?;
    if target.https {
        let name = o.tls.as_ref().and_then(|t| t.server_name.clone());
        let k = if name.is_some() {
            "tls.server_name"
        } else {
            "url"
        };
        let name = name.unwrap_or(target.host);
        if ServerName::try_from(name.clone()).is_err() {
            return err(
                k,
                format!("{name:?} is not a DNS name or IP address for TLS"),
            );
        }
    }
    let hec = encoding == HttpEncoding::SplunkHec;
    let es = encoding == HttpEncoding::ElasticsearchBulk;
    match (&o.token, hec) {
        (None, true) => {
            return err(
                "token",
                "is required for encoding \"splunk_hec\" (the HEC token)".into(),
            )
        }
        (Some(_), false) => {
            return err(
                "token",
                "applies to encoding \"splunk_hec\" only (other receivers: set \
                 headers.Authorization)"
                    .into(),
            )
        }
        (Some(t), true)
            if t.is_empty() || HeaderValue::from_str(&format!("Splunk {t}")).is_err() =>
        {
            return err("token", "must be a non-empty header-safe string".into())
        }
        _ => {}
    }
    for (k, v) in [("sourcetype", &o.sourcetype), ("source", &o.source)] {
        if v.is_some() && !hec {
            return err(k, "applies to encoding \"splunk_hec\" only".into());
        }
    }
    if let Some(index) = &o.index {
        if !hec && !es {
            return err(
                "index",
                "applies to encodings \"splunk_hec\" and \"elasticsearch_bulk\" only".into(),
            );
        }
        if es {
            check_index_pattern(index)
                .map_err(|why| ConfigError(format!("{}: {why}", key("index"))))?;
        } else if index.is_empty() {
            return err("index", "must not be empty".into());
        }
    }
    for (name, value) in o.headers.iter().flatten() {
        let k = format!("headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes());
        match n {
            Err(_) => return err(&k, "is not a valid header name".into()),
            Ok(n) if n == HOST || n == CONTENT_ENCODING || n == hyper::header::CONTENT_LENGTH => {
                return err(&k, "is set by the output itself".into())
            }
            Ok(n) if n == AUTHORIZATION && hec => {
                return err(&k, "comes from token with encoding \"splunk_hec\"".into())
            }
            Ok(_) => {}
        }
        if HeaderValue::from_str(value).is_err() {
            return err(
                &k,
                "is not a valid header value (visible ASCII only)".into(),
            );
        }
    }
    if let Some(b) = o.batch_max_bytes {
        if !(1024..=256 << 20).contains(&b) {
            return err(
                "batch_max_bytes",
                format!("{b} is out of range 1024..=268435456"),
            );
        }
    }
    if let Some(n) = o.batch_max_records {
        if !(1..=1_000_000).contains(&n) {
            return err(
                "batch_max_records",
                format!("{n} is out of range 1..=1000000"),
            );
        }
    }
    for (k, v) in [
        ("request_timeout_ms", o.request_timeout_ms),
        ("connect_timeout_ms", o.connect_timeout_ms),
    ] {
        if let Some(v) = v {
            if !(1..=600_000).contains(&v) {
                return err(k, format!("{v} is out of range 1..=600000"));
            }
        }
    }
    if let Some(p) = &o.dead_letter_path {
        if p.as_os_str().is_empty() {
            return err("dead_letter_path", "must not be empty".into());
        }
    }
    if o.tls.is_some() && !url.starts_with("https://") {
        return err("tls", "needs an https:// url".into());
    }
    Ok(())
}

/// Checks an Elasticsearch index pattern: valid strftime, and a valid index name for any date
/// (lowercase, none of `\ / * ? " < > | , #` or space, not starting with `-`, `_`, `+`).
fn check_index_pattern(p: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if StrftimeItems::new(p).any(|i| matches!(i, Item::Error)) {
        return Err(format!("{p:?} is not a valid strftime pattern"));
    }
    for sample in ["2024-12-31T23:59:59Z", "2025-01-01T00:00:00Z"] {
        let t = DateTime::parse_from_rfc3339(sample)
            .map_err(|e| e.to_string())?
            .with_timezone(&Utc);
        let mut name = String::new();
        write!(name, "{}", t.format(p)).map_err(|_| format!("{p:?} cannot be formatted"))?;
        let bad = name.chars().find(|c| {
            c.is_uppercase()
                || matches!(
                    c,
                    '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ' ' | ':'
                )
        });
        if let Some(c) = bad {
            return Err(format!(
                "{p:?} makes index names like {name:?}, which holds {c:?} (Elasticsearch index \
                 names are lowercase, without \\ / * ? \" < > | , # : or space)"
            ));
        }
        if name.starts_with(['-', '_', '+']) || name == "." || name == ".." || name.len() > 255 {
            return Err(format!(
                "{p:?} makes the index name {name:?}, which Elasticsearch refuses"
            ));
        }
    }
    Ok(())
}

/// Where requests go: the parsed URL.
#[derive(Debug, Clone)]
struct Target {
    https: bool,
    /// Host to connect to (no brackets around an IPv6 address).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: HeaderValue,
    /// Request target: path and query.
    path: Uri,
}

impl Target {
    /// Parses and checks `url`; a URL without a path gets the encoding's usual one.
    fn parse(url: &str, encoding: HttpEncoding) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| {
            format!("{url:?} is not a URL ({e}); e.g. \"https://hooks.example/alerts\"")
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url:?}: the scheme must be http:// or https://")),
        };
        let Some(auth) = uri.authority() else {
            return Err(format!("{url:?} has no host"));
        };
        if auth.as_str().contains('@') {
            return Err(format!(
                "{url:?}: credentials in the URL are not supported; set headers.Authorization"
            ));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err(format!("{url:?}: port 0"));
        }
        let given = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if given == "/" || given.is_empty() {
            match encoding {
                HttpEncoding::SplunkHec => HEC_PATH,
                HttpEncoding::ElasticsearchBulk => BULK_PATH,
                HttpEncoding::Json => "/",
            }
        } else {
            given
        };
        let path: Uri = path
            .parse()
            .map_err(|e| format!("{url:?}: bad path ({e})"))?;
        let authority =
            HeaderValue::from_str(auth.as_str()).map_err(|e| format!("{url:?}: bad host ({e})"))?;
        Ok(Target {
            https,
            host: host.to_string(),
            port,
            authority,
            path,
        })
    }
}

/// A connection to the receiver, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The scalar top-level fields an envelope needs, found in a record's JSON line without parsing
/// it: the encoder ([`crate::record`]) writes `received_at`, `peer`, `peer_cert`, `facility`,
/// `severity`, `version`, `timestamp`, `hostname`, `app_name` in this order, all strings,
/// numbers or null, before any nested object. A key pattern such as `"hostname":` cannot match
/// inside a JSON string (its quotes would be escaped), so its first match is the top-level key.
#[derive(Debug)]
struct Fields {
    received_at: Finder<'static>,
    timestamp: Finder<'static>,
    hostname: Finder<'static>,
    app_name: Finder<'static>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            received_at: Finder::new(b"\"received_at\":"),
            timestamp: Finder::new(b"\"timestamp\":"),
            hostname: Finder::new(b"\"hostname\":"),
            app_name: Finder::new(b"\"app_name\":"),
        }
    }

    /// The raw JSON string token (with its quotes) after `finder`'s key; `None` when absent or
    /// not a string.
    fn token<'a>(finder: &Finder<'_>, line: &'a [u8]) -> Option<&'a [u8]> {
        let at = finder.find(line)? + finder.needle().len();
        string_token(&line[at..])
    }

    /// The record's time: `timestamp` when it is RFC 3339, else `received_at`.
    fn time(&self, line: &[u8]) -> Option<DateTime<Utc>> {
        [&self.timestamp, &self.received_at]
            .into_iter()
            .find_map(|f| Fields::token(f, line).and_then(parse_time))
    }
}

/// The JSON string at the start of `b` (with its quotes), `None` when `b` does not start with
/// a complete one.
fn string_token(b: &[u8]) -> Option<&[u8]> {
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(&b[..=i]),
            _ => i += 1,
        }
    }
    None
}

/// An RFC 3339 time from a JSON string token without escapes.
fn parse_time(token: &[u8]) -> Option<DateTime<Utc>> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    if inner.contains(&b'\\') {
        return None;
    }
    let s = std::str::from_utf8(inner).ok()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Appends `t` as epoch seconds with microseconds (`1710144018.120202`).
fn put_epoch(out: &mut BytesMut, t: DateTime<Utc>) {
    let us = t.timestamp_micros();
    let (s, frac) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let _ = write!(BufWriter(out), "{s}.{frac:06}");
}

/// `fmt::Write` into a `BytesMut`.
struct BufWriter<'a>(&'a mut BytesMut);

impl std::fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// A JSON string literal of `s`.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The Elasticsearch action line of each record, cached per day (or per second when the
/// pattern has time-of-day fields).
#[derive(Debug)]
struct EsIndex {
    pattern: String,
    /// Seconds per cache key: 86400 for a date-only pattern, else 1.
    granule: i64,
    cached: Option<(i64, Bytes)>,
}

impl EsIndex {
    fn new(pattern: &str) -> EsIndex {
        use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
        let date_only = StrftimeItems::new(pattern).all(|i| match i {
            Item::Numeric(n, _) => matches!(
                n,
                Numeric::Year
                    | Numeric::YearDiv100
                    | Numeric::YearMod100
                    | Numeric::IsoYear
                    | Numeric::IsoYearDiv100
                    | Numeric::IsoYearMod100
                    | Numeric::Month
                    | Numeric::Day
                    | Numeric::WeekFromSun
                    | Numeric::WeekFromMon
                    | Numeric::IsoWeek
                    | Numeric::NumDaysFromSun
                    | Numeric::WeekdayFromMon
                    | Numeric::Ordinal
            ),
            Item::Fixed(f) => matches!(
                f,
                Fixed::ShortMonthName
                    | Fixed::LongMonthName
                    | Fixed::ShortWeekdayName
                    | Fixed::LongWeekdayName
            ),
            _ => true,
        });
        EsIndex {
            pattern: pattern.to_string(),
            granule: if date_only { 86_400 } else { 1 },
            cached: None,
        }
    }

    /// `{"create":{"_index":"<name>"}}\n` for a record of time `t`.
    fn action(&mut self, t: DateTime<Utc>) -> Bytes {
        let key = t.timestamp().div_euclid(self.granule);
        if let Some((k, line)) = &self.cached {
            if *k == key {
                return line.clone();
            }
        }
        let mut name = String::new();
        if write!(name, "{}", t.format(&self.pattern)).is_err() {
            // Checked by `validate`; keep the pattern as the name rather than lose the record.
            name = self.pattern.clone();
        }
        let line = Bytes::from(format!(
            "{{\"create\":{{\"_index\":{}}}}}\n",
            json_string(&name)
        ));
        self.cached = Some((key, line.clone()));
        line
    }
}

/// One record waiting to be accepted.
#[derive(Debug)]
struct Rec {
    /// The JSON object, without its LF.
    line: Bytes,
    /// Requests that carried it so far.
    sends: u32,
}

/// What one request's answer means for its records.
#[derive(Debug)]
enum Outcome {
    /// All accepted.
    Accepted,
    /// Keep all, retry later.
    Retry(io::Error),
    /// Refused for good: dead-letter all.
    Refused(u16, String),
    /// 413 for more than one record: send fewer per request.
    TooLarge(String),
    /// Elasticsearch bulk: per record, accepted / retry / refused.
    Items(Vec<Item>),
}

/// One bulk item's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Ok,
    Retry(u16),
    Refused(u16, String),
}

/// Posts records to a URL; see the [module documentation](self).
pub struct HttpOutput {
    target: Target,
    encoding: HttpEncoding,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    gzip: bool,
    /// Headers of every request (content type, authorization, the configured ones).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// HEC: `,"sourcetype":"..","index":".."` (whatever is configured), and the fixed source.
    hec_tail: Bytes,
    hec_source: Option<Bytes>,
    es_index: EsIndex,
    fields: Fields,
    batch_max_bytes: usize,
    batch_max_records: usize,
    /// Records per request now: `batch_max_records`, halved after each 413 answer.
    records_cap: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
    connected_once: bool,
    pending: VecDeque<Rec>,
    pending_bytes: usize,
    dead_letter_path: Option<PathBuf>,
    dead_letter_file: Option<tokio::fs::File>,
    dead_log: LogLimiter,
    metrics: Arc<Metrics>,
    index: usize,
}

impl std::fmt::Debug for HttpOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOutput")
            .field("target", &self.target)
            .field("encoding", &self.encoding)
            .field("gzip", &self.gzip)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// The rustls client config for an `https` URL: `[output.tls]` when given, else the public
/// web PKI roots; HTTP/1.1 by ALPN.
fn tls_config(cfg: &OutputConfig) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut config = match &cfg.tls {
        Some(t) => (*crate::output::syslog::client_config(t)
            .map_err(|e| ConfigError(format!("tls.{e}")))?)
        .clone(),
        None => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError(format!("tls: TLS setup failed: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl HttpOutput {
    /// The output of `cfg` (a checked `type = "http"` output), counting in output `index` of
    /// `metrics`. Does not connect: the first request does.
    pub fn new(
        cfg: &OutputConfig,
        index: usize,
        metrics: Arc<Metrics>,
    ) -> Result<HttpOutput, ConfigError> {
        let encoding = cfg.encoding.unwrap_or_default();
        let url = cfg.url.clone().unwrap_or_default();
        let target = Target::parse(&url, encoding).map_err(|e| ConfigError(format!("url: {e}")))?;
        let tls = if target.https {
            let name = cfg
                .tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_else(|| target.host.clone());
            let name = ServerName::try_from(name.clone()).map_err(|e| {
                ConfigError(format!(
                    "tls.server_name: {name:?} is not a DNS name or IP ({e})"
                ))
            })?;
            Some((TlsConnector::from(tls_config(cfg)?), name))
        } else {
            None
        };
        let header_err = |k: &str| ConfigError(format!("headers.{k}: not a valid header"));
        let mut headers = vec![(
            CONTENT_TYPE,
            HeaderValue::from_static(match encoding {
                HttpEncoding::ElasticsearchBulk => "application/x-ndjson",
                _ => "application/json",
            }),
        )];
        if let (HttpEncoding::SplunkHec, Some(t)) = (encoding, &cfg.token) {
            let v = HeaderValue::from_str(&format!("Splunk {t}"))
                .map_err(|_| ConfigError("token: not a valid header value".into()))?;
            headers.push((AUTHORIZATION, v));
        }
        for (k, v) in cfg.headers.iter().flatten() {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| header_err(k))?;
            let value = HeaderValue::from_str(v).map_err(|_| header_err(k))?;
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value));
        }
        let mut hec_tail = String::new();
        if let Some(st) = &cfg.sourcetype {
            let _ = write!(hec_tail, ",\"sourcetype\":{}", json_string(st));
        }
        if encoding == HttpEncoding::SplunkHec {
            if let Some(ix) = &cfg.index {
                let _ = write!(hec_tail, ",\"index\":{}", json_string(ix));
            }
        }
        Ok(HttpOutput {
            target,
            encoding,
            tls,
            gzip: cfg.gzip.unwrap_or(false),
            headers,
            hec_tail: Bytes::from(hec_tail),
            hec_source: cfg.source.as_deref().map(|s| Bytes::from(json_string(s))),
            es_index: EsIndex::new(
                cfg.index
                    .as_deref()
                    .filter(|_| encoding == HttpEncoding::ElasticsearchBulk)
                    .unwrap_or(DEFAULT_ES_INDEX),
            ),
            fields: Fields::new(),
            batch_max_bytes: cfg.batch_max_bytes.unwrap_or(DEFAULT_BATCH_MAX_BYTES),
            batch_max_records: cfg.batch_max_records.unwrap_or(DEFAULT_BATCH_MAX_RECORDS),
            records_cap: cfg.batch_max_records.unwrap_or(DEFAULT_BATCH_MAX_RECORDS),
            connect_timeout: Duration::from_millis(
                cfg.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
            ),
            request_timeout: Duration::from_millis(
                cfg.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            ),
            conn: None,
            connected_once: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            dead_letter_path: cfg.dead_letter_path.clone(),
            dead_letter_file: None,
            dead_log: LogLimiter::new(Duration::from_secs(10)),
            metrics,
            index,
        })
    }

    fn m(&self) -> Option<&OutputMetrics> {
        self.metrics.outputs.get(self.index)
    }

    fn name(&self) -> String {
        self.m()
            .map_or_else(|| "http".to_string(), |m| m.name.clone())
    }

    /// Takes the complete JSON lines of `lines` (no copy: slices of the batch's buffer).
    fn take(&mut self, lines: Bytes) {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &lines) {
            if end > start {
                self.pending_bytes += end - start;
                self.pending.push_back(Rec {
                    line: lines.slice(start..end),
                    sends: 0,
                });
            }
            start = end + 1;
        }
        if start < lines.len() {
            // Lines end in LF; keep an unterminated tail rather than lose it.
            self.pending_bytes += lines.len() - start;
            self.pending.push_back(Rec {
                line: lines.slice(start..),
                sends: 0,
            });
        }
    }

    /// Whether a full request's worth of records is waiting.
    fn full(&self) -> bool {
        self.pending.len() >= self.batch_max_records || self.pending_bytes >= self.batch_max_bytes
    }

    /// How many of the first pending records go into the next request.
    fn next_len(&self) -> usize {
        let mut bytes = 0;
        let mut n = 0;
        for r in self.pending.iter().take(self.records_cap) {
            if n > 0 && bytes + r.line.len() > self.batch_max_bytes {
                break;
            }
            bytes += r.line.len();
            n += 1;
        }
        n
    }

    /// The request body of the first `n` pending records (before gzip).
    fn encode(&mut self, n: usize) -> Bytes {
        let raw: usize = self.pending.iter().take(n).map(|r| r.line.len()).sum();
        let mut out = BytesMut::with_capacity(raw + n * self.overhead() + 2);
        match self.encoding {
            HttpEncoding::Json => {
                out.put_u8(b'[');
                for (i, r) in self.pending.iter().take(n).enumerate() {
                    if i > 0 {
                        out.put_u8(b',');
                    }
                    out.put_slice(&r.line);
                }
                out.put_u8(b']');
            }
            HttpEncoding::SplunkHec => {
                for r in self.pending.iter().take(n) {
                    let line = &r.line[..];
                    out.put_u8(b'{');
                    let mut sep = "";
                    if let Some(t) = self.fields.time(line) {
                        out.put_slice(b"\"time\":");
                        put_epoch(&mut out, t);
                        sep = ",";
                    }
                    if let Some(h) = Fields::token(&self.fields.hostname, line) {
                        out.put_slice(sep.as_bytes());
                        out.put_slice(b"\"host\":");
                        out.put_slice(h);
                        sep = ",";
                    }
                    let source = match &self.hec_source {
                        Some(s) => Some(&s[..]),
                        None => Fields::token(&self.fields.app_name, line),
                    };
                    if let Some(s) = source {
                        out.put_slice(sep.as_bytes());
                        out.put_slice(b"\"source\":");
                        out.put_slice(s);
                        sep = ",";
                    }
                    if sep.is_empty() {
                        // hec_tail starts with a comma.
                        out.put_slice(self.hec_tail.strip_prefix(b",").unwrap_or(&self.hec_tail));
                        if !self.hec_tail.is_empty() {
                            sep = ",";
                        }
                    } else {
                        out.put_slice(&self.hec_tail);
                    }
                    out.put_slice(sep.as_bytes());
                    out.put_slice(b"\"event\":");
                    out.put_slice(line);
                    out.put_slice(b"}\n");
                }
            }
            HttpEncoding::ElasticsearchBulk => {
                for i in 0..n {
                    let line = self.pending[i].line.clone();
                    let t = self.fields.time(&line).unwrap_or_else(Utc::now);
                    out.put_slice(&self.es_index.action(t));
                    out.put_slice(&line);
                    out.put_u8(b'\n');
                }
            }
        }
        out.freeze()
    }

    /// Envelope bytes per record, roughly (for the body's capacity).
    fn overhead(&self) -> usize {
        match self.encoding {
            HttpEncoding::Json => 1,
            HttpEncoding::SplunkHec => 128 + self.hec_tail.len(),
            HttpEncoding::ElasticsearchBulk => 32 + self.es_index.pattern.len() + 16,
        }
    }

    /// Opens a connection (TCP, TLS when https, then the HTTP/1.1 handshake).
    async fn connect(&mut self) -> io::Result<SendRequest<Full<Bytes>>> {
        let timeout = self.connect_timeout;
        let addr = (self.target.host.as_str(), self.target.port);
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out(format!("no connection within {timeout:?}")))??;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| timed_out(format!("no TLS handshake within {timeout:?}")))??,
            ),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(io::Error::other)?;
        let name = self.name();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(output = %name, error = %e, "http connection ended");
            }
        });
        if self.connected_once {
            if let Some(m) = self.m() {
                m.reconnects.fetch_add(1, Relaxed);
            }
        }
        self.connected_once = true;
        Ok(sender)
    }

    /// Sends `body` (already gzipped when `gzip`), returns the status and the answer's body.
    /// A kept-alive connection that turns out closed is replaced once.
    async fn request(&mut self, body: Bytes) -> io::Result<(StatusCode, Bytes)> {
        for attempt in 0..2 {
            let reused = self.conn.as_ref().is_some_and(|c| !c.is_closed());
            let mut sender = match self.conn.take() {
                Some(c) if reused => c,
                _ => self.connect().await?,
            };
            if sender.ready().await.is_err() {
                if reused && attempt == 0 {
                    continue;
                }
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection closed before the request",
                ));
            }
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(self.target.path.clone())
                .header(HOST, self.target.authority.clone());
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            if self.gzip {
                req = req.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(io::Error::other)?;
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) if reused && attempt == 0 && (e.is_canceled() || e.is_closed()) => {
                    tracing::debug!(output = %self.name(), error = %e,
                        "kept-alive connection was closed; sending on a new one");
                    continue;
                }
                Err(e) => return Err(io::Error::other(e)),
            };
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| io::Error::other(format!("reading the answer ({status}): {e}")))?
                .to_bytes();
            if !sender.is_closed() {
                self.conn = Some(sender);
            }
            return Ok((status, body));
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed before the request",
        ))
    }

    /// Sends the first `n` pending records in one request and settles them by the answer.
    async fn send(&mut self, n: usize) -> io::Result<()> {
        let raw = self.encode(n);
        let body = if self.gzip { gzip(raw).await? } else { raw };
        let mut resent = 0;
        for r in self.pending.iter_mut().take(n) {
            r.sends += 1;
            if r.sends > 1 {
                resent += 1;
            }
        }
        if resent > 0 {
            if let Some(m) = self.m() {
                m.retries.fetch_add(resent, Relaxed);
            }
        }
        let timeout = self.request_timeout;
        let outcome = match tokio::time::timeout(timeout, self.request(body)).await {
            Err(_) => {
                self.conn = None;
                Outcome::Retry(timed_out(format!("no answer within {timeout:?}")))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Outcome::Retry(e)
            }
            Ok(Ok((status, body))) => self.judge(status, &body, n),
        };
        match outcome {
            Outcome::Accepted => {
                self.accept(n);
                Ok(())
            }
            Outcome::Retry(e) => Err(e),
            Outcome::TooLarge(reason) => {
                self.records_cap = (n / 2).max(1);
                tracing::warn!(output = %self.name(), records = n, now = self.records_cap,
                    reason = %reason,
                    "receiver refused a request as too large (413); sending fewer records per request from now on");
                Ok(())
            }
            Outcome::Refused(status, reason) => {
                let fates = vec![Item::Refused(status, reason); n];
                self.settle(fates).await
            }
            Outcome::Items(fates) => self.settle(fates).await,
        }
    }

    /// What an answer means.
    fn judge(&self, status: StatusCode, body: &[u8], n: usize) -> Outcome {
        let code = status.as_u16();
        if status.is_success() {
            if self.encoding != HttpEncoding::ElasticsearchBulk {
                return Outcome::Accepted;
            }
            return match bulk_items(body, n) {
                Ok(None) => Outcome::Accepted,
                Ok(Some(items)) => Outcome::Items(items),
                Err(e) => Outcome::Retry(io::Error::other(e)),
            };
        }
        let reason = excerpt(body);
        if code == 413 && n > 1 {
            return Outcome::TooLarge(reason);
        }
        if retriable(code) {
            Outcome::Retry(io::Error::other(format!("HTTP {status}: {reason}")))
        } else {
            Outcome::Refused(code, reason)
        }
    }

    /// Removes the first `n` pending records, counted as accepted.
    fn accept(&mut self, n: usize) {
        let mut bytes = 0;
        for r in self.pending.drain(..n) {
            bytes += r.line.len();
        }
        self.pending_bytes -= bytes;
        if let Some(m) = self.m() {
            m.records.fetch_add(n as u64, Relaxed);
            m.bytes.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// Settles the first `fates.len()` pending records: accepted ones are removed, refused ones
    /// dead-lettered and removed, retriable ones kept (in order, at the front). Fails when any
    /// is kept (so the caller backs off) or when dead letters cannot be written.
    async fn settle(&mut self, fates: Vec<Item>) -> io::Result<()> {
        let n = fates.len();
        let batch: Vec<Rec> = self.pending.drain(..n).collect();
        let mut keep = Vec::new();
        let mut dead = Vec::new();
        let (mut ok, mut ok_bytes) = (0u64, 0usize);
        let mut retry_status = None;
        for (rec, fate) in batch.into_iter().zip(fates) {
            match fate {
                Item::Ok => {
                    ok += 1;
                    ok_bytes += rec.line.len();
                }
                Item::Retry(s) => {
                    retry_status = Some(s);
                    keep.push(rec);
                }
                Item::Refused(s, why) => dead.push((rec, s, why)),
            }
        }
        self.pending_bytes -= ok_bytes;
        if let Some(m) = self.m() {
            m.records.fetch_add(ok, Relaxed);
            m.bytes.fetch_add(ok_bytes as u64, Relaxed);
        }
        let written = self.dead_letter(&dead).await;
        let mut front: Vec<Rec> = keep;
        match written {
            Ok(()) => {
                self.pending_bytes -= dead.iter().map(|(r, _, _)| r.line.len()).sum::<usize>();
            }
            Err(_) => front.extend(dead.into_iter().map(|(r, _, _)| r)),
        }
        let kept = front.len();
        for rec in front.into_iter().rev() {
            self.pending.push_front(rec);
        }
        written?;
        match retry_status {
            Some(s) => Err(io::Error::other(format!(
                "{kept} of {n} bulk items to retry (status {s})"
            ))),
            None => Ok(()),
        }
    }

    /// Writes refused records to the dead-letter file (or the log), counting them.
    async fn dead_letter(&mut self, dead: &[(Rec, u16, String)]) -> io::Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let name = self.name();
        let now = crate::record::now_rfc3339();
        match self.dead_letter_path.clone() {
            Some(path) => {
                let mut buf = Vec::new();
                for (rec, status, why) in dead {
                    buf.extend_from_slice(
                        format!(
                            "{{\"dead_lettered_at\":\"{now}\",\"output\":{},\"status\":{status},\"reason\":{},\"record\":",
                            json_string(&name),
                            json_string(why)
                        )
                        .as_bytes(),
                    );
                    buf.extend_from_slice(&rec.line);
                    buf.extend_from_slice(b"}\n");
                }
                if let Err(e) = self.write_dead(&path, &buf).await {
                    self.dead_letter_file = None;
                    return Err(io::Error::new(
                        e.kind(),
                        format!("dead-letter file {}: {e}", path.display()),
                    ));
                }
                if let Some(held) = self.dead_log.check() {
                    let (_, status, why) = &dead[0];
                    tracing::warn!(output = %name, records = dead.len(), status, reason = %why,
                        path = %path.display(), held_back_lines = held,
                        "receiver refused records for good; written to the dead-letter file");
                }
            }
            None => {
                for (rec, status, why) in dead {
                    tracing::error!(output = %name, status, reason = %why,
                        record = %String::from_utf8_lossy(&rec.line),
                        "receiver refused a record for good (no dead_letter_path: the record is only in this log line)");
                }
            }
        }
        if let Some(m) = self.m() {
            m.dead_letters.fetch_add(dead.len() as u64, Relaxed);
        }
        Ok(())
    }

    async fn write_dead(&mut self, path: &PathBuf, buf: &[u8]) -> io::Result<()> {
        if self.dead_letter_file.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?;
            self.dead_letter_file = Some(f);
        }
        let Some(f) = self.dead_letter_file.as_mut() else {
            return Err(io::Error::other("dead-letter file not open"));
        };
        f.write_all(buf).await?;
        f.flush().await
    }

    /// Sends full requests while a full one is waiting.
    async fn send_full(&mut self) -> io::Result<()> {
        while self.full() {
            let n = self.next_len();
            self.send(n).await?;
        }
        Ok(())
    }
}

/// Whether an answer's status is retried: 408, 429, 5xx, and 1xx/3xx (not an answer we can
/// settle records by; most likely a misconfigured URL, so keep the records).
fn retriable(code: u16) -> bool {
    !(400..500).contains(&code) || code == 408 || code == 429
}

/// Whether a bulk item's status is retried: 408, 429, 5xx.
fn item_retriable(code: u16) -> bool {
    code == 408 || code == 429 || code >= 500
}

/// The start of an answer body, for logs and dead letters.
fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(REASON_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn timed_out(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

/// gzip (level 1) of `raw`, on a blocking thread.
async fn gzip(raw: Bytes) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4 + 64),
            flate2::Compression::fast(),
        );
        enc.write_all(&raw)?;
        enc.finish().map(Bytes::from)
    })
    .await
    .map_err(|e| io::Error::other(format!("gzip thread failed: {e}")))?
}

/// The `errors` flag of a bulk answer, alone (the items are skipped unparsed).
#[derive(serde::Deserialize)]
struct BulkHead {
    errors: bool,
}

/// A bulk answer with its items.
#[derive(serde::Deserialize)]
struct BulkBody {
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(serde::Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The items of a bulk answer to `n` records: `None` when all succeeded; an error when the
/// answer is not a bulk answer for `n` records.
fn bulk_items(body: &[u8], n: usize) -> Result<Option<Vec<Item>>, String> {
    let head: BulkHead = serde_json::from_slice(body).map_err(|e| {
        format!(
            "bulk answer is not JSON with \"errors\" ({e}): {}",
            excerpt(body)
        )
    })?;
    if !head.errors {
        return Ok(None);
    }
    let full: BulkBody = serde_json::from_slice(body)
        .map_err(|e| format!("bulk answer has no readable \"items\" ({e})"))?;
    if full.items.len() != n {
        return Err(format!(
            "bulk answer has {} items for {n} records",
            full.items.len()
        ));
    }
    let items = full
        .items
        .into_iter()
        .map(|m| {
            let Some(item) = m.into_values().next() else {
                return Item::Retry(0);
            };
            match item.status {
                200..=299 => Item::Ok,
                s if item_retriable(s) => Item::Retry(s),
                s => {
                    let why = match &item.error {
                        Some(serde_json::Value::Object(e)) => {
                            let t = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
                            let r = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
                            format!("{t}: {r}")
                        }
                        Some(v) => v.to_string(),
                        None => format!("item status {s}"),
                    };
                    Item::Refused(s, why)
                }
            }
        })
        .collect();
    Ok(Some(items))
}

impl Output for HttpOutput {
    /// Takes the records output `bit` wants and sends full requests; counts records when the
    /// receiver accepts them (not when taken).
    async fn write_batch(&mut self, batch: &Arc<Batch>, bit: u64, m: &OutputMetrics) {
        let runs: Vec<Bytes> = batch.runs(bit).map(|(run, _)| run).collect();
        let wanted: usize = runs.iter().map(Bytes::len).sum();
        if wanted.saturating_mul(2) >= batch.json.len() {
            // Most of the batch: keep slices of its buffer (no copy).
            for run in runs {
                self.take(run);
            }
        } else {
            // A few lines of a large batch (a selective filter): copy them, so that waiting
            // records do not keep whole batch buffers alive (memory the in-flight budget no
            // longer counts once the batch is dropped).
            let mut own = BytesMut::with_capacity(wanted);
            for run in &runs {
                own.put_slice(run);
            }
            self.take(own.freeze());
        }
        if let Err(e) = self.send_full().await {
            super::retry_flush(self, m, e).await;
        }
    }

    fn unconfirmed(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Opens the connection the first request will use (TCP, TLS, HTTP/1.1); sends nothing.
    async fn probe(&mut self) -> io::Result<()> {
        if self.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        let sender = self.connect().await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot connect to {}:{}: {e}",
                    self.target.host, self.target.port
                ),
            )
        })?;
        self.conn = Some(sender);
        Ok(())
    }

    async fn write(&mut self, lines: Bytes) -> io::Result<()> {
        self.take(lines);
        self.send_full().await
    }

    /// Sends every pending record; `Ok` once all were accepted (or dead-lettered).
    async fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            let n = self.next_len();
            self.send(n).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> io::Result<()> {
        self.conn = None;
        if let Some(mut f) = self.dead_letter_file.take() {
            f.flush().await?;
            f.sync_all().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_targeted_scan() {
        let line = br#"{"received_at":"2026-11-26T10:50:29.123456Z","peer":"x \"timestamp\":1","facility":1,"severity":6,"version":1,"timestamp":"2024-03-11T09:00:18.120202+01:00","hostname":"h\"1","app_name":null,"structured_data":{"a":{"hostname":"no"}}}"#;
        let f = Fields::new();
        assert_eq!(Fields::token(&f.hostname, line), Some(&br#""h\"1""#[..]));
        assert_eq!(Fields::token(&f.app_name, line), None);
        let t = f.time(line).unwrap();
        assert_eq!(t.timestamp_micros(), 1_710_144_018_120_202);
        let no_ts =
            br#"{"received_at":"2026-11-26T10:50:29.123456Z","timestamp":"Mar 11 08:00:18"}"#;
        assert_eq!(
            f.time(no_ts).unwrap().to_rfc3339(),
            "2026-11-26T10:50:29.123456+00:00"
        );
        let mut b = BytesMut::new();
        put_epoch(&mut b, t);
        assert_eq!(&b[..], b"1710144018.120202");
    }

    #[test]
    fn es_index_names_come_from_the_pattern() {
        let mut ix = EsIndex::new(DEFAULT_ES_INDEX);
        assert_eq!(ix.granule, 86_400);
        let t = DateTime::parse_from_rfc3339("2024-03-11T23:30:00-02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            &ix.action(t)[..],
            b"{\"create\":{\"_index\":\"syslog-sink-2024.03.12\"}}\n"
        );
        assert_eq!(EsIndex::new("logs-%Y.%m.%d-%H").granule, 1);
        assert!(check_index_pattern("Logs-%Y").is_err());
        assert!(check_index_pattern("logs-%b").is_err());
        assert!(check_index_pattern("logs-%Q").is_err());
        assert!(check_index_pattern("_logs").is_err());
        assert!(check_index_pattern("logs-%Y.%m.%d").is_ok());
    }

    #[test]
    fn statuses() {
        for c in [408, 429, 500, 502, 503, 504, 301] {
            assert!(retriable(c), "{c}");
        }
        for c in [400, 401, 403, 404, 413, 422] {
            assert!(!retriable(c), "{c}");
        }
    }

    #[test]
    fn bulk_answers() {
        assert_eq!(
            bulk_items(
                br#"{"took":1,"errors":false,"items":[{"create":{"status":201}}]}"#,
                1
            ),
            Ok(None)
        );
        let body = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}}]}"#;
        assert_eq!(
            bulk_items(body, 3),
            Ok(Some(vec![
                Item::Ok,
                Item::Retry(429),
                Item::Refused(400, "mapper_parsing_exception: failed to parse".into())
            ]))
        );
        assert!(bulk_items(body, 2).is_err());
        assert!(bulk_items(b"<html>", 1).is_err());
    }

    #[test]
    fn urls() {
        let t = Target::parse("https://splunk.example:8088", HttpEncoding::SplunkHec).unwrap();
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("splunk.example", 8088));
        assert_eq!(t.path, HEC_PATH);
        let t = Target::parse("http://[::1]/x?y=1", HttpEncoding::Json).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(t.path, "/x?y=1");
        assert_eq!(t.authority, "[::1]");
        for bad in [
            "ftp://x/",
            "hooks.example/alerts",
            "http://u:p@x/",
            "not a url",
        ] {
            assert!(Target::parse(bad, HttpEncoding::Json).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::{Config, HttpEncoding};

    const BASE: &str = "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"h\"\n";

    fn error(output: &str) -> String {
        match Config::from_toml(&format!("{BASE}{output}")) {
            Ok(_) => panic!("accepted: {output}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn http_output_keys_are_checked_and_named() {
        let ok = Config::from_toml(&format!(
            "{BASE}type = \"http\"\nurl = \"https://hooks.example/alerts\"\nencoding = \"json\"\n\
             filter = {{ category = [\"err_image_pull\", \"back_off\"] }}\n"
        ))
        .unwrap();
        assert_eq!(ok.output[0].encoding, Some(HttpEncoding::Json));
        Config::from_toml(&format!(
            "{BASE}type = \"http\"\nurl = \"http://es:9200\"\nencoding = \"elasticsearch_bulk\"\n\
             index = \"k8s-%Y.%m\"\ngzip = true\nheaders = {{ Authorization = \"ApiKey abc\" }}\n\
             dead_letter_path = \"dl.jsonl\"\nbatch_max_bytes = 4096\nrequest_timeout_ms = 100\n"
        ))
        .unwrap();
        for (text, needles) in [
            ("type = \"http\"\n", &["output[0] \"h\".url", "required"][..]),
            ("type = \"http\"\nurl = \"hooks.example/x\"\n", &["url", "not a URL"]),
            ("type = \"http\"\nurl = \"ftp://x/\"\n", &["url", "scheme"]),
            ("type = \"http\"\nurl = \"http://\"\n", &["url"]),
            (
                "type = \"http\"\nurl = \"http://x\"\nencoding = \"xml\"\n",
                &["xml", "splunk_hec"],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\nencoding = \"splunk_hec\"\n",
                &["token", "required"],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\ntoken = \"t\"\n",
                &["token", "\"splunk_hec\" only"],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\nencoding = \"elasticsearch_bulk\"\nindex = \"Big-%Y\"\n",
                &["index", "lowercase"],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\nheaders = { \"bad header\" = \"v\" }\n",
                &["headers.bad header"],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\nbatch_max_bytes = 1\n",
                &["batch_max_bytes", "out of range"],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\n[output.tls]\nca = \"/nonexistent/ca.pem\"\n",
                &["tls", "https"],
            ),
            (
                "type = \"http\"\nurl = \"https://x\"\n[output.tls]\nca = \"/nonexistent/ca.pem\"\n",
                &["tls.ca", "/nonexistent/ca.pem"],
            ),
            (
                "type = \"http\"\nurl = \"https://x\"\n[output.tls]\nca = \"c\"\nserver_name = \"a b\"\n",
                &["tls.server_name", "\"a b\""],
            ),
            (
                "type = \"http\"\nurl = \"http://x\"\npath = \"p\"\n",
                &["path", "does not apply"],
            ),
            (
                "type = \"stdout\"\ngzip = true\n",
                &["gzip", "only to \"http\""],
            ),
        ] {
            let e = error(text);
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }
}
