//! The `nats` output against a real nats-server with JetStream (Debian package `nats-server`,
//! `/usr/sbin/nats-server`). The plain cases use the server on 127.0.0.1:4222 (`.ci/run` starts
//! one when none listens), each with a stream and subject prefix of its own, deleted at the end;
//! the fault cases start their own nats-server on a free port with a store folder of their own,
//! so they can kill and restart it. Every case reads the stream back with a JetStream consumer
//! and checks the exact multiset of records stored. Every wait is bounded.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use common::pki::pki;
use common::sink::{self, free_port, Sink};
use common::{check_pks_records, octet_frame_ends, start, Running, PKS_OCTET};
use futures_util::StreamExt;
use serde_json::Value;
use syslog_sink::config::Config;
use syslog_sink::metrics::Metrics;
use syslog_sink::output::nats::NatsOutput;
use syslog_sink::output::Output;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Messages in the PKS sample.
const N: usize = 2000;
/// The shared server (`.ci/run` starts it).
const SHARED: &str = "nats://127.0.0.1:4222";
/// Where the tests expect the server binary.
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A stream name and subject prefix no other test (or run) uses: `(T_<tag>_<n>, t<n>.<tag>)`.
fn unique(tag: &str) -> (String, String) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ ((std::process::id() as u64) << 40);
    (
        format!("T_{}_{n:x}", tag.to_uppercase()),
        format!("t{n:x}.{tag}"),
    )
}

/// Fails (does not skip) when nats-server is missing.
fn require_nats_server() {
    assert!(
        Path::new(NATS_SERVER).exists(),
        "{NATS_SERVER} is not installed: apt-get install -y nats-server (.ci/run installs it)"
    );
}

/// Fails (does not skip) when nothing listens on 127.0.0.1:4222.
fn require_shared() {
    require_nats_server();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 4222)).is_ok(),
        "nothing listens on 127.0.0.1:4222: start {NATS_SERVER} -a 127.0.0.1 -p 4222 -js \
         -sd <dir> (.ci/run does)"
    );
}

/// A nats-server of the test's own, with JetStream and a store folder that outlives restarts.
struct NatsServer {
    port: u16,
    /// More arguments (authentication).
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

impl NatsServer {
    fn new() -> NatsServer {
        require_nats_server();
        NatsServer {
            port: free_port(),
            args: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            starts: 0,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits (at most 10 s) until its port accepts.
    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("nats.{}.log", self.starts)))
            .expect("log file");
        let store = self.dir.path().join("store");
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited ({st}): {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not listening after 10 s: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and wait for it to exit.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("nats.{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `[[output]]` of a `nats` output (it is output 1, after the helper's file output).
fn nats_output(url: &str, stream: &str, subject: &str, extra: &str) -> String {
    format!(
        "[[output]]\nname = \"bus\"\ntype = \"nats\"\nurl = {url:?}\nstream = {stream:?}\n\
         subject = {subject:?}\nflush_interval_ms = 50\nack_timeout_ms = 1000\n{extra}\n"
    )
}

/// One message as stored in the stream.
#[derive(Debug)]
struct Stored {
    subject: String,
    id: String,
    payload: Bytes,
}

/// Every message of `stream`, read with an ephemeral pull consumer (at most 20 s).
async fn read_stream(url: &str, name: &str) -> Vec<Stored> {
    let work = async {
        let client = async_nats::connect(url)
            .await
            .expect("connect to read back");
        let js = jetstream::new(client);
        let mut s = js.get_stream(name).await.expect("stream exists");
        let total = s.info().await.expect("stream info").state.messages as usize;
        let c = s
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut out = Vec::new();
        while out.len() < total {
            let mut batch = c
                .batch()
                .max_messages(1000)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .expect("batch");
            while let Some(m) = batch.next().await {
                let m = m.expect("message");
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                out.push(Stored {
                    subject: m.subject.to_string(),
                    id,
                    payload: m.payload.clone(),
                });
            }
        }
        out
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("stream read back within 20 s")
}

/// The stream's subjects (its config).
async fn stream_subjects(url: &str, name: &str) -> Vec<String> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    let mut s = js.get_stream(name).await.expect("stream exists");
    s.info().await.expect("info").config.subjects.clone()
}

/// Deletes the stream (best effort, so the shared server does not collect test streams).
async fn delete_stream(url: &str, name: &str) {
    let work = async {
        if let Ok(client) = async_nats::connect(url).await {
            let _ = jetstream::new(client).delete_stream(name).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
}

/// Waits (at most `limit`) until output 1 counted `n` acknowledged records.
async fn wait_acked(r: &Running, n: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let got = r.metrics.outputs[1].records.load(Relaxed);
        if got >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the template `<prefix>.{category}.{namespace}` makes of a record, computed here
/// independently: `_` when missing or empty, `.`, `*`, `>` and whitespace as `_`.
fn expected_subject(prefix: &str, rec: &Value) -> String {
    let token = |v: &Value| match v.as_str() {
        Some(s) if !s.is_empty() => s
            .chars()
            .map(|c| {
                if matches!(c, '.' | '*' | '>') || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
        _ => "_".to_string(),
    };
    format!(
        "{prefix}.{}.{}",
        token(&rec["k8s"]["category"]),
        token(&rec["k8s"]["namespace"])
    )
}

/// Checks the stream holds exactly the records of the file output (same bytes, each once), that
/// those are the 2,000 PKS messages, each once, under the subject its record calls for, each with
/// a distinct `Nats-Msg-Id`.
fn check_stream_equals_file(stored: &[Stored], file_bytes: &[u8], prefix: &str) {
    let mut want: HashMap<&[u8], usize> = HashMap::new();
    for l in file_bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        *want.entry(l).or_insert(0) += 1;
    }
    let mut got: HashMap<&[u8], usize> = HashMap::new();
    for s in stored {
        *got.entry(&s.payload[..]).or_insert(0) += 1;
    }
    assert_eq!(
        got.len(),
        want.len(),
        "distinct records: stream vs file output"
    );
    assert!(got == want, "the stream's records differ from the file's");
    let recs: Vec<Value> = stored
        .iter()
        .map(|s| serde_json::from_slice(&s.payload).expect("payload is one JSON record"))
        .collect();
    check_pks_records(&recs);
    for (s, rec) in stored.iter().zip(&recs) {
        assert_eq!(s.subject, expected_subject(prefix, rec), "subject of {rec}");
    }
    let mut ids: Vec<&str> = stored.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), stored.len(), "a distinct Nats-Msg-Id per record");
    assert!(
        stored
            .iter()
            .all(|s| s.id.len() > 17 && s.id.as_bytes()[16] == b'-'),
        "ids are <16 hex digits>-<seq>: {:?}",
        stored.first().map(|s| &s.id)
    );
}

/// The file output's bytes once it holds all N records (at most 20 s).
async fn file_output(r: &Running) -> Vec<u8> {
    assert_eq!(r.wait_for(N).await.len(), N, "records in the file output");
    std::fs::read(&r.out).expect("file output")
}

/// Sends the PKS sample on one connection, `frames` frames per write, pausing `pause` between
/// writes, then closes it.
async fn send_paced(addr: std::net::SocketAddr, frames: usize, pause: Duration) {
    let data = std::fs::read(PKS_OCTET).expect("sample");
    let ends = octet_frame_ends(&data);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut start = 0;
    for chunk in ends.chunks(frames) {
        let end = *chunk.last().expect("non-empty chunk");
        s.write_all(&data[start..end]).await.expect("write");
        start = end;
        tokio::time::sleep(pause).await;
    }
    s.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_sample_is_stored_exactly_once_under_templated_subjects() {
    require_shared();
    let (name, prefix) = unique("pks");
    let subject = format!("{prefix}.{{category}}.{{namespace}}");
    let r = start("", "", &nats_output(SHARED, &name, &subject, "")).await;
    let data = std::fs::read(PKS_OCTET).expect("sample");
    common::send(r.addr, &data, || 64 * 1024).await;
    let acked = wait_acked(&r, N as u64, Duration::from_secs(20)).await;
    assert_eq!(acked, N as u64, "acknowledged records");
    let file = file_output(&r).await;
    let m = &r.metrics.outputs[1];
    let (errors, retries) = (m.errors.load(Relaxed), m.retries.load(Relaxed));
    assert_eq!(r.stop().await.len(), N);
    assert_eq!((errors, retries), (0, 0), "no errors or resends");
    let stored = read_stream(SHARED, &name).await;
    assert_eq!(stored.len(), N, "messages in the stream");
    // The stream was made with the template's fixed prefix.
    assert_eq!(
        stream_subjects(SHARED, &name).await,
        vec![format!("{prefix}.>")]
    );
    check_stream_equals_file(&stored, &file, &prefix);
    delete_stream(SHARED, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_start_then_everything_is_delivered() {
    let mut nats = NatsServer::new();
    let (name, prefix) = unique("down");
    let subject = format!("{prefix}.{{category}}.{{namespace}}");
    let r = start("", "", &nats_output(&nats.url(), &name, &subject, "")).await;
    let data = std::fs::read(PKS_OCTET).expect("sample");
    common::send(r.addr, &data, || 64 * 1024).await;
    // Nothing listens yet: the output fails, counts it, holds the records and retries.
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.metrics.outputs[1].errors.load(Relaxed) < 2 {
        assert!(
            Instant::now() < deadline,
            "no failed attempt counted in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.metrics.outputs[1].records.load(Relaxed), 0);
    nats.start();
    let acked = wait_acked(&r, N as u64, Duration::from_secs(20)).await;
    assert_eq!(
        acked,
        N as u64,
        "acknowledged after the server came up: {}",
        nats.logs()
    );
    let file = file_output(&r).await;
    assert_eq!(r.stop().await.len(), N);
    let stored = read_stream(&nats.url(), &name).await;
    assert_eq!(stored.len(), N, "messages in the stream");
    check_stream_equals_file(&stored, &file, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    let mut nats = NatsServer::new();
    nats.start();
    let (name, prefix) = unique("kill");
    let subject = format!("{prefix}.{{category}}.{{namespace}}");
    let r = start(
        "",
        "",
        &nats_output(&nats.url(), &name, &subject, "max_inflight = 256"),
    )
    .await;
    // 2,000 messages over about a second, 20 per write.
    let sender = tokio::spawn(send_paced(r.addr, 20, Duration::from_millis(10)));
    let before = wait_acked(&r, 400, Duration::from_secs(20)).await;
    assert!(before >= 400, "acked before the kill: {before}");
    nats.kill();
    let at_kill = r.metrics.outputs[1].records.load(Relaxed);
    assert!(at_kill < N as u64, "the kill came after the stream ended");
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.start();
    let acked = wait_acked(&r, N as u64, Duration::from_secs(30)).await;
    assert_eq!(acked, N as u64, "acknowledged in the end: {}", nats.logs());
    tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("sender done")
        .expect("sender task");
    let m = &r.metrics.outputs[1];
    let (reconnects, retries) = (m.reconnects.load(Relaxed), m.retries.load(Relaxed));
    let file = file_output(&r).await;
    assert_eq!(r.stop().await.len(), N);
    assert!(reconnects >= 1, "the client reconnected after the restart");
    let stored = read_stream(&nats.url(), &name).await;
    eprintln!(
        "acked at kill {at_kill}, resent {retries}, reconnects {reconnects}, stored {}",
        stored.len()
    );
    // Resent records kept their Nats-Msg-Id: JetStream stored each once.
    assert_eq!(stored.len(), N, "messages in the stream");
    check_stream_equals_file(&stored, &file, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unsafe_fields_make_underscored_tokens() {
    require_shared();
    let (name, prefix) = unique("tmpl");
    let subject = format!("{prefix}.{{kind}}.{{category}}.{{namespace}}.s{{severity}}");
    let r = start("", "", &nats_output(SHARED, &name, &subject, "")).await;
    let sd = |ns: &str| {
        format!(
            "[kubernetes@47450 namespace_name=\"{ns}\" object_name=\"o\" container_name=\"c\" vm_id=\"v\"]"
        )
    };
    let msgs = [
        // Not Kubernetes: no kind, category or namespace.
        "<14>1 2024-03-11T08:00:18Z host app - - - plain message".to_string(),
        // A pod log: no category.
        format!(
            "<14>1 2024-03-11T08:00:18Z host pod.log/web/w-1/nginx - - {} GET /",
            sd("web")
        ),
        // An event whose namespace has every character a token cannot hold.
        format!(
            "<11>1 2024-03-11T08:00:18Z host k8s.event/x/o/ - - {} Back-off restarting failed container",
            sd("a.b*c>d e\tf")
        ),
        // An event with an empty namespace.
        format!(
            "<14>1 2024-03-11T08:00:18Z host k8s.event - - {} Started container",
            sd("")
        ),
    ];
    let data: Vec<u8> = msgs.iter().flat_map(|m| common::oc(m)).collect();
    common::send(r.addr, &data, || 1 << 20).await;
    assert_eq!(wait_acked(&r, 4, Duration::from_secs(10)).await, 4);
    assert_eq!(r.stop().await.len(), 4);
    let mut subjects: Vec<String> = read_stream(SHARED, &name)
        .await
        .into_iter()
        .map(|s| s.subject)
        .collect();
    subjects.sort();
    let mut want = vec![
        format!("{prefix}._._._.s6"),
        format!("{prefix}.pod_log._.web.s6"),
        format!("{prefix}.event.back_off.a_b_c_d_e_f.s3"),
        format!("{prefix}.event.started._.s6"),
    ];
    want.sort();
    assert_eq!(subjects, want);
    assert_eq!(
        stream_subjects(SHARED, &name).await,
        vec![format!("{prefix}.>")]
    );
    delete_stream(SHARED, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_stream_that_does_not_cover_the_subject_is_a_clear_error() {
    require_shared();
    let (name, prefix) = unique("cover");
    // Someone made the stream for other subjects.
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(SHARED))
        .await
        .expect("connect in time")
        .expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.other.>")],
        ..Default::default()
    })
    .await
    .expect("create stream");
    let text = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[output]]\nname = \"bus\"\ntype = \"nats\"\nurl = {SHARED:?}\nstream = {name:?}\n\
         subject = \"{prefix}.events.{{category}}\"\nack_timeout_ms = 1000\n"
    );
    let cfg = Config::from_toml(&text).expect("config");
    let metrics = Arc::new(Metrics::new(&[], &["bus".to_string()]));
    let mut out = NatsOutput::new(&cfg.output[0], 0, metrics.clone()).expect("output");
    let line = Bytes::from_static(b"{\"k8s\":{\"kind\":\"event\",\"category\":\"oom\"}}\n");
    let e = tokio::time::timeout(Duration::from_secs(10), out.write(line))
        .await
        .expect("answer within 10 s")
        .expect_err("publishing outside the stream's subjects");
    let msg = e.to_string();
    for needle in [
        name.as_str(),
        &format!("{prefix}.other.>"),
        &format!("{prefix}.events.*"),
        &format!("{prefix}.events.>"),
        "do not cover",
    ] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    // The record is held, not dropped, and flush keeps failing the same way.
    assert!(out.unconfirmed());
    let again = tokio::time::timeout(Duration::from_secs(10), out.flush())
        .await
        .expect("answer within 10 s");
    assert!(again.is_err());
    assert_eq!(metrics.outputs[0].records.load(Relaxed), 0);
    // Nothing reached the stream.
    let mut s = js.get_stream(&name).await.expect("stream");
    assert_eq!(s.info().await.expect("info").state.messages, 0);
    delete_stream(SHARED, &name).await;
}

/// Per proxied connection: its "swallow the server's bytes" switch, and its two copy tasks.
type ProxyConns = Arc<std::sync::Mutex<Vec<(Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>)>>>;

/// A TCP proxy in front of a nats-server that can swallow what the server sends (the
/// acknowledgements) on the connections open now, and cut them.
struct Proxy {
    port: u16,
    conns: ProxyConns,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let conns: ProxyConns = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let swallow = Arc::new(AtomicBool::new(false));
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let sw2 = swallow.clone();
                let down = tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !sw2.load(Relaxed) && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                if let Ok(mut g) = list.lock() {
                    g.push((swallow, vec![up, down]));
                }
            }
        });
        Proxy {
            port,
            conns,
            accept,
        }
    }

    /// From now on, what the server sends on the open connections is dropped.
    fn swallow_acks(&self) {
        for (s, _) in self.conns.lock().expect("lock").iter() {
            s.store(true, Relaxed);
        }
    }

    /// Closes every open connection (new ones pass everything).
    fn cut(&self) {
        for (_, tasks) in self.conns.lock().expect("lock").drain(..) {
            for t in tasks {
                t.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Messages in `stream`, asked of the server directly.
async fn stream_len(url: &str, name: &str) -> u64 {
    let work = async {
        let client = async_nats::connect(url).await.ok()?;
        let mut s = jetstream::new(client).get_stream(name).await.ok()?;
        Some(s.info().await.ok()?.state.messages)
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_resent_after_lost_acks_are_stored_once() {
    let mut nats = NatsServer::new();
    nats.start();
    let proxy = Proxy::start(nats.port).await;
    let (name, prefix) = unique("dedup");
    let subject = format!("{prefix}.{{category}}.{{namespace}}");
    let via = format!("nats://127.0.0.1:{}", proxy.port);
    let r = start("", "", &nats_output(&via, &name, &subject, "")).await;
    let data = std::fs::read(PKS_OCTET).expect("sample");
    let ends = octet_frame_ends(&data);
    let first = 500;
    common::send(r.addr, &data[..ends[first - 1]], || 64 * 1024).await;
    assert_eq!(
        wait_acked(&r, first as u64, Duration::from_secs(20)).await,
        first as u64
    );
    // The server stores what comes next, but its acknowledgements never reach the output: they
    // time out (counted as errors), and the output holds those records and stops taking more.
    proxy.swallow_acks();
    common::send(r.addr, &data[ends[first - 1]..], || 64 * 1024).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.metrics.outputs[1].errors.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no ack timeout in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored_unacked = stream_len(&nats.url(), &name).await - first as u64;
    assert!(stored_unacked > 0, "records stored without acknowledgement");
    assert_eq!(r.metrics.outputs[1].records.load(Relaxed), first as u64);
    // Cut the connection: the client reconnects and the output resends what was not
    // acknowledged, with the same ids.
    proxy.cut();
    let acked = wait_acked(&r, N as u64, Duration::from_secs(20)).await;
    assert_eq!(acked, N as u64, "acknowledged in the end: {}", nats.logs());
    let resent = r.metrics.outputs[1].retries.load(Relaxed);
    assert!(
        resent >= stored_unacked,
        "every record stored without acknowledgement was resent: {resent} < {stored_unacked}"
    );
    eprintln!("stored without ack {stored_unacked}, resent {resent}");
    let file = file_output(&r).await;
    assert_eq!(r.stop().await.len(), N);
    let stored = read_stream(&nats.url(), &name).await;
    assert_eq!(stored.len(), N, "resends were not stored again");
    check_stream_equals_file(&stored, &file, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_used() {
    let mut nats = NatsServer::new();
    nats.args = ["--user", "sink", "--pass", "p@ss:w"]
        .map(String::from)
        .to_vec();
    nats.start();
    let (name, prefix) = unique("auth");
    let subject = format!("{prefix}.{{category}}");
    let url = format!("nats://sink:p%40ss%3Aw@127.0.0.1:{}", nats.port);
    let r = start("", "", &nats_output(&url, &name, &subject, "")).await;
    let msg = "<14>1 2024-03-11T08:00:18Z host app - - - hello";
    common::send(r.addr, &common::oc(msg), || 1 << 20).await;
    assert_eq!(
        wait_acked(&r, 1, Duration::from_secs(10)).await,
        1,
        "{}",
        nats.logs()
    );
    assert_eq!(r.stop().await.len(), 1);
    // The server does want them.
    let anonymous = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(format!("127.0.0.1:{}", nats.port)),
    )
    .await
    .expect("an answer within 10 s");
    assert!(anonymous.is_err(), "the server accepts anyone");
    let client = async_nats::ConnectOptions::with_user_and_password("sink".into(), "p@ss:w".into())
        .connect(format!("127.0.0.1:{}", nats.port))
        .await
        .expect("connect with the password");
    let mut s = jetstream::new(client)
        .get_stream(&name)
        .await
        .expect("stream");
    assert_eq!(s.info().await.expect("info").state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let mut nats = NatsServer::new();
    let (ca, cert, key) = pki(nats.dir.path(), "server", &["127.0.0.1", "localhost"], true);
    nats.args = vec![
        "--tls".into(),
        "--tlscert".into(),
        cert.display().to_string(),
        "--tlskey".into(),
        key.display().to_string(),
    ];
    nats.start();
    let (name, prefix) = unique("tls");
    let subject = format!("{prefix}.{{category}}");
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let tls = format!("[output.tls]\nca = {:?}\n", ca.display().to_string());
    let r = start("", "", &nats_output(&url, &name, &subject, &tls)).await;
    let msg = "<14>1 2024-03-11T08:00:18Z host app - - - over TLS";
    common::send(r.addr, &common::oc(msg), || 1 << 20).await;
    assert_eq!(
        wait_acked(&r, 1, Duration::from_secs(10)).await,
        1,
        "{}",
        nats.logs()
    );
    assert_eq!(r.stop().await.len(), 1);
    // Without the CA the server's certificate is refused: nothing is acknowledged.
    let (other, _) = unique("tls");
    let r = start("", "", &nats_output(&url, &other, &subject, "")).await;
    common::send(r.addr, &common::oc(msg), || 1 << 20).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.metrics.outputs[1].errors.load(Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no failed attempt counted in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.metrics.outputs[1].records.load(Relaxed), 0);
}

/// Waits (at most 20 s) until `stream` holds at least `n` messages; returns how many.
async fn wait_stored(url: &str, name: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = stream_len(url, name).await;
        if have >= n || Instant::now() > deadline {
            return have;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per seq, the times it is in the stream.
fn seq_counts(stored: &[Stored]) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for s in stored {
        let seq = sink::seq_in(&s.payload).expect("seq in a stored record");
        *counts.entry(seq).or_default() += 1;
    }
    counts
}

/// The real binary, its `nats` output (to the shared server through a proxy) behind its disk
/// buffer (on by default): the first half of the PKS sample is acknowledged and checkpointed;
/// then the proxy swallows the acknowledgements, so JetStream stores some of the second half
/// without the output knowing (it holds those records, and the buffer holds the whole second
/// half), and syslog-sink is killed with `kill -9`. Restarted on the same folder with
/// acknowledgements flowing again (well within the stream's 2-minute duplicate window), it
/// delivers the buffer: every record is in the stream exactly once. The records JetStream had
/// stored before the kill are published again (they were after the checkpoint) with the ids
/// they had, made of their buffer entry, and JetStream drops them as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_the_buffer() {
    require_shared();
    let proxy = Proxy::start(4222).await;
    let (name, prefix) = unique("kill9");
    let subject = format!("{prefix}.{{category}}.{{namespace}}");
    let via = format!("nats://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = Sink::new(
        dir.path(),
        &nats_output(&via, &name, &subject, "max_inflight = 256"),
    );
    let buffer = sink.buffer_dir("bus");
    sink.start();
    let data = std::fs::read(PKS_OCTET).expect("sample");
    let half = octet_frame_ends(&data)[N / 2 - 1];
    common::send(sink.addr(), &data[..half], || 64 * 1024).await;
    let stored = wait_stored(SHARED, &name, N as u64 / 2).await;
    assert_eq!(stored, N as u64 / 2, "the first half stored");
    sink::wait_checkpointed(&buffer, false, Duration::from_secs(20)).await;
    // JetStream goes on storing; the output never hears of it.
    proxy.swallow_acks();
    common::send(sink.addr(), &data[half..], || 64 * 1024).await;
    sink::wait_buffered(&buffer, false, &(N / 2 + 1..=N).collect()).await;
    let stored = wait_stored(SHARED, &name, N as u64 / 2 + 1).await;
    assert!(stored > N as u64 / 2, "nothing of the second half stored");
    sink.signal("-KILL").expect("was running");
    proxy.cut();
    // What the stream holds (and the ids), and what the buffer will deliver again.
    let ids_at_kill: HashMap<usize, String> = read_stream(SHARED, &name)
        .await
        .into_iter()
        .filter_map(|s| Some((sink::seq_in(&s.payload)?, s.id)))
        .collect();
    let buffered_at_kill = sink::buffered_seqs(&buffer, false);
    let may_repeat: BTreeSet<usize> = buffered_at_kill
        .iter()
        .filter(|s| ids_at_kill.contains_key(s))
        .copied()
        .collect();
    assert!(!may_repeat.is_empty(), "stored, not acknowledged, buffered");
    sink.start();
    wait_stored(SHARED, &name, N as u64).await;
    sink::wait_checkpointed(&buffer, false, Duration::from_secs(20)).await;
    sink.stop();
    let stored = read_stream(SHARED, &name).await;
    delete_stream(SHARED, &name).await;
    eprintln!(
        "kill -9 with {} records after the checkpoint, {} of them already stored; {} in the \
         stream after the restart",
        buffered_at_kill.len(),
        may_repeat.len(),
        stored.len()
    );
    // Nothing twice, although `may_repeat` were published again.
    let none = BTreeSet::new();
    sink::check_arrivals(&seq_counts(&stored), &(1..=N).collect(), &none);
    // Ids: the buffer folder's id first, one per record, those stored before the kill kept.
    let folder = std::fs::read_to_string(buffer.join("instance")).expect("instance file");
    let mut ids = BTreeSet::new();
    for s in &stored {
        assert!(s.id.starts_with(&format!("{}-", folder.trim())), "{}", s.id);
        assert!(ids.insert(s.id.as_str()), "id {} twice", s.id);
        let seq = sink::seq_in(&s.payload).expect("seq");
        if let Some(before) = ids_at_kill.get(&seq) {
            assert_eq!(&s.id, before, "seq {seq}");
        }
    }
    let recs: Vec<Value> = stored
        .iter()
        .map(|s| serde_json::from_slice(&s.payload).expect("payload is one JSON record"))
        .collect();
    check_pks_records(&recs);
    let log = sink.log(2);
    assert!(
        log.contains("delivering the records left from the last run"),
        "{log}"
    );
}
