//! The `kafka` output against a real Kafka-protocol broker: tansu (crates.io, Apache-2.0),
//! installed by `.ci/run` under `target/interop/tansu` (or wherever `SYSLOG_SINK_TANSU` points),
//! started by each test on a free loopback port with the in-memory storage engine (a SQLite
//! file where the broker must keep its users across a restart). The PKS
//! sample goes into syslog-sink and out through the `kafka` output; the tests read the topic
//! back with rskafka and check the records by the `seq=` token at the end of every message.
//! Every wait is bounded. A missing broker binary fails the tests (it is not a skip).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::sink::{self, free_port};
use common::{check_pks_records, octet_frame_ends, seq_of, PKS_OCTET};
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use serde_json::Value;
use syslog_sink::config::{Config, ForwardTlsConfig};
use syslog_sink::metrics::{Metrics, OutputMetrics, OutputState};
use syslog_sink::output::syslog::client_config;
use syslog_sink::server::{Server, Stopped};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "k8s-events";
/// Messages in the PKS sample.
const N: usize = 2000;

/// The tansu binary: `SYSLOG_SINK_TANSU`, else `target/interop/tansu/bin/tansu`. Panics (the
/// test fails) when it is missing.
fn tansu() -> PathBuf {
    let p = std::env::var_os("SYSLOG_SINK_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/interop/tansu/bin/tansu"
            ))
        });
    assert!(
        p.is_file(),
        "the Kafka broker for these tests is missing: {} does not exist. Install it with \
         `cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root \
         target/interop/tansu` \
         (.ci/run does), or point SYSLOG_SINK_TANSU at a tansu binary",
        p.display()
    );
    p
}

/// A tansu broker on 127.0.0.1:`port`, in-memory storage (its data is gone when it stops).
struct Broker {
    bin: PathBuf,
    port: u16,
    /// More command-line arguments (`--authentication`).
    args: Vec<String>,
    /// `--storage-engine`: `memory://tansu/` unless a test sets a SQLite file (relative to
    /// `log`, the broker's folder).
    storage: String,
    /// The address it names in its metadata when not its own (a TLS proxy in front of it).
    advertised: Option<String>,
    /// What a client needs to reach it (TLS, SASL).
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslConfig>,
    child: Option<Child>,
    log: tempfile::TempDir,
    starts: usize,
}

impl Broker {
    fn new(port: u16) -> Broker {
        Broker {
            bin: tansu(),
            port,
            args: Vec::new(),
            storage: "memory://tansu/".into(),
            advertised: None,
            tls: None,
            sasl: None,
            child: None,
            log: tempfile::tempdir().expect("tempdir"),
            starts: 0,
        }
    }

    /// The address clients use: the advertised one.
    fn addr(&self) -> String {
        self.advertised
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port))
    }

    /// A client of this broker, with the TLS and SASL it needs.
    fn client(&self) -> ClientBuilder {
        let mut b = ClientBuilder::new(vec![self.addr()]);
        if let Some(t) = &self.tls {
            b = b.tls_config(Arc::clone(t));
        }
        if let Some(s) = &self.sasl {
            b = b.sasl_config(s.clone());
        }
        b
    }

    /// Starts it and waits (at most 20 s) until it answers a metadata request.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log.path().join(format!("tansu-{}.log", self.starts)))
            .expect("log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.addr());
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &self.storage, "--silent"])
            .args(&self.args)
            // A SQLite store's path is taken relative to the working folder.
            .current_dir(self.log.path())
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ok = tokio::time::timeout(Duration::from_secs(2), self.client().build()).await;
            if matches!(ok, Ok(Ok(_))) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tansu exited at start ({status}): {}", self.logs());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu did not answer within 20 s: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a SCRAM-SHA-512 user through the running broker (`tansu user create`, which
    /// speaks neither TLS nor SASL: the broker must run without `--authentication`).
    fn create_user(&self, name: &str, password: &str) {
        let out = Command::new(&self.bin)
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--mechanism", "scram512", name, password])
            .output()
            .expect("tansu user create");
        assert!(
            out.status.success(),
            "tansu user create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            let p = self.log.path().join(format!("tansu-{i}.log"));
            s.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        s
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message read back from the topic.
#[derive(Debug, Clone)]
struct Msg {
    partition: i32,
    key: Option<Vec<u8>>,
    record: Value,
}

/// Every message of `topic` on `broker`, partition by partition, in offset order.
async fn read_topic(broker: &Broker, topic: &str) -> Result<Vec<Msg>, String> {
    let e = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let client = broker
        .client()
        .build()
        .await
        .map_err(|x| e("connect", &x))?;
    let topics = client.list_topics().await.map_err(|x| e("list", &x))?;
    let Some(t) = topics.into_iter().find(|t| t.name == topic) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for p in t.partitions {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .map_err(|x| e("partition", &x))?;
        let high = pc
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(|x| e("offset", &x))?;
        let mut offset = pc
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|x| e("offset", &x))?;
        while offset < high {
            let (recs, _hw) = pc
                .fetch_records(offset, 1..4_000_000, 500)
                .await
                .map_err(|x| e("fetch", &x))?;
            if recs.is_empty() {
                return Err(format!("no records at offset {offset} below {high}"));
            }
            for r in recs {
                offset = r.offset + 1;
                let value = r.record.value.unwrap_or_default();
                let record = serde_json::from_slice(&value).map_err(|x| {
                    format!(
                        "not JSON at {p}/{}: {x}: {:?}",
                        r.offset,
                        String::from_utf8_lossy(&value)
                    )
                })?;
                out.push(Msg {
                    partition: p,
                    key: r.record.key,
                    record,
                });
            }
        }
    }
    Ok(out)
}

/// Polls the topic until it holds at least `n` messages (at most `secs`), returns them.
async fn wait_for(broker: &Broker, n: usize, secs: u64) -> Vec<Msg> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last =
            match tokio::time::timeout(Duration::from_secs(5), read_topic(broker, TOPIC)).await {
                Ok(Ok(msgs)) if msgs.len() >= n => return msgs,
                Ok(Ok(msgs)) => format!("{} messages", msgs.len()),
                Ok(Err(e)) => e,
                Err(_) => "read timed out".into(),
            };
        assert!(
            tokio::time::Instant::now() < deadline,
            "topic did not reach {n} messages within {secs} s (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `cond` until true (at most 20 s).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// syslog-sink with one listener and one `kafka` output (plus `extra` lines in it).
struct Sink {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    token: CancellationToken,
    handle: JoinHandle<Stopped>,
    /// Holds the output's disk buffer (on by default for a network output).
    _data: tempfile::TempDir,
}

impl Sink {
    async fn start(broker: &str, extra: &str) -> Sink {
        // Failures show within 2 s unless the test sets its own timeout.
        let timeout = if extra.contains("request_timeout_ms") {
            ""
        } else {
            "request_timeout_ms = 2000\n"
        };
        let data = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[server]\nsummary_interval_secs = 0\nshutdown_grace_secs = 20\ndata_dir = {:?}\n\
             [[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[output]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = [\"{broker}\"]\n\
             topic = \"{TOPIC}\"\nflush_interval_ms = 50\n{timeout}{extra}\n",
            data.path().display().to_string()
        );
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        let server = Server::start(&config).await.expect("server start");
        let addr = server.local_addrs()[0];
        let token = server.shutdown_token();
        let metrics = server.metrics();
        let handle = tokio::spawn(server.run(Duration::from_secs(20)));
        Sink {
            addr,
            metrics,
            token,
            handle,
            _data: data,
        }
    }

    fn out(&self) -> &OutputMetrics {
        &self.metrics.outputs[0]
    }

    /// Sends the PKS sample and waits until the broker acknowledged every record.
    async fn deliver_sample(&self) {
        join(self.send(sample())).await;
        until("every record is acknowledged", || {
            self.out().records.load(Relaxed) == N as u64
        })
        .await;
    }

    /// Sends the PKS sample in a task, waits until the output has failed at least twice
    /// (`what` says why it cannot deliver) and checks that nothing was acknowledged; returns
    /// the sender, which may be held by backpressure.
    async fn send_refused(&self, what: &str) -> JoinHandle<()> {
        let sender = self.send(sample());
        until(what, || self.out().errors.load(Relaxed) >= 2).await;
        assert_eq!(self.out().records.load(Relaxed), 0, "{what}");
        sender
    }

    /// Sends `data` on one connection in a task (it may wait on backpressure).
    fn send(&self, data: Vec<u8>) -> JoinHandle<()> {
        let addr = self.addr;
        tokio::spawn(async move { common::send(addr, &data, || 64 * 1024).await })
    }

    async fn stop(self) {
        self.token.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task");
        assert_eq!(stopped, Stopped::Clean);
    }
}

fn records(msgs: &[Msg]) -> Vec<Value> {
    msgs.iter().map(|m| m.record.clone()).collect()
}

fn sample() -> Vec<u8> {
    std::fs::read(PKS_OCTET).expect("PKS sample")
}

async fn join(h: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(30), h)
        .await
        .expect("sender done within 30 s")
        .expect("sender task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_sample_is_delivered_exactly() {
    let mut broker = Broker::new(free_port());
    broker.start().await;
    let sink = Sink::start(&broker.addr(), "").await;
    sink.deliver_sample().await;
    let msgs = wait_for(&broker, N, 20).await;
    check_pks_records(&records(&msgs));
    assert_eq!(sink.out().errors.load(Relaxed), 0);
    assert!(
        msgs.iter().all(|m| m.key.is_none()),
        "no key configured, none sent"
    );
    let used: BTreeSet<i32> = msgs.iter().map(|m| m.partition).collect();
    assert_eq!(
        used.len(),
        3,
        "round robin over the 3 partitions it created"
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_then_started_loses_nothing() {
    let mut broker = Broker::new(free_port());
    let sink = Sink::start(&broker.addr(), "").await;
    // The startup probe finds the broker down before any record is sent.
    until("the output is retrying before any record", || {
        sink.out().state() == OutputState::Retrying && sink.out().errors.load(Relaxed) >= 1
    })
    .await;
    let sender = sink
        .send_refused("the output has failed to reach the broker")
        .await;
    broker.start().await;
    join(sender).await;
    until("every record is acknowledged", || {
        sink.out().records.load(Relaxed) == N as u64
    })
    .await;
    check_pks_records(&records(&wait_for(&broker, N, 20).await));
    assert_eq!(sink.out().state(), OutputState::Up);
    sink.stop().await;
}

/// The broker is SIGKILLed and restarted mid-stream. With tansu's in-memory storage the
/// restarted broker has lost everything, so the test kills it at a point where the first half is acknowledged and
/// read back, then sends the second half while it is down: the two reads together must be the
/// sample exactly (nothing lost, nothing twice), with the topic created again on reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_loses_nothing() {
    let data = sample();
    let ends = octet_frame_ends(&data);
    let half = ends[N / 2 - 1];
    let mut broker = Broker::new(free_port());
    broker.start().await;
    let sink = Sink::start(&broker.addr(), "").await;
    join(sink.send(data[..half].to_vec())).await;
    until("the first half is acknowledged", || {
        sink.out().records.load(Relaxed) == (N / 2) as u64
    })
    .await;
    let first = wait_for(&broker, N / 2, 20).await;
    assert_eq!(first.len(), N / 2);

    broker.kill();
    let sender = sink.send(data[half..].to_vec());
    until("the output has noticed the broker is gone", || {
        sink.out().errors.load(Relaxed) >= 2
    })
    .await;
    broker.start().await;
    join(sender).await;
    until("the second half is acknowledged", || {
        sink.out().records.load(Relaxed) == N as u64
    })
    .await;
    let second = wait_for(&broker, N / 2, 20).await;
    let mut all = records(&first);
    all.extend(records(&second));
    check_pks_records(&all);
    assert!(
        sink.out().reconnects.load(Relaxed) >= 1,
        "counted the reconnect"
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_keeps_a_namespace_in_one_partition_in_order() {
    let mut broker = Broker::new(free_port());
    broker.start().await;
    let sink = Sink::start(
        &broker.addr(),
        "key = \"k8s.namespace\"\ntopic_partitions = 4\nbatch_max_records = 7\n",
    )
    .await;
    join(sink.send(sample())).await;
    let msgs = wait_for(&broker, N, 20).await;
    check_pks_records(&records(&msgs));
    // namespace -> (partitions it was found in, its seqs in offset order)
    let mut seen: BTreeMap<String, (BTreeSet<i32>, Vec<usize>)> = BTreeMap::new();
    let mut keyless = 0;
    for m in &msgs {
        let ns = m.record["k8s"]["namespace"].as_str().map(str::to_string);
        assert_eq!(
            m.key.as_deref(),
            ns.as_deref().map(str::as_bytes),
            "the key is the record's namespace: {}",
            m.record
        );
        let Some(ns) = ns else {
            keyless += 1;
            continue;
        };
        let want = (syslog_sink::output::kafka::murmur2(ns.as_bytes()) & 0x7fff_ffff) % 4;
        assert_eq!(m.partition as u32, want, "partition of namespace {ns:?}");
        let e = seen.entry(ns).or_default();
        e.0.insert(m.partition);
        e.1.push(seq_of(&m.record).expect("seq"));
    }
    assert!(keyless > 0, "the sample has records without a namespace");
    assert!(seen.len() >= 10, "the sample has many namespaces");
    let used: BTreeSet<i32> = seen.values().flat_map(|v| v.0.iter().copied()).collect();
    assert!(
        used.len() >= 3,
        "namespaces spread over partitions: {used:?}"
    );
    for (ns, (parts, seqs)) in &seen {
        assert_eq!(parts.len(), 1, "namespace {ns:?} in one partition");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "namespace {ns:?} in the order sent"
        );
    }
    sink.stop().await;
}

/// Sends SIGSTOP or SIGCONT to the broker.
fn signal(broker: &Broker, sig: &str) {
    let pid = broker.child.as_ref().expect("running").id().to_string();
    let ok = Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

/// The broker freezes (SIGSTOP: connections stay open, nothing answers) while the second half
/// is sent, then thaws: the produce requests time out, the output reconnects and sends them
/// again. Every record is in the topic (the thawed broker also stores the requests it had
/// read before: those are duplicates, allowed and counted as `retries`), each acknowledged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_frozen_mid_stream_loses_nothing() {
    let data = sample();
    let ends = octet_frame_ends(&data);
    let half = ends[N / 2 - 1];
    let mut broker = Broker::new(free_port());
    broker.start().await;
    let sink = Sink::start(&broker.addr(), "request_timeout_ms = 500\n").await;
    join(sink.send(data[..half].to_vec())).await;
    until("the first half is acknowledged", || {
        sink.out().records.load(Relaxed) == (N / 2) as u64
    })
    .await;
    signal(&broker, "-STOP");
    let sender = sink.send(data[half..].to_vec());
    until("a request has timed out", || {
        sink.out().errors.load(Relaxed) >= 1
    })
    .await;
    signal(&broker, "-CONT");
    join(sender).await;
    until("every record is acknowledged", || {
        sink.out().records.load(Relaxed) == N as u64
    })
    .await;
    let msgs = wait_for(&broker, N, 20).await;
    let mut once = Vec::new();
    let mut seen = BTreeSet::new();
    for m in &msgs {
        let seq = seq_of(&m.record).expect("seq");
        if seen.insert(seq) {
            once.push(m.record.clone());
        } else {
            assert!(
                seq > N / 2,
                "only the second half can arrive twice (seq {seq})"
            );
        }
    }
    check_pks_records(&once);
    let dups = msgs.len() - N;
    eprintln!(
        "frozen broker: {dups} duplicates, retries={} errors={} reconnects={}",
        sink.out().retries.load(Relaxed),
        sink.out().errors.load(Relaxed),
        sink.out().reconnects.load(Relaxed)
    );
    assert!(
        dups as u64 <= sink.out().retries.load(Relaxed),
        "{dups} duplicates, more than the {} records sent again",
        sink.out().retries.load(Relaxed)
    );
    sink.stop().await;
}

/// The broker answers with an error (the topic does not exist, `create_topic = false`): the
/// output holds every record, counts the failed attempts and says so in its state; once the
/// topic is created (by the test) everything is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_is_an_error_until_it_exists_then_nothing_is_lost() {
    let mut broker = Broker::new(free_port());
    broker.start().await;
    let sink = Sink::start(&broker.addr(), "create_topic = false\n").await;
    let sender = sink
        .send_refused("the output has failed on the missing topic")
        .await;
    let failed = sink.out().last_error().map(|(e, _)| e).unwrap_or_default();
    assert!(
        failed.contains("does not exist") && failed.contains("create_topic = false"),
        "{failed:?}"
    );
    assert!(
        read_topic(&broker, TOPIC).await.expect("read").is_empty(),
        "nothing produced while the topic is missing"
    );
    let client = broker.client().build().await.expect("admin client");
    client
        .controller_client()
        .expect("controller")
        .create_topic(TOPIC, 2, 1, 5_000)
        .await
        .expect("create the topic");
    join(sender).await;
    until("every record is acknowledged", || {
        sink.out().records.load(Relaxed) == N as u64
    })
    .await;
    let msgs = wait_for(&broker, N, 20).await;
    check_pks_records(&records(&msgs));
    let used: BTreeSet<i32> = msgs.iter().map(|m| m.partition).collect();
    assert_eq!(used.len(), 2, "the test's 2 partitions, not the output's 3");
    sink.stop().await;
}

/// syslog-sink itself killed with `kill -9` while its disk buffer holds records the broker
/// never got, then restarted: every record is in the topic exactly once. The broker (in-memory
/// storage) is killed after the first half is acknowledged and read back, so the second half
/// can only come from the buffer after the restart, into a broker started anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_the_buffer() {
    let data = sample();
    let half = octet_frame_ends(&data)[N / 2 - 1];
    let mut broker = Broker::new(free_port());
    broker.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bin = sink::Sink::new(
        dir.path(),
        &format!(
            "[[output]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = [\"{}\"]\n\
             topic = \"{TOPIC}\"\nflush_interval_ms = 50\nrequest_timeout_ms = 1000\n",
            broker.addr()
        ),
    );
    let buffer = bin.buffer_dir("kafka");
    bin.start();
    common::send(bin.addr(), &data[..half], || 64 * 1024).await;
    let first = wait_for(&broker, N / 2, 20).await;
    assert_eq!(first.len(), N / 2);
    sink::wait_checkpointed(&buffer, false, Duration::from_secs(15)).await;

    broker.kill();
    common::send(bin.addr(), &data[half..], || 64 * 1024).await;
    let second_half: BTreeSet<usize> = (N / 2 + 1..=N).collect();
    sink::wait_buffered(&buffer, false, &second_half).await;
    bin.signal("-KILL").expect("was running");
    let at_kill = sink::buffered_seqs(&buffer, false);
    assert_eq!(
        at_kill, second_half,
        "the buffer holds exactly the second half"
    );

    broker.start().await;
    bin.start();
    let second = wait_for(&broker, N / 2, 30).await;
    sink::wait_checkpointed(&buffer, false, Duration::from_secs(15)).await;
    bin.stop();
    let mut all = records(&first);
    all.extend(records(&second));
    // Exactly the sample, each record once, as syslog-sink made it.
    check_pks_records(&all);
    let log = bin.log(2);
    assert!(
        log.contains("delivering the records left from the last run"),
        "{log}"
    );
}

// ---------------------------------------------------------------- TLS and SASL

/// A TLS front for the broker, as a TLS-speaking Kafka broker presents itself: on
/// `listener` it completes the TLS handshake with `cert`/`key` (and, with `client_ca`,
/// requires a client certificate issued by it), then relays the connection to the broker's
/// plain port. (tansu 0.6 takes `--cert`/`--key` but serves plain TCP whatever they are, so
/// the handshake is done here, by rustls, in front of it.)
fn tls_front(
    listener: tokio::net::TcpListener,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    broker_port: u16,
) -> JoinHandle<()> {
    let cfg = syslog_sink::config::TlsConfig {
        cert,
        key,
        client_ca,
        allowed_client_names: Vec::new(),
        handshake_timeout_secs: 10,
    };
    let acceptor =
        tokio_rustls::TlsAcceptor::from(syslog_sink::tls::server_config(&cfg).expect("tls"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let Ok(mut plain) =
                    tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    })
}

/// The output's `[output.tls]` lines.
fn tls_lines(ca: &std::path::Path, client: Option<(&PathBuf, &PathBuf)>) -> String {
    let mut s = format!("[output.tls]\nca = {:?}\n", ca.display().to_string());
    if let Some((cert, key)) = client {
        s.push_str(&format!(
            "cert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    s
}

/// Over mutual TLS (the broker verified against the configured CA, the output presenting a
/// client certificate the broker requires) the sample arrives exactly; an output that does not
/// trust the broker's certificate delivers nothing, says why, and keeps every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_broker_is_verified_and_gets_everything_exactly() {
    let files = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = common::pki::pki(files.path(), "broker", &["127.0.0.1"], true);
    let (client_ca, client_cert, client_key) =
        common::pki::pki(files.path(), "sink", &["sink.test"], false);
    let (other_ca, _, _) = common::pki::pki(files.path(), "other", &["127.0.0.1"], true);
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut broker = Broker::new(free_port());
    broker.advertised = Some(front.local_addr().expect("addr").to_string());
    let front = tls_front(front, cert, key, Some(client_ca), broker.port);
    let reader_tls = ForwardTlsConfig {
        ca: ca.clone(),
        server_name: None,
        cert: Some(client_cert.clone()),
        key: Some(client_key.clone()),
    };
    broker.tls = Some(client_config(&reader_tls).expect("reader tls"));
    broker.start().await;

    // Not trusted: the handshake fails, nothing is produced, the records are held.
    // A refusal is reported as such, not as a timeout, also on a loaded machine.
    let untrusting = Sink::start(
        &broker.addr(),
        &format!(
            "request_timeout_ms = 5000\n{}",
            tls_lines(&other_ca, Some((&client_cert, &client_key)))
        ),
    )
    .await;
    let held = untrusting
        .send_refused("the untrusting output has failed twice")
        .await;
    let why = untrusting
        .out()
        .last_error()
        .map(|(e, _)| e)
        .unwrap_or_default();
    assert!(why.to_lowercase().contains("certificate"), "{why:?}");
    assert!(read_topic(&broker, TOPIC).await.expect("read").is_empty());

    // Without a client certificate the broker's side refuses the handshake.
    let anonymous = Sink::start(&broker.addr(), &tls_lines(&ca, None)).await;
    let anonymous_sender = anonymous
        .send_refused("the output without a client certificate has failed twice")
        .await;
    assert!(read_topic(&broker, TOPIC).await.expect("read").is_empty());

    let sink = Sink::start(
        &broker.addr(),
        &tls_lines(&ca, Some((&client_cert, &client_key))),
    )
    .await;
    sink.deliver_sample().await;
    check_pks_records(&records(&wait_for(&broker, N, 20).await));
    assert_eq!(untrusting.out().records.load(Relaxed), 0);
    assert_eq!(anonymous.out().records.load(Relaxed), 0);
    sink.stop().await;
    // The two that could not deliver still hold the sample; they end with the test's runtime.
    held.abort();
    anonymous_sender.abort();
    front.abort();
}

/// A broker that requires SASL (SCRAM-SHA-512; tansu offers no PLAIN) refuses an output
/// without `[output.sasl]` and one with a wrong password (nothing produced, the records held,
/// the refusal as the last error), and takes everything, exactly, from one that logs in. The
/// users are made before `--authentication` is on, in a SQLite store the broker keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_is_required_by_the_broker_and_the_output_logs_in() {
    let mut broker = Broker::new(free_port());
    // In the broker's own folder, kept across its restarts.
    broker.storage = "sqlite://tansu.db".into();
    broker.start().await;
    broker.create_user("reader", "reader-secret");
    broker.create_user("syslog-sink", "s3cret");
    broker.kill();
    broker.args = vec!["--authentication".into()];
    broker.sasl = Some(SaslConfig::ScramSha512(Credentials::new(
        "reader".into(),
        "reader-secret".into(),
    )));
    broker.start().await;

    let sasl = |password: &str| {
        format!(
            "[output.sasl]\nmechanism = \"scram-sha-512\"\nusername = \"syslog-sink\"\n\
             password = \"{password}\"\n"
        )
    };
    // A login refused is reported as such, not as a timeout, also on a loaded machine.
    let slow = "request_timeout_ms = 5000\n";
    let anonymous = Sink::start(&broker.addr(), slow).await;
    let wrong = Sink::start(&broker.addr(), &format!("{slow}{}", sasl("not-it"))).await;
    let held = [
        anonymous
            .send_refused("the output without SASL has failed twice")
            .await,
        wrong
            .send_refused("the output with a wrong password has failed twice")
            .await,
    ];
    let why = wrong.out().last_error().map(|(e, _)| e).unwrap_or_default();
    assert!(why.to_lowercase().contains("sasl"), "{why:?}");
    assert!(read_topic(&broker, TOPIC).await.expect("read").is_empty());

    let sink = Sink::start(&broker.addr(), &sasl("s3cret")).await;
    sink.deliver_sample().await;
    check_pks_records(&records(&wait_for(&broker, N, 20).await));
    assert_eq!(anonymous.out().records.load(Relaxed), 0);
    assert_eq!(wrong.out().records.load(Relaxed), 0);
    sink.stop().await;
    // The refused ones still hold the sample; they end with the test's runtime.
    for h in held {
        h.abort();
    }
}

// ---------------------------------------------------------------- compression

/// A plain relay in front of the broker on `listener` that counts the bytes clients send
/// through it into `sent`.
fn counting_relay(
    listener: tokio::net::TcpListener,
    broker_port: u16,
    sent: Arc<AtomicU64>,
) -> JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
                else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_broker, mut to_broker) = broker.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        sent.fetch_add(n as u64, Relaxed);
                        if to_broker.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_broker.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    })
}

/// Each codec delivers the sample exactly, and compresses it on the wire: the bytes the output
/// sends (counted by a relay in front of the broker) are well under those of `none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_delivers_exactly_and_sends_fewer_bytes() {
    let mut sent_by = BTreeMap::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut broker = Broker::new(free_port());
        broker.advertised = Some(relay.local_addr().expect("addr").to_string());
        let sent = Arc::new(AtomicU64::new(0));
        let relay = counting_relay(relay, broker.port, Arc::clone(&sent));
        broker.start().await;
        let sink = Sink::start(&broker.addr(), &format!("compression = \"{codec}\"\n")).await;
        sink.deliver_sample().await;
        let output_sent = sent.load(Relaxed);
        check_pks_records(&records(&wait_for(&broker, N, 20).await));
        sink.stop().await;
        relay.abort();
        sent_by.insert(codec, output_sent);
    }
    let plain = sent_by["none"];
    assert!(
        plain > 1_000_000,
        "the sample's JSON is over 1 MB: {sent_by:?}"
    );
    for (codec, bytes) in &sent_by {
        if *codec != "none" {
            assert!(
                *bytes * 2 < plain,
                "{codec} sent {bytes} bytes, not under half of none's {plain}: {sent_by:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- shutdown

/// A "broker" that accepts connections and never answers (a black hole): the output's startup
/// probe waits on it, but a shutdown does not wait out the long request timeout; with no record
/// held the server stops cleanly within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_does_not_hold_up_shutdown() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let sink = Sink::start(&addr, "request_timeout_ms = 120000\n").await;
    // Let the probe reach the silent listener and wait on it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = std::time::Instant::now();
    sink.stop().await;
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        t0.elapsed()
    );
    hole.abort();
}
