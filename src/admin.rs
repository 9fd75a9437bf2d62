//! The admin listener (`[admin] address`): a small HTTP/1.1 server beside the data path.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus / OpenMetrics text, read from the counters at scrape time |
//! | `/healthz` | `200 ok`: the process is alive |
//! | `/readyz` | `200` when every listener is bound and every output can take records, else `503`; a JSON body says which is not |
//! | `/api/status` | JSON for the status page |
//! | `/` | the status page (`src/admin/status.html`, built into the binary; no CDN) |
//!
//! Nothing here is on the data path: the counters are the atomics of [`Metrics`] and the
//! per-batch tables of [`crate::stats`], read when a request comes. The server is bounded: at
//! most [`MAX_CONNECTIONS`] connections (more are closed at once), request headers within
//! [`HEADER_TIMEOUT`] and [`MAX_REQUEST_BUFFER`] bytes, each connection closed after
//! [`CONNECTION_LIFETIME`], only `GET` and `HEAD`; request bodies are never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::metrics::{Metrics, OutputState, ValueKind};
use crate::reload::{Reloader, SharedRules};
use crate::route::QueueProbe;
use crate::server::Server;
use crate::stats::{DetailSnapshot, FRAME_ERROR_KIND_LIST, OVERFLOW_NAMESPACE};

/// Most admin connections open at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Request headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of one admin connection (bounds the request head).
pub const MAX_REQUEST_BUFFER: usize = 16 * 1024;
/// An admin connection is closed after this, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Chart samples kept (the page shows the last `HISTORY * sample_interval_secs`).
pub const HISTORY: usize = 120;
/// Failing namespaces listed on the status page.
const FAILING_NAMESPACES: usize = 10;

/// The status page: one self-contained HTML file (inline CSS, JS and SVG).
pub const STATUS_HTML: &str = include_str!("admin/status.html");

/// Binds the admin listener; the error names the key and what to do when the port is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).await.map_err(|e| {
        ConfigError(format!(
            "admin.address: cannot listen on {addr}: {e} (is another syslog-sink running? set \
             [admin] address to a free port, or to \"\" for no admin listener)"
        ))
    })
}

/// One chart sample: counters at a moment.
#[derive(Debug, Clone)]
struct Sample {
    /// Unix seconds.
    at: f64,
    records: u64,
    /// Events per category slot.
    categories: Vec<u64>,
}

/// What the admin handlers read.
#[derive(Debug)]
pub struct AdminState {
    metrics: Arc<Metrics>,
    probe: QueueProbe,
    rules: SharedRules,
    reloader: Option<Arc<Reloader>>,
    shutdown: CancellationToken,
    /// Output types, config order.
    output_types: Vec<&'static str>,
    top_namespaces: usize,
    sample_interval: Duration,
    started: SystemTime,
    history: Mutex<std::collections::VecDeque<Sample>>,
}

impl AdminState {
    /// The state for `server`, started from `config`.
    pub fn new(config: &Config, server: &Server, reloader: Option<Arc<Reloader>>) -> Arc<Self> {
        Arc::new(AdminState {
            metrics: server.metrics(),
            probe: server.queue_probe(),
            rules: server.rules(),
            reloader,
            shutdown: server.shutdown_token(),
            output_types: config.output.iter().map(|o| o.kind.as_str()).collect(),
            top_namespaces: config.admin.top_namespaces,
            sample_interval: Duration::from_secs(config.admin.sample_interval_secs),
            started: SystemTime::now(),
            history: Mutex::new(std::collections::VecDeque::with_capacity(HISTORY + 1)),
        })
    }

    fn sample(&self) {
        let s = Sample {
            at: unix_secs(SystemTime::now()),
            records: self.metrics.records.load(Relaxed),
            categories: self.category_totals(),
        };
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(s);
        }
    }

    /// Events per category slot, up to the last named slot.
    fn category_totals(&self) -> Vec<u64> {
        let n = self.metrics.category_names().len();
        self.metrics
            .categories
            .iter()
            .take(n)
            .map(|c| c.load(Relaxed))
            .collect()
    }

    /// Readiness: (ready, what is not).
    fn readiness(&self) -> (bool, Vec<String>) {
        let mut not = Vec::new();
        if self.shutdown.is_cancelled() {
            not.push("shutting down".to_string());
        }
        for l in &self.metrics.listeners {
            if l.bound.get().is_none() {
                not.push(format!("listener {}: not bound", l.address));
            }
        }
        for o in &self.metrics.outputs {
            let st = o.state();
            if st != OutputState::Up {
                let why = o.last_error().map(|(e, _)| e).unwrap_or_default();
                not.push(format!("output {:?}: {}: {why}", o.name, st.as_str()));
            }
        }
        (not.is_empty(), not)
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Serves the admin endpoints on `listener` until `shutdown`; samples the chart meanwhile.
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!(address = %a, "admin listener: /metrics /healthz /readyz and the status page at /");
    }
    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.sample_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                state.sample();
            }
        })
    };
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => { backoff = Duration::from_millis(10); s }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!("admin connection limit reached; closing a connection");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BUFFER)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
            drop(permit);
        });
    }
    sampler.abort();
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers one request.
pub fn handle(state: &Arc<AdminState>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    route(state, req.method(), req.uri().path())
}

fn route(state: &Arc<AdminState>, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
        );
    }
    match path {
        "/" | "/index.html" => response(StatusCode::OK, "text/html; charset=utf-8", STATUS_HTML),
        "/healthz" => response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/readyz" => {
            let (ready, not) = state.readiness();
            let body = json!({
                "ready": ready,
                "not_ready": not,
                "listeners": listeners_json(state),
                "outputs": outputs_json(state),
            });
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response(status, "application/json", body.to_string())
        }
        "/metrics" => match metrics_text(state) {
            Ok(text) => response(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(e) => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("encoding failed: {e}\n"),
            ),
        },
        "/api/status" => response(
            StatusCode::OK,
            "application/json",
            status_json(state).to_string(),
        ),
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

fn listeners_json(state: &AdminState) -> Vec<Value> {
    let stopping = state.shutdown.is_cancelled();
    state
        .metrics
        .listeners
        .iter()
        .map(|l| {
            let accepted = l.accepted.load(Relaxed);
            let closed = l.closed.load(Relaxed);
            json!({
                "address": l.label(),
                "state": match (l.bound.get().is_some(), stopping) {
                    (false, _) => "not bound",
                    (true, true) => "stopping",
                    (true, false) => "listening",
                },
                "connections_open": accepted.saturating_sub(closed),
                "accepted": accepted,
                "refused": l.refused.load(Relaxed),
                "frames": l.frames.load(Relaxed),
                "bytes": l.bytes.load(Relaxed),
            })
        })
        .collect()
}

fn outputs_json(state: &AdminState) -> Vec<Value> {
    let depths = state.probe.depths();
    state
        .metrics
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut values = serde_json::Map::new();
            for (name, _, _, v) in o.values() {
                values.insert(name.to_string(), v.into());
            }
            let (depth, cap) = depths.get(i).copied().flatten().unwrap_or((0, 0));
            let err = o.last_error();
            json!({
                "name": o.name,
                "type": state.output_types.get(i).copied().unwrap_or(""),
                "state": o.state().as_str(),
                "queue_batches": depth,
                "queue_capacity": cap,
                "last_error": err.as_ref().map(|(e, _)| e.clone()),
                "last_error_at": err.as_ref().map(|(_, t)| rfc3339(*t)),
                "values": values,
            })
        })
        .collect()
}

/// The namespaces with the most records: (name, counts), at most `n`, most first.
fn top_namespaces(d: &DetailSnapshot, n: usize) -> Vec<&(String, crate::stats::NamespaceCounts)> {
    let mut v: Vec<_> = d.namespaces.iter().collect();
    v.sort_by(|a, b| b.1.records.cmp(&a.1.records).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn status_json(state: &AdminState) -> Value {
    let m = &state.metrics;
    let names = m.category_names();
    let totals = state.category_totals();
    let detail = m.detail.snapshot();
    let rules = state.rules.load();
    let failure_names: Vec<&String> = rules
        .classifier
        .categories()
        .iter()
        .zip(&rules.failure)
        .filter_map(|(n, f)| f.then_some(n))
        .collect();
    let failure_slots: Vec<usize> = failure_names
        .iter()
        .filter_map(|f| names.iter().position(|n| n == *f))
        .collect();
    let slot_of = |name: &str| names.iter().position(|n| n == name);
    let (eip, bo) = (slot_of("err_image_pull"), slot_of("back_off"));
    let mut failing: Vec<Value> = detail
        .namespaces
        .iter()
        .map(|(ns, c)| {
            (
                ns,
                c,
                failure_slots.iter().map(|&s| c.category(s)).sum::<u64>(),
            )
        })
        .filter(|(_, _, f)| *f > 0)
        .map(|(ns, c, f)| {
            json!({
                "namespace": ns,
                "err_image_pull": eip.map_or(0, |s| c.category(s)),
                "back_off": bo.map_or(0, |s| c.category(s)),
                "failures": f,
                "records": c.records,
            })
        })
        .collect();
    failing.sort_by(|a, b| {
        let k = |v: &Value| {
            (
                v["err_image_pull"].as_u64().unwrap_or(0) + v["back_off"].as_u64().unwrap_or(0),
                v["failures"].as_u64().unwrap_or(0),
            )
        };
        k(b).cmp(&k(a))
            .then_with(|| a["namespace"].as_str().cmp(&b["namespace"].as_str()))
    });
    failing.truncate(FAILING_NAMESPACES);
    let recent: Vec<Value> = detail
        .failures
        .iter()
        .rev()
        .map(|f| {
            json!({
                "at": rfc3339(f.at),
                "category": names.get(f.category).cloned().unwrap_or_default(),
                "namespace": f.namespace,
                "object": f.object,
                "message": f.message,
            })
        })
        .collect();
    // Chart: per interval, records and events per category (deltas between samples, the last
    // one up to now).
    let mut samples: Vec<Sample> = state
        .history
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    samples.push(Sample {
        at: unix_secs(SystemTime::now()),
        records: m.records.load(Relaxed),
        categories: totals.clone(),
    });
    let mut t = Vec::new();
    let mut records = Vec::new();
    let mut per_cat: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    for w in samples.windows(2) {
        t.push(w[1].at);
        records.push(w[1].records.saturating_sub(w[0].records));
        for (i, series) in per_cat.iter_mut().enumerate() {
            let a = w[0].categories.get(i).copied().unwrap_or(0);
            let b = w[1].categories.get(i).copied().unwrap_or(0);
            series.push(b.saturating_sub(a));
        }
    }
    let mut series = serde_json::Map::new();
    for (i, s) in per_cat.into_iter().enumerate() {
        if s.iter().any(|&v| v > 0) {
            series.insert(names[i].clone(), s.into());
        }
    }
    let (ready, not_ready) = state.readiness();
    let reload = state.reloader.as_ref().and_then(|r| r.last()).map(|r| {
        json!({
            "at": rfc3339(r.at),
            "ok": r.result.is_ok(),
            "message": match &r.result {
                Ok(notes) if notes.is_empty() => "reloaded".to_string(),
                Ok(notes) => format!("reloaded; {}", notes.join("; ")),
                Err(e) => e.clone(),
            },
        })
    });
    json!({
        "now": rfc3339(SystemTime::now()),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": SystemTime::now().duration_since(state.started).map(|d| d.as_secs()).unwrap_or(0),
        "ready": ready,
        "not_ready": not_ready,
        "totals": {
            "records": m.records.load(Relaxed),
            "events": m.events.load(Relaxed),
            "pod_logs": m.pod_logs.load(Relaxed),
            "parse_errors": m.parse_errors.load(Relaxed),
            "framing_errors": m.framing_errors.load(Relaxed),
            "truncated": m.truncated.load(Relaxed),
            "bytes": m.bytes.load(Relaxed),
            "connections_open": m.connections_open(),
            "connections_accepted": m.connections_accepted.load(Relaxed),
            "connections_refused": m.connections_refused.load(Relaxed) + m.connections_refused_per_ip.load(Relaxed),
            "failure_events": detail.failures_total,
        },
        "categories": names.iter().zip(&totals).map(|(n, v)| json!({"name": n, "events": v})).collect::<Vec<_>>(),
        "failure_categories": failure_names,
        "history": {
            "interval_secs": state.sample_interval.as_secs(),
            "t": t,
            "records": records,
            "categories": series,
        },
        "failing_namespaces": failing,
        "recent_failures": recent,
        "listeners": listeners_json(state),
        "outputs": outputs_json(state),
        "rules_generation": rules.generation,
        "reload": reload,
    })
}

/// The `/metrics` collector: reads everything at scrape time.
#[derive(Debug)]
struct Scrape {
    state: Arc<AdminState>,
}

/// Writes one metric family: `(labels, value)` samples.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: ValueKind,
    samples: &[(Vec<(&'static str, String)>, V)],
) -> Result<(), std::fmt::Error>
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let t = match kind {
        ValueKind::Counter => MetricType::Counter,
        ValueKind::Gauge => MetricType::Gauge,
    };
    let mut f = enc.encode_descriptor(name, help, None, t)?;
    for (labels, v) in samples {
        let e = f.encode_family(labels)?;
        match kind {
            ValueKind::Counter => ConstCounter::new(*v).encode(e)?,
            ValueKind::Gauge => ConstGauge::new(*v).encode(e)?,
        }
    }
    Ok(())
}

/// The `namespace` label of a namespace: records without one (node events) get `(none)`, as
/// Prometheus treats an empty label value as no label.
fn ns_label(n: &str) -> &str {
    if n.is_empty() {
        "(none)"
    } else {
        n
    }
}

fn l1(k: &'static str, v: impl Into<String>) -> Vec<(&'static str, String)> {
    vec![(k, v.into())]
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use ValueKind::{Counter, Gauge};
        let s = &self.state;
        let m = &s.metrics;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        // Listeners.
        let per_listener = |f: &dyn Fn(&crate::metrics::ListenerMetrics) -> u64| -> Vec<(Vec<(&'static str, String)>, u64)> {
            m.listeners.iter().map(|l| (l1("listener", l.label()), f(l))).collect()
        };
        family(
            &mut enc,
            "syslog_sink_frames_received",
            "Frames cut per listener (one record each).",
            Counter,
            &per_listener(&|l| ld(&l.frames)),
        )?;
        family(
            &mut enc,
            "syslog_sink_bytes_received",
            "Bytes read per listener.",
            Counter,
            &per_listener(&|l| ld(&l.bytes)),
        )?;
        family(
            &mut enc,
            "syslog_sink_connections_accepted",
            "Connections accepted per listener.",
            Counter,
            &per_listener(&|l| ld(&l.accepted)),
        )?;
        family(
            &mut enc,
            "syslog_sink_connections_refused",
            "Connections refused per listener (max_connections, max_connections_per_ip).",
            Counter,
            &per_listener(&|l| ld(&l.refused)),
        )?;
        family(
            &mut enc,
            "syslog_sink_connections_open",
            "Connections open per listener.",
            Gauge,
            &per_listener(&|l| ld(&l.accepted).saturating_sub(ld(&l.closed))),
        )?;
        let up: Vec<_> = m
            .listeners
            .iter()
            .map(|l| {
                (
                    l1("listener", l.label()),
                    u64::from(l.bound.get().is_some() && !s.shutdown.is_cancelled()),
                )
            })
            .collect();
        family(
            &mut enc,
            "syslog_sink_listener_up",
            "1 while the listener is bound and accepting.",
            Gauge,
            &up,
        )?;
        // Records.
        family(
            &mut enc,
            "syslog_sink_records",
            "Records produced (one per frame, errors included).",
            Counter,
            &[(vec![], ld(&m.records))],
        )?;
        let d = m.detail.snapshot();
        let mut errs = vec![(l1("kind", "syntax"), ld(&m.parse_errors))];
        for (k, n) in FRAME_ERROR_KIND_LIST.iter().zip(d.frame_errors) {
            if n > 0
                || !matches!(
                    k,
                    crate::framing::FrameErrorKind::FrameTooLong
                        | crate::framing::FrameErrorKind::EofInFrame
                        | crate::framing::FrameErrorKind::EofWithoutTrailer
                )
            {
                errs.push((l1("kind", k.code()), n));
            }
        }
        family(&mut enc, "syslog_sink_parse_errors", "Records that are errors, by kind: syntax (the frame did not parse; parse_error) or the framing error code (framing_error).", Counter, &errs)?;
        let trunc: Vec<_> = FRAME_ERROR_KIND_LIST
            .iter()
            .zip(d.truncations)
            .filter(|(k, n)| {
                *n > 0
                    || matches!(
                        k,
                        crate::framing::FrameErrorKind::FrameTooLong
                            | crate::framing::FrameErrorKind::EofInFrame
                            | crate::framing::FrameErrorKind::EofWithoutTrailer
                    )
            })
            .map(|(k, n)| (l1("reason", k.code()), n))
            .collect();
        family(
            &mut enc,
            "syslog_sink_truncated_frames",
            "Frames delivered truncated, by reason.",
            Counter,
            &trunc,
        )?;
        family(
            &mut enc,
            "syslog_sink_k8s_records",
            "Kubernetes records by kind.",
            Counter,
            &[
                (l1("kind", "event"), ld(&m.events)),
                (l1("kind", "pod_log"), ld(&m.pod_logs)),
            ],
        )?;
        let names = m.category_names();
        let cats: Vec<_> = names
            .iter()
            .zip(&m.categories)
            .map(|(n, c)| (l1("category", n.clone()), ld(c)))
            .collect();
        family(
            &mut enc,
            "syslog_sink_events",
            "Kubernetes events by category.",
            Counter,
            &cats,
        )?;
        // Namespaces: the top N by records, the rest (and overflow) as "other".
        let top = top_namespaces(&d, s.top_namespaces);
        let mut other = d.overflow.clone();
        for (name, c) in &d.namespaces {
            if !top.iter().any(|(n, _)| n == name) {
                other.records += c.records;
                for (i, v) in c.categories.iter().enumerate() {
                    if other.categories.len() <= i {
                        other.categories.resize(i + 1, 0);
                    }
                    other.categories[i] += v;
                }
            }
        }
        let mut ns_rows: Vec<(&str, &crate::stats::NamespaceCounts)> =
            top.iter().map(|(n, c)| (n.as_str(), c)).collect();
        ns_rows.push((OVERFLOW_NAMESPACE, &other));
        let ns_records: Vec<_> = ns_rows
            .iter()
            .map(|(n, c)| (l1("namespace", ns_label(n)), c.records))
            .collect();
        family(&mut enc, "syslog_sink_namespace_records", "Kubernetes records per namespace: the top_namespaces namespaces with the most records, the rest under namespace=\"other\".", Counter, &ns_records)?;
        let mut ns_events = Vec::new();
        for (n, c) in &ns_rows {
            for (i, v) in c.categories.iter().enumerate() {
                if *v > 0 {
                    let cat = names.get(i).cloned().unwrap_or_default();
                    ns_events.push((
                        vec![("namespace", ns_label(n).to_string()), ("category", cat)],
                        *v,
                    ));
                }
            }
        }
        family(&mut enc, "syslog_sink_namespace_events", "Kubernetes events per namespace (as syslog_sink_namespace_records) and category; only non-zero series.", Counter, &ns_events)?;
        family(
            &mut enc,
            "syslog_sink_failure_events",
            "Events in the failure categories ([admin] failure_categories).",
            Counter,
            &[(vec![], d.failures_total)],
        )?;
        // Outputs: every OutputMetrics value, the state, the queue.
        let out_label = |o: &crate::metrics::OutputMetrics| l1("output", o.name.clone());
        if let Some(first) = m.outputs.first() {
            for (k, (name, kind, help, _)) in first.values().into_iter().enumerate() {
                let samples: Vec<_> = m
                    .outputs
                    .iter()
                    .map(|o| (out_label(o), o.values().get(k).map_or(0, |v| v.3)))
                    .collect();
                family(
                    &mut enc,
                    &format!("syslog_sink_output_{name}"),
                    help,
                    kind,
                    &samples,
                )?;
            }
        }
        let depths = s.probe.depths();
        let q: Vec<_> = m
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    out_label(o),
                    depths.get(i).copied().flatten().map_or(0, |d| d.0 as u64),
                )
            })
            .collect();
        family(
            &mut enc,
            "syslog_sink_output_queue_batches",
            "Batches waiting in the output's queue.",
            Gauge,
            &q,
        )?;
        let qc: Vec<_> = m
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    out_label(o),
                    depths.get(i).copied().flatten().map_or(0, |d| d.1 as u64),
                )
            })
            .collect();
        family(
            &mut enc,
            "syslog_sink_output_queue_capacity",
            "Capacity of the output's queue (queue_batches).",
            Gauge,
            &qc,
        )?;
        let up: Vec<_> = m
            .outputs
            .iter()
            .map(|o| (out_label(o), u64::from(o.state() == OutputState::Up)))
            .collect();
        family(&mut enc, "syslog_sink_output_up", "1 while the output takes records (connected or nothing failed), 0 while it retries or after it stopped.", Gauge, &up)?;
        let mut st = Vec::new();
        for o in &m.outputs {
            for x in [OutputState::Up, OutputState::Retrying, OutputState::Down] {
                st.push((
                    vec![
                        ("output", o.name.clone()),
                        ("state", x.as_str().to_string()),
                    ],
                    u64::from(o.state() == x),
                ));
            }
        }
        family(
            &mut enc,
            "syslog_sink_output_state",
            "1 for the output's current state (up, retrying, down).",
            Gauge,
            &st,
        )?;
        // Limits.
        let limits = [
            ("max_connections", ld(&m.connections_refused)),
            ("max_connections_per_ip", ld(&m.connections_refused_per_ip)),
            ("max_messages_per_sec", ld(&m.rate_limit_pauses)),
            ("max_buffered_bytes", ld(&m.buffer_limit_hits)),
            ("max_inflight_bytes", ld(&m.budget_waits)),
            (
                "max_frame_bytes",
                d.truncations
                    [crate::stats::frame_error_index(crate::framing::FrameErrorKind::FrameTooLong)],
            ),
            ("tls_handshake", ld(&m.tls_handshake_failures)),
            ("tls_plaintext", ld(&m.tls_plaintext_clients)),
        ];
        let limits: Vec<_> = limits.iter().map(|(k, v)| (l1("kind", *k), *v)).collect();
        family(&mut enc, "syslog_sink_limit_hits", "Limits hit, by kind: connections refused (max_connections, max_connections_per_ip, tls_handshake, tls_plaintext), reads paused (max_messages_per_sec, max_inflight_bytes) or shortened (max_buffered_bytes), frames truncated (max_frame_bytes).", Counter, &limits)?;
        if let Some((used, total)) = s.probe.inflight() {
            family(&mut enc, "syslog_sink_inflight_bytes", "Bytes of reads and their records on the way to the outputs ([server] max_inflight_bytes bounds it).", Gauge, &[(vec![], used as u64)])?;
            family(
                &mut enc,
                "syslog_sink_inflight_bytes_limit",
                "[server] max_inflight_bytes.",
                Gauge,
                &[(vec![], total as u64)],
            )?;
        }
        family(
            &mut enc,
            "syslog_sink_rate_limit_paused_seconds",
            "Time reads were paused at max_messages_per_sec.",
            Counter,
            &[(vec![], ld(&m.rate_limit_paused_ms) as f64 / 1000.0)],
        )?;
        family(
            &mut enc,
            "syslog_sink_rules_generation",
            "0 at start, +1 per successful config reload (SIGHUP).",
            Gauge,
            &[(vec![], s.rules.load().generation)],
        )?;
        family(
            &mut enc,
            "syslog_sink_start_time_seconds",
            "Unix time the process started.",
            Gauge,
            &[(vec![], unix_secs(s.started))],
        )?;
        Ok(())
    }
}

fn metrics_text(state: &Arc<AdminState>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        state: state.clone(),
    }));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
