//! `nats` output: publishes every record to a NATS JetStream stream and counts it delivered only
//! once JetStream acknowledged storing it.
//!
//! **Subjects.** Each record goes to a subject made from the `subject` template, e.g.
//! `k8s.events.{category}.{namespace}`. A `{field}` is replaced by the record's value (see
//! [`FIELDS`]); a missing or empty value becomes `_`. Values are sanitised into one subject
//! token: `.`, `*`, `>`, whitespace and control characters become `_`, and a value is cut to
//! [`MAX_TOKEN_BYTES`] bytes. The template must begin with at least one fixed token; its fixed
//! tokens (`k8s.events`) followed by `>` are the subjects of the stream that the output creates
//! when it does not exist yet. An existing stream must have one subject filter that covers every
//! subject the template can make, else the output refuses to publish and says why.
//!
//! **Payload.** The record's JSON line without its `\n` (a zero-copy slice of the batch), with a
//! `Nats-Msg-Id` header. A record resent after a lost or late acknowledgement keeps its
//! id, so JetStream stores it once within the stream's duplicate window (2 minutes by default).
//! - Behind a disk buffer (the default): `<buffer>-<position>-<appended>-<n>`, the
//!   [`crate::buffer::EntryId`] of the record's log entry (the folder's id, 16 hex digits from
//!   its `instance` file; the entry's position and its append time in Unix ms, both in
//!   hexadecimal) and the record's number in the entry (decimal). A record the buffer
//!   delivers again after a restart (`kill -9`, a crash, a shutdown whose grace ran out) has
//!   the same id, so it too is stored once when the restart comes within the window.
//! - Without one (`buffer = false`): `<instance>-<seq>`, `instance` 16 hex digits drawn at
//!   random when the output starts, `seq` the records the output took (there is no replay).
//!
//! **Delivery.** `write` publishes with up to `max_inflight` acknowledgements outstanding and
//! `flush` returns `Ok` only once every record taken so far has its JetStream `PubAck` (stored,
//! replicated as the stream is configured). A publish or acknowledgement that fails or times out
//! (`ack_timeout_ms`) keeps the record; `flush` returns the error and the run loop retries it
//! with backoff, resending with the same id, while the queue fills and the listeners slow down.
//! The client reconnects by itself (also to other servers of a cluster it learned about).
//!
//! **Connection.** `url` lists one or more `nats://` or `tls://` servers; credentials in it
//! (`user:password@`, `token@`) are sent and kept out of logs. `[output.tls]` (the `syslog`
//! output's section: `ca`, `cert`, `key`) makes TLS required with a private CA.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::IntoFuture;
use std::io;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self, context::PublishErrorKind, message::PublishMessage, stream, Context,
};
use async_nats::{Client, ServerAddr, Subject};
use bytes::Bytes;
use tokio::time::Instant;

use super::Output;
use crate::buffer::EntryId;
use crate::config::{ConfigError, OutputConfig, OutputType};
use crate::metrics::{Metrics, OutputMetrics};
use crate::route::Batch;

/// Default `max_inflight`: publishes whose acknowledgement is awaited at once.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// Largest accepted `max_inflight`.
pub const MAX_INFLIGHT: usize = 65_536;
/// Default `ack_timeout_ms`.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 5000;
/// A record value is cut to this many bytes in a subject token.
pub const MAX_TOKEN_BYTES: usize = 128;
/// What a missing or empty value becomes in a subject.
pub const MISSING: &str = "_";
/// Give up one connection attempt after this long (the run loop retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A record value a subject template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `k8s.category` (events only).
    Category,
    /// `k8s.namespace`.
    Namespace,
    /// `k8s.kind`: `event` or `pod_log`.
    Kind,
    /// `k8s.object`.
    Object,
    /// `k8s.container`.
    Container,
    /// `hostname`.
    Hostname,
    /// `app_name`.
    AppName,
    /// `procid`.
    Procid,
    /// `msgid`.
    Msgid,
    /// `severity` (0..7).
    Severity,
    /// `facility` (0..23).
    Facility,
}

/// The names a template may use, `{name}`.
pub const FIELDS: [(&str, Field); 11] = [
    ("category", Field::Category),
    ("namespace", Field::Namespace),
    ("kind", Field::Kind),
    ("object", Field::Object),
    ("container", Field::Container),
    ("hostname", Field::Hostname),
    ("app_name", Field::AppName),
    ("procid", Field::Procid),
    ("msgid", Field::Msgid),
    ("severity", Field::Severity),
    ("facility", Field::Facility),
];

/// One piece of a template token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed `subject` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    /// Per subject token, its pieces.
    tokens: Vec<Vec<Piece>>,
    /// Whether any token names a field.
    has_fields: bool,
}

impl SubjectTemplate {
    /// Parses `s`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<SubjectTemplate, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let mut tokens = Vec::new();
        for (i, tok) in s.split('.').enumerate() {
            if tok.is_empty() {
                return Err(format!(
                    "{s:?} has an empty token (a dot at either end or two in a row)"
                ));
            }
            let mut pieces = Vec::new();
            let mut rest = tok;
            while !rest.is_empty() {
                match rest.find('{') {
                    Some(0) => {
                        let Some(end) = rest.find('}') else {
                            return Err(format!("{s:?}: '{{' without '}}'"));
                        };
                        let name = &rest[1..end];
                        let Some((_, f)) = FIELDS.iter().find(|(n, _)| *n == name) else {
                            let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                            return Err(format!(
                                "{s:?}: unknown field {{{name}}}; known: {}",
                                known.join(", ")
                            ));
                        };
                        pieces.push(Piece::Field(*f));
                        rest = &rest[end + 1..];
                    }
                    found => {
                        let end = found.unwrap_or(rest.len());
                        let text = &rest[..end];
                        if let Some(c) = text.chars().find(|c| {
                            matches!(c, '*' | '>' | '}') || c.is_whitespace() || c.is_control()
                        }) {
                            return Err(format!(
                                "{s:?}: {c:?} is not allowed in a subject (wildcards, \
                                 whitespace and stray braces are not)"
                            ));
                        }
                        pieces.push(Piece::Text(text.to_string()));
                        rest = &rest[end..];
                    }
                }
            }
            if i == 0 && pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
                return Err(format!(
                    "{s:?}: the first token must be fixed text (e.g. \"k8s.events.{{category}}\"), \
                     so the stream's subjects can be derived and no record can pick a system subject"
                ));
            }
            tokens.push(pieces);
        }
        let has_fields = tokens
            .iter()
            .flatten()
            .any(|p| matches!(p, Piece::Field(_)));
        Ok(SubjectTemplate { tokens, has_fields })
    }

    /// Per token, its text when fixed, `None` when it names a field.
    fn fixed(&self) -> impl Iterator<Item = Option<String>> + '_ {
        self.tokens.iter().map(|pieces| {
            let mut s = String::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Field(_) => return None,
                }
            }
            Some(s)
        })
    }

    /// The subject filter of a stream the output creates: the leading fixed tokens then `>`
    /// (`k8s.events.>`), or the subject itself when every token is fixed.
    pub fn stream_subject(&self) -> String {
        let fixed: Vec<String> = self.fixed().map_while(|t| t).collect();
        if fixed.len() == self.tokens.len() {
            fixed.join(".")
        } else {
            format!("{}.>", fixed.join("."))
        }
    }

    /// The template with each field token as `*` (`k8s.events.*.*`), as a stream filter
    /// would be written.
    pub fn pattern(&self) -> String {
        let t: Vec<String> = self.fixed().map(|t| t.unwrap_or("*".into())).collect();
        t.join(".")
    }

    /// Whether stream subject filter `filter` matches every subject the template can make.
    pub fn covered_by(&self, filter: &str) -> bool {
        let tokens: Vec<Option<String>> = self.fixed().collect();
        let mut f = filter.split('.');
        for (i, t) in tokens.iter().enumerate() {
            match f.next() {
                Some(">") => return i < tokens.len(),
                Some("*") => {}
                Some(lit) => match t {
                    Some(fixed) if fixed == lit => {}
                    _ => return false,
                },
                None => return false,
            }
        }
        f.next().is_none()
    }

    /// Appends the subject of JSON record `line` to `out`.
    pub fn render(&self, line: &[u8], out: &mut String) {
        let rec = if self.has_fields {
            // serde_json skips the keys not named here (message, structured_data) without
            // decoding them: measured (benches/nats_throughput.rs) as fast as a hand-written
            // memchr walk of the record, about 1 us per PKS record on a loaded 2-core machine.
            serde_json::from_slice::<RecordFields<'_>>(line).unwrap_or_default()
        } else {
            RecordFields::default()
        };
        let mut num = [0u8; 3];
        for (i, pieces) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for p in pieces {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Field(f) => {
                        let k8s = rec.k8s.as_ref();
                        let v: Option<&str> = match f {
                            Field::Category => k8s.and_then(|k| k.category.as_deref()),
                            Field::Namespace => k8s.and_then(|k| k.namespace.as_deref()),
                            Field::Kind => k8s.and_then(|k| k.kind.as_deref()),
                            Field::Object => k8s.and_then(|k| k.object.as_deref()),
                            Field::Container => k8s.and_then(|k| k.container.as_deref()),
                            Field::Hostname => rec.hostname.as_deref(),
                            Field::AppName => rec.app_name.as_deref(),
                            Field::Procid => rec.procid.as_deref(),
                            Field::Msgid => rec.msgid.as_deref(),
                            Field::Severity => rec.severity.map(|n| small_number(n, &mut num)),
                            Field::Facility => rec.facility.map(|n| small_number(n, &mut num)),
                        };
                        push_token(out, v);
                    }
                }
            }
        }
    }
}

/// `n` in decimal, in `buf`.
fn small_number(n: u8, buf: &mut [u8; 3]) -> &str {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + n % 10;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or(MISSING)
}

/// Appends `v` as (part of) one subject token: `_` when missing or empty; `.`, `*`, `>`,
/// whitespace and control characters replaced by `_`; at most [`MAX_TOKEN_BYTES`] bytes.
fn push_token(out: &mut String, v: Option<&str>) {
    let v = match v {
        Some(v) if !v.is_empty() => v,
        _ => {
            out.push_str(MISSING);
            return;
        }
    };
    let mut len = 0;
    for c in v.chars() {
        len += c.len_utf8();
        if len > MAX_TOKEN_BYTES {
            break;
        }
        if matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() {
            out.push('_');
        } else {
            out.push(c);
        }
    }
}

/// The record keys a template can name (everything else in the line is skipped).
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
struct RecordFields<'a> {
    facility: Option<u8>,
    severity: Option<u8>,
    #[serde(borrow)]
    hostname: Option<Cow<'a, str>>,
    #[serde(borrow)]
    app_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    procid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    msgid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    k8s: Option<K8sFields<'a>>,
}

/// The record's `k8s` object.
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
struct K8sFields<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow)]
    container: Option<Cow<'a, str>>,
}

/// Whether `name` can name a JetStream stream: not empty, at most 255 bytes, no whitespace,
/// `.`, `*`, `>`, path separators or control characters.
fn check_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 255 {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?}: {c:?} is not allowed in a stream name (no '.', '*', '>', '/', '\\', \
             whitespace)"
        ));
    }
    Ok(())
}

/// The servers of `url`: one or more NATS URLs separated by commas (`nats://`, `tls://`;
/// credentials as `nats://user:password@host:port` or `nats://token@host:port`).
pub fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    let mut out = Vec::new();
    for u in url.split(',').map(str::trim) {
        if u.is_empty() {
            return Err(format!("{url:?} has an empty server address"));
        }
        let addr = ServerAddr::from_str(u).map_err(|e| format!("{:?}: {e}", redact(u)))?;
        if !matches!(addr.scheme(), "nats" | "tls") {
            return Err(format!(
                "{:?}: only nats:// and tls:// are supported (not {}://)",
                redact(u),
                addr.scheme()
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

/// `url` without credentials, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(at)) if at > i => format!("{}***{}", &url[..i + 3], &url[at..]),
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// The servers without credentials, for logs and errors.
fn servers_for_logs(servers: &[ServerAddr]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{}://{}:{}", s.scheme(), s.host(), s.port()))
        .collect();
    list.join(",")
}

/// `%XX` escapes of a URL's user or password resolved.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the `nats` keys of a `type = "nats"` output: required and valid (other types'
/// outputs are refused them by `config::check_keys_apply`). `key` names a key of this output.
pub fn validate(o: &OutputConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let err = |k: &str, why: String| Err(ConfigError(format!("{}: {why}", key(k))));
    if o.kind != OutputType::Nats {
        return Ok(());
    }
    let Some(url) = &o.url else {
        return err(
            "url",
            "is required for type \"nats\" (e.g. \"nats://127.0.0.1:4222\")".into(),
        );
    };
    if let Err(why) = parse_servers(url) {
        return err("url", why);
    }
    let Some(stream) = &o.stream else {
        return err("stream", "is required for type \"nats\"".into());
    };
    if let Err(why) = check_stream_name(stream) {
        return err("stream", why);
    }
    let Some(subject) = &o.subject else {
        return err(
            "subject",
            "is required for type \"nats\" (e.g. \"k8s.events.{category}.{namespace}\")".into(),
        );
    };
    if let Err(why) = SubjectTemplate::parse(subject) {
        return err("subject", why);
    }
    if let Some(n) = o.max_inflight {
        if n == 0 || n > MAX_INFLIGHT {
            return err(
                "max_inflight",
                format!("{n} is out of range 1..={MAX_INFLIGHT}"),
            );
        }
    }
    if o.tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
        return err(
            "tls.server_name",
            "does not apply to type \"nats\" (the certificate is checked against the host \
                 of url)"
                .into(),
        );
    }
    if let Some(ms) = o.ack_timeout_ms {
        if !(100..=600_000).contains(&ms) {
            return err(
                "ack_timeout_ms",
                format!("{ms} is out of range 100..=600000"),
            );
        }
    }
    Ok(())
}

/// What a record's `Nats-Msg-Id` is made of (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    /// No disk buffer: `<instance>-<seq>`.
    Seq(u64),
    /// Record `n` of the disk-buffer entry at `position`, appended at `appended`:
    /// `<buffer>-<position>-<appended>-<n>`.
    Entry {
        position: u64,
        appended: u64,
        n: u32,
    },
}

/// A record taken and not yet acknowledged.
#[derive(Debug)]
struct Msg {
    /// Its `Nats-Msg-Id`.
    id: Id,
    subject: Subject,
    payload: Bytes,
    /// Times published (more than once: resent).
    sends: u32,
}

type PublishError = jetstream::context::PublishError;

/// A published record waiting for its acknowledgement.
struct InFlight {
    msg: Msg,
    /// Becomes the future of the acknowledgement when awaited.
    ack: jetstream::context::PublishAckFuture,
    /// When to give up waiting (counted from the publish, not from the first await).
    deadline: Instant,
}

/// Publishes records to a JetStream stream; see the [module documentation](self).
pub struct NatsOutput {
    /// The servers, without credentials (for logs).
    url: String,
    servers: Vec<ServerAddr>,
    stream: String,
    template: SubjectTemplate,
    max_inflight: usize,
    ack_timeout: Duration,
    /// `[output.tls]`: the CA (and client certificate) for the servers; TLS is then required.
    tls: Option<Arc<rustls::ClientConfig>>,
    client: Option<Client>,
    js: Option<Context>,
    /// Whether the stream was found (or made) and covers the template.
    stream_ready: bool,
    /// Whether a stream that does not cover the template was logged as an error.
    cover_logged: bool,
    /// Taken, not (or no longer) published: sent before anything newer.
    queue: VecDeque<Msg>,
    /// Published, oldest first.
    inflight: VecDeque<InFlight>,
    /// Random, for ids without a disk buffer.
    instance: String,
    next_seq: u64,
    /// The disk buffer's folder id (from the first entry it handed over).
    buffer: String,
    /// While the records of a buffer entry are taken: its position, append time, and the
    /// number of the next record in it.
    entry: Option<(u64, u64, u32)>,
    subject_buf: String,
    metrics: Arc<Metrics>,
    index: usize,
}

impl std::fmt::Debug for NatsOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOutput")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("connected", &self.client.is_some())
            .field("queued", &self.queue.len())
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

impl NatsOutput {
    /// The output of `cfg` (a checked `type = "nats"` output), counting in output `index` of
    /// `metrics`. Does not connect: the first write or flush does.
    pub fn new(
        cfg: &OutputConfig,
        index: usize,
        metrics: Arc<Metrics>,
    ) -> Result<NatsOutput, ConfigError> {
        let servers = parse_servers(cfg.url.as_deref().unwrap_or(""))
            .map_err(|e| ConfigError(format!("url: {e}")))?;
        let url = servers_for_logs(&servers);
        let tls = match &cfg.tls {
            Some(t) => Some(
                crate::output::syslog::client_config(t)
                    .map_err(|e| ConfigError(format!("tls.{e}")))?,
            ),
            None => None,
        };
        let stream = cfg.stream.clone().unwrap_or_default();
        check_stream_name(&stream).map_err(|e| ConfigError(format!("stream: {e}")))?;
        let template = SubjectTemplate::parse(cfg.subject.as_deref().unwrap_or(""))
            .map_err(|e| ConfigError(format!("subject: {e}")))?;
        Ok(NatsOutput {
            url,
            servers,
            stream,
            template,
            max_inflight: cfg.max_inflight.unwrap_or(DEFAULT_MAX_INFLIGHT),
            ack_timeout: Duration::from_millis(
                cfg.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS),
            ),
            tls,
            client: None,
            js: None,
            stream_ready: false,
            cover_logged: false,
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            instance: super::random_id(&index.to_le_bytes()),
            next_seq: 0,
            buffer: String::new(),
            entry: None,
            subject_buf: String::new(),
            metrics,
            index,
        })
    }

    /// The first part of this output's `Nats-Msg-Id`s: its disk buffer's folder id once the
    /// buffer handed it records, else the random instance of `<instance>-<seq>`.
    pub fn instance(&self) -> &str {
        if self.buffer.is_empty() {
            &self.instance
        } else {
            &self.buffer
        }
    }

    /// The `Nats-Msg-Id` of `id`.
    fn msg_id(&self, id: Id) -> String {
        match id {
            Id::Seq(seq) => format!("{}-{seq}", self.instance),
            Id::Entry {
                position,
                appended,
                n,
            } => format!("{}-{position:x}-{appended:x}-{n}", self.buffer),
        }
    }

    fn m(&self) -> Option<&OutputMetrics> {
        self.metrics.outputs.get(self.index)
    }

    fn name(&self) -> String {
        self.m().map_or_else(|| "nats".into(), |m| m.name.clone())
    }

    /// Takes the JSON lines of `lines`, each with its subject and id.
    fn take(&mut self, lines: &Bytes) {
        let mut start = 0;
        while start < lines.len() {
            let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i);
            if end > start {
                let line = lines.slice(start..end);
                self.subject_buf.clear();
                self.template.render(&line, &mut self.subject_buf);
                let subject = Subject::from(self.subject_buf.as_str());
                let id = match &mut self.entry {
                    Some((position, appended, n)) => {
                        *n += 1;
                        Id::Entry {
                            position: *position,
                            appended: *appended,
                            n: *n - 1,
                        }
                    }
                    None => {
                        self.next_seq += 1;
                        Id::Seq(self.next_seq - 1)
                    }
                };
                self.queue.push_back(Msg {
                    id,
                    subject,
                    payload: line,
                    sends: 0,
                });
            }
            start = end + 1;
        }
    }

    /// Connects (once; the client reconnects by itself afterwards) and makes sure the stream
    /// exists and covers the template.
    async fn ready(&mut self) -> io::Result<Context> {
        if self.client.is_none() {
            let metrics = self.metrics.clone();
            let index = self.index;
            let name = self.name();
            let seen = Arc::new(AtomicBool::new(false));
            let mut options = async_nats::ConnectOptions::new();
            // Credentials from the URL: user and password, or a token alone.
            if let Some(s) = self.servers.iter().find(|s| s.username().is_some()) {
                let user = percent_decode(s.username().unwrap_or_default());
                options = match s.password() {
                    Some(p) => options.user_and_password(user, percent_decode(p)),
                    None => options.token(user),
                };
            }
            if let Some(tls) = &self.tls {
                options = options
                    .tls_client_config(rustls::ClientConfig::clone(tls))
                    .require_tls(true);
            }
            let options = options
                .name(format!("syslog-sink {name}"))
                .connection_timeout(CONNECT_TIMEOUT)
                .event_callback(move |event| {
                    let (metrics, name, seen) = (metrics.clone(), name.clone(), seen.clone());
                    async move {
                        let m = metrics.outputs.get(index);
                        match event {
                            async_nats::Event::Connected => {
                                if seen.swap(true, Relaxed) {
                                    if let Some(m) = m {
                                        m.reconnects.fetch_add(1, Relaxed);
                                    }
                                    tracing::info!(output = %name, "nats output reconnected");
                                }
                            }
                            async_nats::Event::Disconnected => {
                                seen.store(true, Relaxed);
                                tracing::warn!(output = %name,
                                    "nats output disconnected; reconnecting, unacknowledged records will be resent");
                            }
                            async_nats::Event::Closed => {
                                tracing::debug!(output = %name, "nats output connection closed")
                            }
                            other => {
                                tracing::warn!(output = %name, event = %other, "nats output event")
                            }
                        }
                    }
                });
            let connect = options.connect(self.servers.clone());
            let what = format!("cannot connect to {}", self.url);
            let client = super::bounded(CONNECT_TIMEOUT, &what, connect)
                .await
                .map_err(io::Error::other)?;
            tracing::info!(output = %self.name(), url = %self.url, "nats output connected");
            let js = jetstream::ContextBuilder::new()
                .timeout(self.ack_timeout)
                .ack_timeout(self.ack_timeout)
                .max_ack_inflight(self.max_inflight.saturating_mul(2).max(64))
                .build(client.clone());
            self.client = Some(client);
            self.js = Some(js);
        }
        let Some(js) = self.js.clone() else {
            return Err(io::Error::other("nats output: no JetStream context"));
        };
        if !self.stream_ready {
            self.check_stream(&js).await?;
            self.stream_ready = true;
        }
        Ok(js)
    }

    /// Finds the stream, or creates it with the template's fixed prefix; checks it covers
    /// every subject the template makes.
    async fn check_stream(&mut self, js: &Context) -> io::Result<()> {
        let cfg = stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.template.stream_subject()],
            ..Default::default()
        };
        let what = format!(
            "JetStream stream {:?} cannot be found or created",
            self.stream
        );
        let s = super::bounded(self.ack_timeout, &what, js.get_or_create_stream(cfg))
            .await
            .map_err(io::Error::other)?;
        let subjects = &s.cached_info().config.subjects;
        if !subjects.iter().any(|f| self.template.covered_by(f)) {
            let e = format!(
                "JetStream stream {:?} exists with subjects {subjects:?}, which do not cover \
                 the output's subjects {} (from subject = {:?}); add {:?} to the stream's \
                 subjects, or choose another stream or subject",
                self.stream,
                self.template.pattern(),
                self.template_text(),
                self.template.stream_subject(),
            );
            // Logged at error level once; the run loop's retries log it as a warning.
            if !self.cover_logged {
                tracing::error!(output = %self.name(), "{e}");
                self.cover_logged = true;
            }
            return Err(io::Error::other(e));
        }
        tracing::info!(output = %self.name(), stream = %self.stream, subjects = ?subjects,
            "nats output: stream ready");
        Ok(())
    }

    fn template_text(&self) -> String {
        let mut s = String::new();
        for (i, pieces) in self.template.tokens.iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            for p in pieces {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Field(f) => {
                        let n = FIELDS.iter().find(|(_, g)| g == f).map_or("?", |(n, _)| *n);
                        s.push('{');
                        s.push_str(n);
                        s.push('}');
                    }
                }
            }
        }
        s
    }

    /// Publishes what is queued with at most `max_inflight` acknowledgements outstanding;
    /// with `all`, also waits for every acknowledgement. On a failure, settles every publish
    /// in flight, puts the records that were not acknowledged back at the front of the queue
    /// and returns the first error.
    async fn pump(&mut self, all: bool) -> io::Result<()> {
        let js = self.ready().await?;
        let mut failure: Option<io::Error> = None;
        let mut failed: Vec<Msg> = Vec::new();
        let (mut acked, mut acked_bytes, mut resent) = (0u64, 0u64, 0u64);
        loop {
            while failure.is_none() && self.inflight.len() < self.max_inflight {
                let Some(mut msg) = self.queue.pop_front() else {
                    break;
                };
                let publish = PublishMessage::build()
                    .payload(msg.payload.clone())
                    .message_id(self.msg_id(msg.id));
                match js.send_publish(msg.subject.clone(), publish).await {
                    Ok(ack) => {
                        msg.sends += 1;
                        if msg.sends > 1 {
                            resent += 1;
                        }
                        self.inflight.push_back(InFlight {
                            msg,
                            ack,
                            deadline: Instant::now() + self.ack_timeout,
                        });
                    }
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        // It can never be stored: reported and counted, not retried forever.
                        if let Some(m) = self.m() {
                            m.errors.fetch_add(1, Relaxed);
                        }
                        tracing::error!(output = %self.name(), subject = %msg.subject,
                            bytes = msg.payload.len(), error = %e,
                            "nats output: record larger than the server's max_payload; skipped");
                    }
                    Err(e) => {
                        self.queue.push_front(msg);
                        failure = Some(publish_error(e));
                    }
                }
            }
            // Wait for the oldest acknowledgement when settling after a failure, when flushing,
            // or when the window is full and records are still queued.
            let wait = failure.is_some() || all || !self.queue.is_empty();
            if !wait {
                break;
            }
            let Some(f) = self.inflight.pop_front() else {
                break;
            };
            match tokio::time::timeout_at(f.deadline, f.ack.into_future()).await {
                Ok(Ok(_ack)) => {
                    acked += 1;
                    acked_bytes += f.msg.payload.len() as u64;
                }
                Ok(Err(e)) => {
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        // No JetStream answered: it may still be recovering, or the stream
                        // was deleted; look again before the next attempt.
                        self.stream_ready = false;
                    }
                    failed.push(f.msg);
                    failure.get_or_insert_with(|| publish_error(e));
                }
                Err(_) => {
                    failed.push(f.msg);
                    failure.get_or_insert_with(|| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no JetStream acknowledgement within {:?}", self.ack_timeout),
                        )
                    });
                }
            }
        }
        for msg in failed.into_iter().rev() {
            self.queue.push_front(msg);
        }
        if let Some(m) = self.metrics.outputs.get(self.index) {
            m.records.fetch_add(acked, Relaxed);
            m.bytes.fetch_add(acked_bytes, Relaxed);
            m.retries.fetch_add(resent, Relaxed);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A publish error as an I/O error that names it.
fn publish_error(e: PublishError) -> io::Error {
    let kind = match e.kind() {
        PublishErrorKind::TimedOut => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("JetStream publish failed: {e}"))
}

impl Output for NatsOutput {
    /// Takes the lines of `batch` and publishes them; records are counted when acknowledged.
    async fn write_batch(&mut self, batch: &Arc<Batch>, bit: u64, m: &OutputMetrics) {
        for (run, _) in batch.runs(bit) {
            if let Err(e) = self.write(run).await {
                super::retry_flush(self, m, e).await;
            }
        }
    }

    /// Takes the records of a disk-buffer entry, their ids made of `entry` (the same when the
    /// buffer delivers them again after a restart).
    async fn write_entry(
        &mut self,
        batch: &Arc<Batch>,
        bit: u64,
        m: &OutputMetrics,
        entry: EntryId<'_>,
    ) {
        if self.buffer != entry.buffer {
            self.buffer = entry.buffer.to_string();
        }
        self.entry = Some((entry.position, entry.appended, 0));
        self.write_batch(batch, bit, m).await;
        self.entry = None;
    }

    fn unconfirmed(&self) -> bool {
        !self.queue.is_empty() || !self.inflight.is_empty()
    }

    /// Connects and makes sure the stream exists and covers the subject template.
    async fn probe(&mut self) -> io::Result<()> {
        self.ready().await.map(|_| ())
    }

    async fn write(&mut self, lines: Bytes) -> io::Result<()> {
        self.take(&lines);
        self.pump(false).await
    }

    /// `Ok` once every record taken so far is acknowledged by JetStream.
    async fn flush(&mut self) -> io::Result<()> {
        self.pump(true).await
    }

    async fn close(&mut self) -> io::Result<()> {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(self.ack_timeout, c.flush()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn render(t: &str, line: &str) -> String {
        let t = SubjectTemplate::parse(t).unwrap();
        let mut s = String::new();
        t.render(line.as_bytes(), &mut s);
        s
    }

    const EVENT: &str = r#"{"received_at":"x","peer":"1.2.3.4:5","facility":1,"severity":6,"version":1,"timestamp":null,"hostname":"prod-1","app_name":"k8s.event/logging/es-1/","procid":null,"msgid":"-","structured_data":{"k8s":{"kind":"evil","category":"evil"}},"message":"\"k8s\":{\"category\":\"no\"}","k8s":{"kind":"event","category":"err_image_pull","namespace":"log\u0067ing","object":"es-1","container":"","vm_id":"vm-1"}}"#;

    #[test]
    fn fields_come_from_the_record_not_from_lookalikes_inside_it() {
        assert_eq!(
            render(
                "k8s.{kind}.{category}.{namespace}.{object}.{container}",
                EVENT
            ),
            "k8s.event.err_image_pull.logging.es-1._"
        );
        assert_eq!(
            render("h.{hostname}.{app_name}.{procid}.{msgid}", EVENT),
            "h.prod-1.k8s_event/logging/es-1/._.-"
        );
        assert_eq!(render("n.{facility}.{severity}", EVENT), "n.1.6");
        assert_eq!(render("n.x-{severity}-y", EVENT), "n.x-6-y");
    }

    #[test]
    fn missing_values_become_underscores_and_tokens_are_sanitised() {
        let plain = r#"{"received_at":"x","facility":23,"severity":0,"hostname":null,"app_name":"a b","message":"m"}"#;
        assert_eq!(
            render(
                "p.{category}.{namespace}.{hostname}.{app_name}.{facility}.{severity}",
                plain
            ),
            "p._._._.a_b.23.0"
        );
        let bad = r#"{"hostname":"a.b*c>d\te\u00a0f\u0001g","k8s":{"namespace":""}}"#;
        assert_eq!(render("p.{hostname}.{namespace}", bad), "p.a_b_c_d_e_f_g._");
        // Not JSON at all: every field is missing.
        assert_eq!(render("p.{hostname}", "garbage"), "p._");
        // Long values are cut (on a character boundary).
        let long = format!(r#"{{"hostname":"{}é"}}"#, "h".repeat(MAX_TOKEN_BYTES - 1));
        let s = render("p.{hostname}", &long);
        assert_eq!(s, format!("p.{}", "h".repeat(MAX_TOKEN_BYTES - 1)));
    }

    #[test]
    fn templates_are_checked() {
        for (t, needle) in [
            ("", "empty"),
            ("a..b", "empty token"),
            ("a.b.", "empty token"),
            (".a", "empty token"),
            ("{category}.x", "first token"),
            ("a.{nope}", "unknown field {nope}"),
            ("a.{category", "without"),
            ("a.b}", "not allowed"),
            ("a.*", "not allowed"),
            ("a.>", "not allowed"),
            ("a b.c", "not allowed"),
        ] {
            let e = SubjectTemplate::parse(t).unwrap_err();
            assert!(e.contains(needle), "{t:?}: {e:?} lacks {needle:?}");
        }
        let t = SubjectTemplate::parse("k8s.events.{category}.ns-{namespace}").unwrap();
        assert_eq!(t.stream_subject(), "k8s.events.>");
        assert_eq!(t.pattern(), "k8s.events.*.*");
        let fixed = SubjectTemplate::parse("k8s.events").unwrap();
        assert_eq!(fixed.stream_subject(), "k8s.events");
    }

    #[test]
    fn stream_filters_cover_the_template_or_not() {
        let t = SubjectTemplate::parse("k8s.events.{category}.{namespace}").unwrap();
        for f in [
            "k8s.events.>",
            "k8s.>",
            ">",
            "k8s.*.*.*",
            "*.events.>",
            "k8s.events.*.>",
        ] {
            assert!(t.covered_by(f), "{f}");
        }
        for f in [
            "k8s.events.*",
            "k8s.events.oom.>",
            "k8s.events.*.*.*",
            "k8s.other.>",
            "k8s.events",
            "k8s.events.*.*.>",
        ] {
            assert!(!t.covered_by(f), "{f}");
        }
        let fixed = SubjectTemplate::parse("a.b").unwrap();
        assert!(fixed.covered_by("a.b") && fixed.covered_by("a.>") && !fixed.covered_by("a.b.>"));
    }

    #[test]
    fn credentials_stay_out_of_logs_and_are_decoded() {
        assert_eq!(redact("nats://u:p@h:1"), "nats://***@h:1");
        assert_eq!(redact("t@h:1"), "***@h:1");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
        let servers = parse_servers("nats://us%40r:p%3Aw@h:4222,tls://k:1").unwrap();
        assert_eq!(servers_for_logs(&servers), "nats://h:4222,tls://k:1");
        assert_eq!(percent_decode("us%40r"), "us@r");
        assert_eq!(percent_decode("a%3Ab%2"), "a:b%2");
        let e = parse_servers("http://user:secret@h:1").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn the_example_in_the_shipped_config_is_valid() {
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/syslog-sink.toml"
        ))
        .unwrap();
        let start = shipped.find("# name = \"bus\"").unwrap();
        let block: Vec<&str> = shipped[start..]
            .lines()
            // Up to its [output.tls] (whose files do not exist here).
            .take_while(|l| l.starts_with('#') && !l.starts_with("# [output.tls]"))
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .filter(|l| !l.starts_with('#'))
            .collect();
        let text = format!(
            "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\n{}\n",
            block.join("\n")
        );
        let cfg = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let o = &cfg.output[0];
        assert_eq!(o.kind, OutputType::Nats);
        assert_eq!(o.max_inflight, Some(DEFAULT_MAX_INFLIGHT));
        assert_eq!(o.ack_timeout_ms, Some(DEFAULT_ACK_TIMEOUT_MS));
        assert_eq!(
            o.subject.as_deref(),
            Some("k8s.events.{category}.{namespace}")
        );
    }

    const BASE: &str = "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"bus\"\n";

    #[test]
    fn ids_name_the_buffer_entry_or_the_instance() {
        let cfg = Config::from_toml(&format!(
            "{BASE}type = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nstream = \"S\"\nsubject = \"x\"\n"
        ))
        .unwrap();
        let metrics = Arc::new(Metrics::new(&[], &["bus".to_string()]));
        let mut o = NatsOutput::new(&cfg.output[0], 0, metrics).unwrap();
        let two = Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n");
        // Without a buffer: the random instance and a count.
        o.take(&two);
        let inst = o.instance().to_string();
        assert_eq!(inst.len(), 16);
        // From a buffer entry: the folder's id, position and append time (hex), the record's
        // number in the entry.
        o.buffer = "00000000000000ab".into();
        o.entry = Some((0x1234, 0x18e2a0b3c4d, 0));
        o.take(&two);
        o.entry = Some((0x1300, 0x18e2a0b3c4e, 0));
        o.take(&Bytes::from_static(b"{}\n"));
        let ids: Vec<String> = o.queue.iter().map(|m| o.msg_id(m.id)).collect();
        assert_eq!(
            ids,
            [
                format!("{inst}-0"),
                format!("{inst}-1"),
                "00000000000000ab-1234-18e2a0b3c4d-0".to_string(),
                "00000000000000ab-1234-18e2a0b3c4d-1".to_string(),
                "00000000000000ab-1300-18e2a0b3c4e-0".to_string(),
            ]
        );
        assert_eq!(o.instance(), "00000000000000ab");
    }

    fn error(output: &str) -> String {
        match Config::from_toml(&format!("{BASE}{output}")) {
            Ok(_) => panic!("accepted: {output}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn config_keys_are_checked_and_named() {
        let ok = "type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"K8S_EVENTS\"\n\
                  subject = \"k8s.events.{category}.{namespace}\"\n";
        let cfg = Config::from_toml(&format!("{BASE}{ok}")).unwrap();
        assert_eq!(cfg.output[0].stream.as_deref(), Some("K8S_EVENTS"));
        Config::from_toml(&format!(
            "{BASE}type = \"nats\"\nurl = \"nats://a:4222, tls://u:p@b:4223\"\nstream = \"S\"\n\
             subject = \"x\"\nmax_inflight = 1\nack_timeout_ms = 100\n"
        ))
        .unwrap();
        let s = "stream = \"S\"\nsubject = \"x.{category}\"\n";
        let u = "url = \"nats://127.0.0.1:4222\"\n";
        for (text, needles) in [
            (
                format!("type = \"nats\"\n{s}"),
                &["output[0] \"bus\".url", "required"][..],
            ),
            (
                format!("type = \"nats\"\nurl = \"http://x:1\"\n{s}"),
                &["url", "http://x:1"],
            ),
            (
                format!("type = \"nats\"\nurl = \"ws://a:1\"\n{s}"),
                &["url", "only nats:// and tls://"],
            ),
            (
                format!("type = \"nats\"\nurl = \"nats://a:1,\"\n{s}"),
                &["url", "empty server address"],
            ),
            (
                format!("type = \"nats\"\n{u}stream = \"\"\nsubject = \"x\"\n"),
                &["stream", "must not be empty"],
            ),
            (
                format!("type = \"nats\"\n{u}stream = \"a.b\"\nsubject = \"x\"\n"),
                &["stream", "'.'"],
            ),
            (
                format!("type = \"nats\"\n{u}subject = \"x\"\n"),
                &["stream", "required"],
            ),
            (
                format!("type = \"nats\"\n{u}stream = \"S\"\n"),
                &["subject", "required"],
            ),
            (
                format!("type = \"nats\"\n{u}stream = \"S\"\nsubject = \"k8s.{{nope}}\"\n"),
                &["subject", "unknown field {nope}", "category, namespace"],
            ),
            (
                format!("type = \"nats\"\n{u}{s}max_inflight = 0\n"),
                &["max_inflight", "out of range"],
            ),
            (
                format!("type = \"nats\"\n{u}{s}ack_timeout_ms = 10\n"),
                &["ack_timeout_ms", "out of range"],
            ),
            (
                format!("type = \"nats\"\n{u}{s}address = \"h:1\"\n"),
                &["address", "does not apply"],
            ),
            (
                format!("type = \"nats\"\n{u}{s}path = \"x\"\n"),
                &["path", "does not apply"],
            ),
            (
                format!("type = \"nats\"\n{u}{s}[output.tls]\nca = \"/nonexistent/ca.pem\"\n"),
                &["\"bus\".tls.ca", "/nonexistent/ca.pem"],
            ),
            (
                format!("type = \"nats\"\n{u}{s}[output.tls]\nca = \"x\"\nserver_name = \"h\"\n"),
                &["tls.server_name", "does not apply"],
            ),
            (
                "type = \"stdout\"\nstream = \"S\"\n".to_string(),
                &["stream", "does not apply", "stdout"],
            ),
        ] {
            let e = error(&text);
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }
}
