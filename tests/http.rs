//! The `http` output against an HTTP/1.1 receiver started inside the test (hyper's server, so
//! real request parsing: Content-Length and chunked bodies). The receiver checks the wire
//! format of every request (JSON array, HEC envelopes, `_bulk` NDJSON; headers; gzip), answers
//! as each test scripts it (500/503/429, 400, per-item bulk errors, a dropped connection), and
//! keeps the records it accepted. Each test sends the PKS sample into syslog-sink (which also
//! writes every record to a file output) and asserts the exact multiset of records that
//! arrived, and of those dead-lettered. Every wait is bounded.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::sink::{self, Sink};
use common::{seq_of, start, PKS_OCTET};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// Messages in the PKS sample.
const N: usize = 2000;
/// Longest wait for anything.
const WAIT: Duration = Duration::from_secs(20);

/// What the receiver answers to one request.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// 200 (for `_bulk`: every item 201).
    Ok,
    /// This status, nothing accepted.
    Status(u16),
    /// `_bulk`: 200 with `errors: true` and these item statuses.
    Items(Vec<u16>),
    /// Close the listener and this connection without answering.
    Die,
    /// Answer nothing for 5 s, then close the connection (the output's request timeout is
    /// shorter).
    Stall,
}

/// Decides the answer from the request's number (0-based) and its records.
type Script = Box<dyn FnMut(usize, &[Value]) -> Answer + Send>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Enc {
    Json,
    Hec,
    Bulk,
}

/// What the receiver saw and did.
struct State {
    enc: Enc,
    script: Mutex<Script>,
    requests: Mutex<usize>,
    /// Records answered with success (per item, for bulk).
    accepted: Mutex<Vec<Value>>,
    /// Records refused for good (4xx other than 408/429, bulk items with such a status).
    refused: Mutex<Vec<Value>>,
    /// Wire-format violations found.
    violations: Mutex<Vec<String>>,
    /// Requests that carried a gzip body.
    gzipped: Mutex<usize>,
    /// Largest number of records in one request.
    max_records: Mutex<usize>,
    died: Mutex<usize>,
    /// Answer with `Connection: close` (the receiver closes after each request).
    close: Mutex<bool>,
    accept: Mutex<Option<AbortHandle>>,
    conns: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test's HTTP receiver.
struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    /// HTTPS when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Receiver {
    async fn start(enc: Enc, script: Script) -> Receiver {
        Receiver::start_on("127.0.0.1:0", enc, script).await
    }

    async fn start_on(addr: &str, enc: Enc, script: Script) -> Receiver {
        Receiver::start_tls(addr, enc, script, None).await
    }

    async fn start_tls(
        addr: &str,
        enc: Enc,
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Receiver {
        let l = TcpListener::bind(addr).await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let state = Arc::new(State {
            enc,
            script: Mutex::new(script),
            requests: Mutex::new(0),
            accepted: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            gzipped: Mutex::new(0),
            max_records: Mutex::new(0),
            died: Mutex::new(0),
            close: Mutex::new(false),
            accept: Mutex::new(None),
            conns: Mutex::new(Vec::new()),
        });
        let r = Receiver { addr, state, tls };
        r.serve(l);
        r
    }

    /// Listens again on the same address (after [`Answer::Die`] or [`Self::kill`]).
    async fn restart(&self) {
        let l = TcpListener::bind(self.addr).await.expect("bind again");
        self.serve(l);
    }

    fn serve(&self, l: TcpListener) {
        let state = self.state.clone();
        let tls = self.tls.clone();
        let h = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let st = state.clone();
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    let st2 = st.clone();
                    let svc = service_fn(move |req| handle(st2.clone(), req));
                    let b = http1::Builder::new();
                    match tls {
                        None => {
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                        Some(acceptor) => {
                            let Ok(s) = acceptor.accept(s).await else {
                                lock(&st.violations).push("TLS handshake failed".into());
                                return;
                            };
                            if s.get_ref().1.alpn_protocol() != Some(b"http/1.1") {
                                lock(&st.violations).push("ALPN is not http/1.1".into());
                            }
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                });
                lock(&state.conns).push(conn.abort_handle());
            }
        });
        *lock(&self.state.accept) = Some(h.abort_handle());
    }

    fn set_script(&self, s: Script) {
        *lock(&self.state.script) = s;
    }

    fn accepted(&self) -> Vec<Value> {
        lock(&self.state.accepted).clone()
    }

    fn refused(&self) -> Vec<Value> {
        lock(&self.state.refused).clone()
    }

    /// Waits until `n` records were accepted.
    async fn wait_accepted(&self, n: usize) -> Vec<Value> {
        wait_until(|| lock(&self.state.accepted).len() >= n, "records accepted").await;
        self.accepted()
    }

    fn check_wire(&self) {
        let v = lock(&self.state.violations);
        assert!(
            v.is_empty(),
            "wire format violations: {:#?}",
            &v[..v.len().min(5)]
        );
    }
}

/// Closes the listener and every connection.
fn kill(state: &State) {
    if let Some(a) = lock(&state.accept).take() {
        a.abort();
    }
    for c in lock(&state.conns).drain(..) {
        c.abort();
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The record's time as the output uses it: `timestamp` if RFC 3339, else `received_at`.
fn record_time(rec: &Value) -> DateTime<Utc> {
    ["timestamp", "received_at"]
        .iter()
        .find_map(|k| {
            rec[*k]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        })
        .map(|t| t.with_timezone(&Utc))
        .expect("record has a time")
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let mut bad = Vec::new();
    let headers = req.headers().clone();
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if req.method() != hyper::Method::POST {
        bad.push(format!("method {}", req.method()));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let body: Vec<u8> = if h("content-encoding").as_deref() == Some("gzip") {
        *lock(&st.gzipped) += 1;
        if !body.starts_with(&[0x1f, 0x8b]) {
            bad.push("Content-Encoding gzip without the gzip magic".into());
        }
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .map_err(std::io::Error::other)?;
        out
    } else {
        body.to_vec()
    };
    let records = match st.enc {
        Enc::Json => {
            if h("content-type").as_deref() != Some("application/json") {
                bad.push(format!("content-type {:?}", h("content-type")));
            }
            if h("x-test").as_deref() != Some("yes") {
                bad.push("configured header X-Test missing".into());
            }
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(a)) => a,
                other => {
                    bad.push(format!("not a JSON array: {other:?}"));
                    Vec::new()
                }
            }
        }
        Enc::Hec => {
            if h("authorization").as_deref() != Some("Splunk 0000-test-token") {
                bad.push(format!("authorization {:?}", h("authorization")));
            }
            let mut recs = Vec::new();
            for env in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
                let env = match env {
                    Ok(e) => e,
                    Err(e) => {
                        bad.push(format!("HEC body: {e}"));
                        break;
                    }
                };
                let ev = env["event"].clone();
                let want_time = record_time(&ev).timestamp_micros() as f64 / 1e6;
                let time = env["time"].as_f64().unwrap_or(f64::NAN);
                if (time - want_time).abs() > 2e-6 {
                    bad.push(format!("time {time} for {want_time}"));
                }
                let mut want = json!({
                    "time": env["time"], "sourcetype": "syslog-sink:k8s", "index": "k8s",
                    "event": ev.clone(),
                });
                if !ev["hostname"].is_null() {
                    want["host"] = ev["hostname"].clone();
                }
                if !ev["app_name"].is_null() {
                    want["source"] = ev["app_name"].clone();
                }
                if env != want {
                    bad.push(format!("envelope {env} is not {want}"));
                }
                recs.push(ev);
            }
            recs
        }
        Enc::Bulk => {
            if h("content-type").as_deref() != Some("application/x-ndjson") {
                bad.push(format!("content-type {:?}", h("content-type")));
            }
            if !body.ends_with(b"\n") {
                bad.push("bulk body does not end in LF".into());
            }
            let mut recs = Vec::new();
            let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
            while let Some(action) = lines.next() {
                let action: Value = serde_json::from_slice(action).unwrap_or(Value::Null);
                let Some(doc) = lines.next() else {
                    bad.push("action line without a document".into());
                    break;
                };
                let doc: Value = serde_json::from_slice(doc).unwrap_or(Value::Null);
                let index = format!("syslog-sink-{}", record_time(&doc).format("%Y.%m.%d"));
                if action != json!({"create": {"_index": index}}) {
                    bad.push(format!("action {action} for a record of {index}"));
                }
                recs.push(doc);
            }
            recs
        }
    };
    {
        let mut m = lock(&st.max_records);
        *m = (*m).max(records.len());
    }
    lock(&st.violations).extend(bad);
    let n = {
        let mut r = lock(&st.requests);
        *r += 1;
        *r - 1
    };
    let answer = (lock(&st.script))(n, &records);
    let (status, body) = match answer {
        Answer::Die => {
            *lock(&st.died) += 1;
            kill(&st);
            return Err(std::io::Error::other("receiver dies"));
        }
        Answer::Stall => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Err(std::io::Error::other("receiver stalled"));
        }
        Answer::Ok => {
            lock(&st.accepted).extend(records.iter().cloned());
            let body = if st.enc == Enc::Bulk {
                let items: Vec<Value> = records
                    .iter()
                    .map(|_| json!({"create": {"status": 201}}))
                    .collect();
                json!({"took": 1, "errors": false, "items": items}).to_string()
            } else {
                "{\"text\":\"Success\",\"code\":0}".to_string()
            };
            (200, body)
        }
        Answer::Status(s) => {
            if (400..500).contains(&s) && s != 408 && s != 429 && (s != 413 || records.len() == 1) {
                lock(&st.refused).extend(records.iter().cloned());
            }
            (s, format!("{{\"error\":\"scripted {s}\"}}"))
        }
        Answer::Items(statuses) => {
            assert_eq!(statuses.len(), records.len());
            let mut items = Vec::new();
            for (rec, s) in records.iter().zip(&statuses) {
                match s {
                    200..=299 => lock(&st.accepted).push(rec.clone()),
                    408 | 429 | 500..=599 => {}
                    _ => lock(&st.refused).push(rec.clone()),
                }
                let mut item = json!({"_index": "x", "status": s});
                if *s >= 300 {
                    item["error"] = json!({"type": if *s == 429 { "es_rejected_execution_exception" } else { "mapper_parsing_exception" }, "reason": "scripted"});
                }
                items.push(json!({"create": item}));
            }
            (
                200,
                json!({"took": 1, "errors": true, "items": items}).to_string(),
            )
        }
    };
    let mut resp = Response::builder().status(status);
    if *lock(&st.close) {
        resp = resp.header("connection", "close");
    }
    let resp = resp
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(std::io::Error::other)?;
    Ok(resp)
}

/// Sorted JSON texts: a multiset that compares.
fn multiset(v: &[Value]) -> Vec<String> {
    let mut s: Vec<String> = v.iter().map(Value::to_string).collect();
    s.sort();
    s
}

fn assert_same(got: &[Value], want: &[Value], what: &str) {
    let (g, w) = (multiset(got), multiset(want));
    if g != w {
        let extra = g.iter().filter(|x| !w.contains(x)).count();
        let missing = w.iter().filter(|x| !g.contains(x)).count();
        panic!(
            "{what}: {} records, expected {}; {extra} unexpected, {missing} missing (or duplicates)",
            g.len(),
            w.len()
        );
    }
}

/// The `[[output]]` section of an http output named "http" to `addr`.
fn http_output(addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[output]]\nname = \"http\"\ntype = \"http\"\nurl = \"http://{addr}/in\"\n\
         flush_interval_ms = 50\nconnect_timeout_ms = 500\n{extra}\n"
    )
}

fn pks() -> Vec<u8> {
    std::fs::read(PKS_OCTET).expect("PKS sample")
}

/// Sends `data` in chunks of 1..=8192 bytes.
async fn send(addr: SocketAddr, data: &[u8], seed: u64) {
    let mut rng = common::Rng(seed);
    tokio::time::timeout(WAIT, common::send(addr, data, || rng.upto(8192)))
        .await
        .expect("send within the time limit");
}

/// A JSON webhook: JSON arrays of at most `batch_max_records`, configured headers, filters.
#[tokio::test]
async fn json_webhook_batches_and_filter() {
    let rx = Receiver::start(Enc::Json, Box::new(|_, _| Answer::Ok)).await;
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            "encoding = \"json\"\nbatch_max_records = 300\nheaders = { X-Test = \"yes\" }\n",
        ),
    )
    .await;
    send(sink.addr, &pks(), 1).await;
    let all = sink.wait_for(N).await;
    assert_eq!(all.len(), N);
    let got = rx.wait_accepted(N).await;
    let m = sink.metrics.clone();
    let stopped = sink.stop().await;
    assert_same(&got, &stopped, "records posted");
    rx.check_wire();
    assert!(*lock(&rx.state.max_records) <= 300);
    assert!(*lock(&rx.state.requests) >= N / 300);
    assert_eq!(m.outputs[1].records.load(Relaxed), N as u64);
    assert_eq!(m.outputs[1].errors.load(Relaxed), 0);
    assert_eq!(
        m.outputs[1].reconnects.load(Relaxed),
        0,
        "one kept-alive connection"
    );

    // The config shape: only two categories go out.
    let rx = Receiver::start(Enc::Json, Box::new(|_, _| Answer::Ok)).await;
    let sink = start(
        "",
        "",
        &format!(
            "[[output]]\nname = \"alerts\"\ntype = \"http\"\nurl = \"http://{}/alerts\"\n\
             encoding = \"json\"\nheaders = {{ X-Test = \"yes\" }}\nflush_interval_ms = 50\n\
             filter = {{ category = [\"err_image_pull\", \"back_off\"] }}\n",
            rx.addr
        ),
    )
    .await;
    send(sink.addr, &pks(), 2).await;
    let all = sink.wait_for(N).await;
    let want: Vec<Value> = all
        .iter()
        .filter(|r| {
            matches!(
                r["k8s"]["category"].as_str(),
                Some("err_image_pull" | "back_off")
            )
        })
        .cloned()
        .collect();
    assert!(!want.is_empty() && want.len() < N);
    let got = rx.wait_accepted(want.len()).await;
    sink.stop().await;
    assert_same(&got, &want, "filtered records posted");
    rx.check_wire();
}

/// Splunk HEC: the envelope of each record (time, host, source, sourcetype, index, event),
/// the token, gzip.
#[tokio::test]
async fn splunk_hec_envelopes_gzipped() {
    let rx = Receiver::start(Enc::Hec, Box::new(|_, _| Answer::Ok)).await;
    // A record without an RFC 3339 timestamp (time from received_at), one without hostname.
    let extra: Vec<u8> = [
        "<13>Mar 11 08:00:18 host3164 app[1]: bsd seq=00002001",
        "<13>1 2024-03-11T23:30:00.5-02:00 - - - - - late seq=00002002",
    ]
    .iter()
    .flat_map(|m| common::oc(m))
    .collect();
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            "encoding = \"splunk_hec\"\ntoken = \"0000-test-token\"\nsourcetype = \"syslog-sink:k8s\"\n\
             index = \"k8s\"\ngzip = true\n",
        ),
    )
    .await;
    send(sink.addr, &[pks(), extra].concat(), 3).await;
    let got = rx.wait_accepted(N + 2).await;
    let stopped = sink.stop().await;
    assert_eq!(stopped.len(), N + 2);
    assert_same(&got, &stopped, "HEC events");
    rx.check_wire();
    assert_eq!(*lock(&rx.state.gzipped), *lock(&rx.state.requests));
}

/// Elasticsearch bulk: index names from the record's date; items answered 429 are sent
/// again (only them), items answered 400 are dead-lettered, each once.
#[tokio::test]
async fn elasticsearch_bulk_item_errors() {
    // Per seq: every 50th is a mapping error for good; in the first three requests, every
    // 7th is throttled the first time it is seen (throttling in every request would make the
    // run loop's backoff grow to its cap: right for a busy cluster, slow for a test).
    let mut seen: HashMap<usize, u32> = HashMap::new();
    let throttled = Arc::new(Mutex::new(Vec::new()));
    let t2 = throttled.clone();
    let script: Script = Box::new(move |n, recs| {
        let statuses = recs
            .iter()
            .map(|r| {
                let seq = seq_of(r).unwrap_or(0);
                let tries = seen.entry(seq).or_default();
                *tries += 1;
                if seq.is_multiple_of(50) {
                    400
                } else if seq.is_multiple_of(7) && *tries == 1 && n < 3 {
                    lock(&t2).push(seq);
                    429
                } else {
                    201
                }
            })
            .collect::<Vec<u16>>();
        if statuses.iter().all(|s| *s == 201) {
            Answer::Ok
        } else {
            Answer::Items(statuses)
        }
    });
    let rx = Receiver::start(Enc::Bulk, script).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dead/http.jsonl");
    // Days other than the sample's: a negative offset that crosses midnight UTC, and an
    // RFC 3164 record (index from received_at).
    let extra: Vec<u8> = [
        "<13>1 2024-03-11T23:30:00.5-02:00 h a - - - next day seq=00002001",
        "<13>1 2023-12-31T23:59:59Z h a - - - last year seq=00002002",
        "<13>Mar 11 08:00:18 host3164 app[1]: bsd seq=00002003",
    ]
    .iter()
    .flat_map(|m| common::oc(m))
    .collect();
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            &format!(
                "encoding = \"elasticsearch_bulk\"\nbatch_max_bytes = 65536\n\
                 dead_letter_path = {:?}\n",
                dl.display().to_string()
            ),
        ),
    )
    .await;
    send(sink.addr, &[pks(), extra].concat(), 4).await;
    let total = N + 3;
    let dead_n = total / 50;
    rx.wait_accepted(total - dead_n).await;
    let m = sink.metrics.clone();
    let stopped = sink.stop().await;
    assert_eq!(stopped.len(), total);
    let (want_dead, want_ok): (Vec<Value>, Vec<Value>) = stopped
        .into_iter()
        .partition(|r| seq_of(r).unwrap_or(0).is_multiple_of(50));
    assert_eq!(want_dead.len(), dead_n);
    assert_same(&rx.accepted(), &want_ok, "bulk documents indexed");
    assert_same(&rx.refused(), &want_dead, "bulk documents refused");
    let letters: Vec<Value> = common::read_records(&dl);
    for l in &letters {
        assert_eq!(l["output"], "http");
        assert_eq!(l["status"], 400);
        assert!(l["reason"]
            .as_str()
            .unwrap_or("")
            .contains("mapper_parsing_exception"));
    }
    let dead: Vec<Value> = letters.iter().map(|l| l["record"].clone()).collect();
    assert_same(&dead, &want_dead, "dead letters");
    rx.check_wire();
    let o = &m.outputs[1];
    assert_eq!(o.records.load(Relaxed), (total - dead_n) as u64);
    assert_eq!(o.dead_letters.load(Relaxed), dead_n as u64);
    let throttled = lock(&throttled).len() as u64;
    assert!(throttled > 0);
    assert_eq!(
        o.retries.load(Relaxed),
        throttled,
        "only throttled items are sent again"
    );
    assert!(o.errors.load(Relaxed) >= 1);
}

/// 500, 503 and 429 are retried (nothing lost, nothing twice); a 400 is not retried: its
/// batch is dead-lettered, and the ones after it go through.
#[tokio::test]
async fn statuses_retried_or_dead_lettered() {
    let failures = [
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(429),
    ];
    retried_then_400(&failures, 0).await;
}

/// 408 and no answer within `request_timeout_ms` (the connection is then replaced) are
/// retried too.
#[tokio::test]
async fn timeouts_retried() {
    retried_then_400(&[Answer::Status(408), Answer::Stall], 1).await;
}

/// The first requests get `failures` (each retried: the run loop's backoff doubles, so a few
/// per test keep it short), request `failures.len() + 2` a 400, the rest succeed.
async fn retried_then_400(failures: &[Answer], reconnects: u64) {
    let f = failures.to_vec();
    let bad = f.len() + 2;
    let script: Script = Box::new(move |n, _| match f.get(n) {
        Some(a) => a.clone(),
        None if n == bad => Answer::Status(400),
        None => Answer::Ok,
    });
    let rx = Receiver::start(Enc::Json, script).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            &format!(
                "encoding = \"json\"\nheaders = {{ X-Test = \"yes\" }}\nbatch_max_records = 100\n\
                 dead_letter_path = {:?}\nrequest_timeout_ms = 300\n",
                dl.display().to_string()
            ),
        ),
    )
    .await;
    send(sink.addr, &pks(), 5).await;
    let m = sink.metrics.clone();
    wait_until(
        || {
            let r = rx.accepted().len() + rx.refused().len();
            r >= N
        },
        "every record accepted or refused",
    )
    .await;
    let stopped = sink.stop().await;
    rx.check_wire();
    let refused = rx.refused();
    assert!(!refused.is_empty() && refused.len() <= 100);
    assert_same(
        &[rx.accepted(), refused.clone()].concat(),
        &stopped,
        "accepted + refused",
    );
    let dead: Vec<Value> = common::read_records(&dl)
        .into_iter()
        .map(|l| {
            assert_eq!(l["status"], 400);
            l["record"].clone()
        })
        .collect();
    assert_same(&dead, &refused, "dead letters");
    let o = &m.outputs[1];
    assert_eq!(
        o.errors.load(Relaxed),
        failures.len() as u64,
        "{failures:?}"
    );
    assert_eq!(
        o.reconnects.load(Relaxed),
        reconnects,
        "after a timeout only"
    );
    assert_eq!(o.dead_letters.load(Relaxed), refused.len() as u64);
    assert_eq!(o.records.load(Relaxed), (N - refused.len()) as u64);
}

/// Without `dead_letter_path` a refused batch is counted and logged, and the output goes on.
#[tokio::test]
async fn refused_without_dead_letter_path_is_counted() {
    let rx = Receiver::start(
        Enc::Json,
        Box::new(|n, _| {
            if n == 0 {
                Answer::Status(422)
            } else {
                Answer::Ok
            }
        }),
    )
    .await;
    let sink = start(
        "",
        "",
        &http_output(rx.addr, "headers = { X-Test = \"yes\" }\n"),
    )
    .await;
    send(sink.addr, &pks(), 6).await;
    wait_until(
        || rx.accepted().len() + rx.refused().len() >= N,
        "all settled",
    )
    .await;
    let m = sink.metrics.clone();
    let stopped = sink.stop().await;
    let refused = rx.refused();
    assert!(!refused.is_empty());
    assert_same(
        &[rx.accepted(), refused.clone()].concat(),
        &stopped,
        "accepted + refused",
    );
    assert_eq!(
        m.outputs[1].dead_letters.load(Relaxed),
        refused.len() as u64
    );
}

/// Receiver down when the sink starts: the output retries with backoff, and every record
/// arrives once the receiver is up, each once.
#[tokio::test]
async fn receiver_down_at_start() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let sink = start(
        "",
        "",
        &http_output(addr, "headers = { X-Test = \"yes\" }\ngzip = true\n"),
    )
    .await;
    send(sink.addr, &pks(), 7).await;
    let m = sink.metrics.clone();
    wait_until(|| m.outputs[1].errors.load(Relaxed) >= 2, "failed attempts").await;
    assert_eq!(m.outputs[1].records.load(Relaxed), 0);
    let rx = Receiver::start_on(&addr.to_string(), Enc::Json, Box::new(|_, _| Answer::Ok)).await;
    let got = rx.wait_accepted(N).await;
    let stopped = sink.stop().await;
    assert_same(&got, &stopped, "records after the receiver came up");
    rx.check_wire();
}

/// Receiver killed mid-stream (it drops the connection of a request without answering and
/// closes its listener), then started again on the same port: nothing lost, nothing twice.
#[tokio::test]
async fn receiver_killed_and_restarted() {
    let rx = Receiver::start(Enc::Json, Box::new(|_, _| Answer::Ok)).await;
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            "headers = { X-Test = \"yes\" }\nbatch_max_records = 200\n",
        ),
    )
    .await;
    let data = pks();
    let half = common::octet_frame_ends(&data)[N / 2 - 1];
    send(sink.addr, &data[..half], 8).await;
    rx.wait_accepted(N / 2).await;
    // The next request kills the receiver.
    rx.set_script(Box::new(|_, _| Answer::Die));
    send(sink.addr, &data[half..], 9).await;
    wait_until(|| *lock(&rx.state.died) == 1, "the receiver to die").await;
    let m = sink.metrics.clone();
    let errors = m.outputs[1].errors.load(Relaxed);
    wait_until(
        || m.outputs[1].errors.load(Relaxed) >= errors + 2,
        "failed reconnects",
    )
    .await;
    rx.set_script(Box::new(|_, _| Answer::Ok));
    rx.restart().await;
    let got = rx.wait_accepted(N).await;
    let stopped = sink.stop().await;
    assert_same(&got, &stopped, "records across the restart");
    rx.check_wire();
    assert!(m.outputs[1].reconnects.load(Relaxed) >= 1);
    assert!(m.outputs[1].retries.load(Relaxed) >= 1);
}

/// HTTPS: the receiver's certificate verified against `[output.tls] ca` (made at test time),
/// HTTP/1.1 by ALPN; a receiver whose certificate that CA did not sign gets nothing.
#[tokio::test]
async fn https_with_configured_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let pem = p.self_signed(&key).expect("CA").pem();
        (pem, Issuer::new(p, key))
    };
    let (ca_pem, issuer) = ca("test CA");
    let (other_pem, _) = ca("other CA");
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &issuer).expect("cert");
    let ca_path = dir.path().join("ca.pem");
    let other_path = dir.path().join("other.pem");
    std::fs::write(&ca_path, &ca_pem).expect("write");
    std::fs::write(&other_path, &other_pem).expect("write");
    let certs = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("cert pem")];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key pem");
    let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));

    for (ca, ok) in [(&ca_path, true), (&other_path, false)] {
        let rx = Receiver::start_tls(
            "127.0.0.1:0",
            Enc::Json,
            Box::new(|_, _| Answer::Ok),
            Some(acceptor.clone()),
        )
        .await;
        let sink = start(
            "",
            "",
            &format!(
                "[[output]]\nname = \"http\"\ntype = \"http\"\n\
                 url = \"https://localhost:{}/in\"\nheaders = {{ X-Test = \"yes\" }}\n\
                 flush_interval_ms = 50\n[output.tls]\nca = {:?}\n",
                rx.addr.port(),
                ca.display().to_string()
            ),
        )
        .await;
        send(sink.addr, &pks(), 10).await;
        let m = sink.metrics.clone();
        if ok {
            let got = rx.wait_accepted(N).await;
            let stopped = sink.stop().await;
            assert_same(&got, &stopped, "records over https");
            rx.check_wire();
        } else {
            wait_until(
                || m.outputs[1].errors.load(Relaxed) >= 2,
                "refused handshakes",
            )
            .await;
            assert_eq!(*lock(&rx.state.requests), 0);
            assert_eq!(m.outputs[1].records.load(Relaxed), 0);
            // Records are kept (not dead-lettered) while the receiver cannot be trusted.
            assert_eq!(m.outputs[1].dead_letters.load(Relaxed), 0);
        }
    }
}

/// A receiver that answers 413 to requests of more than 50 records: the output halves its
/// batches until they pass; nothing is dead-lettered or lost.
#[tokio::test]
async fn too_large_halves_batches() {
    let rx = Receiver::start(
        Enc::Json,
        Box::new(|_, recs| {
            if recs.len() > 50 {
                Answer::Status(413)
            } else {
                Answer::Ok
            }
        }),
    )
    .await;
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            "headers = { X-Test = \"yes\" }\nbatch_max_records = 400\n",
        ),
    )
    .await;
    send(sink.addr, &pks(), 11).await;
    let got = rx.wait_accepted(N).await;
    let m = sink.metrics.clone();
    let stopped = sink.stop().await;
    assert_same(&got, &stopped, "records after 413s");
    assert!(rx.refused().is_empty());
    assert_eq!(m.outputs[1].dead_letters.load(Relaxed), 0);
    assert_eq!(m.outputs[1].errors.load(Relaxed), 0);
}

/// A receiver that closes the connection after every answer (`Connection: close`): the output
/// opens a new one for each request, without counting an error or losing anything.
#[tokio::test]
async fn receiver_closing_each_connection() {
    let rx = Receiver::start(Enc::Json, Box::new(|_, _| Answer::Ok)).await;
    *lock(&rx.state.close) = true;
    let sink = start(
        "",
        "",
        &http_output(
            rx.addr,
            "headers = { X-Test = \"yes\" }\nbatch_max_records = 100\n",
        ),
    )
    .await;
    send(sink.addr, &pks(), 12).await;
    let got = rx.wait_accepted(N).await;
    let m = sink.metrics.clone();
    let stopped = sink.stop().await;
    assert_same(&got, &stopped, "records, one connection per request");
    rx.check_wire();
    let o = &m.outputs[1];
    assert_eq!(o.errors.load(Relaxed), 0);
    let requests = *lock(&rx.state.requests) as u64;
    assert!(requests >= 20);
    assert_eq!(
        o.reconnects.load(Relaxed),
        requests - 1,
        "a new connection per request"
    );
}

/// The real binary, its `http` output behind its disk buffer (on by default): the first half of
/// the PKS sample is accepted and checkpointed; then the receiver answers 503 to everything, so
/// the second half stays in the buffer, and syslog-sink is killed with `kill -9`. Restarted on
/// the same folder with the receiver accepting again, it delivers the buffer: every record
/// arrives, and one arrives twice only when the receiver had accepted it before the kill while
/// it was still after the buffer's checkpoint (confirmed or sent, not yet checkpointed: the
/// documented duplicates; here none, as the first half was checkpointed and nothing of the
/// second was accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_the_buffer() {
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rx = Receiver::start(Enc::Json, Box::new(|_, _| Answer::Ok)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = Sink::new(
        dir.path(),
        &http_output(
            rx.addr,
            "headers = { X-Test = \"yes\" }\nbatch_max_records = 200\n",
        ),
    );
    let buffer = sink.buffer_dir("http");
    sink.start();
    let data = pks();
    let half = common::octet_frame_ends(&data)[N / 2 - 1];
    send(sink.addr(), &data[..half], 13).await;
    rx.wait_accepted(N / 2).await;
    sink::wait_checkpointed(&buffer, false, WAIT).await;
    let first: BTreeSet<usize> = rx.accepted().iter().filter_map(seq_of).collect();
    assert_eq!(first, (1..=N / 2).collect(), "the first half accepted");
    let r = refused.clone();
    rx.set_script(Box::new(move |_, _| {
        r.fetch_add(1, Relaxed);
        Answer::Status(503)
    }));
    send(sink.addr(), &data[half..], 14).await;
    sink::wait_buffered(&buffer, false, &(N / 2 + 1..=N).collect()).await;
    wait_until(|| refused.load(Relaxed) >= 2, "refused requests").await;
    sink.signal("-KILL").expect("was running");
    // What the receiver holds, and what the buffer will deliver again.
    let accepted_at_kill: BTreeSet<usize> = rx.accepted().iter().filter_map(seq_of).collect();
    let buffered_at_kill = sink::buffered_seqs(&buffer, false);
    let may_repeat: BTreeSet<usize> = accepted_at_kill
        .intersection(&buffered_at_kill)
        .copied()
        .collect();
    assert!(
        buffered_at_kill.len() >= N / 2,
        "{}",
        buffered_at_kill.len()
    );
    rx.set_script(Box::new(|_, _| Answer::Ok));
    sink.start();
    wait_until(
        || {
            let got: BTreeSet<usize> = rx.accepted().iter().filter_map(seq_of).collect();
            got.len() >= N
        },
        "every record after the restart",
    )
    .await;
    sink::wait_checkpointed(&buffer, false, WAIT).await;
    sink.stop();
    let accepted = rx.accepted();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for r in &accepted {
        *counts.entry(seq_of(r).expect("seq")).or_default() += 1;
    }
    let twice = sink::check_arrivals(&counts, &(1..=N).collect(), &may_repeat);
    eprintln!(
        "kill -9 with {} records after the checkpoint ({} refused requests); {} may repeat, \
         {} arrived twice",
        buffered_at_kill.len(),
        refused.load(Relaxed),
        may_repeat.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "duplicates {twice:?}");
    // Each record as syslog-sink made it (header fields, classification).
    common::check_pks_records(&accepted);
    rx.check_wire();
    let log = sink.log(2);
    assert!(
        log.contains("delivering the records left from the last run"),
        "{log}"
    );
}
