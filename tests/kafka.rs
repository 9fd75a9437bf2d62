//! The `kafka` output against a real Kafka-protocol broker: tansu (crates.io, Apache-2.0),
//! installed by `.ci/run` under `target/interop/tansu` (or wherever `SYSLOG_SINK_TANSU` points),
//! started by each test on a free loopback port with the in-memory storage engine. The PKS
//! sample goes into syslog-sink and out through the `kafka` output; the tests read the topic
//! back with rskafka and check the records by the `seq=` token at the end of every message.
//! Every wait is bounded. A missing broker binary fails the tests (it is not a skip).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::sink::{self, free_port};
use common::{check_pks_records, octet_frame_ends, seq_of, PKS_OCTET};
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use serde_json::Value;
use syslog_sink::config::Config;
use syslog_sink::metrics::{Metrics, OutputMetrics};
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
         `cargo install tansu --locked --features dynostore --root target/interop/tansu` \
         (.ci/run does), or point SYSLOG_SINK_TANSU at a tansu binary",
        p.display()
    );
    p
}

/// A tansu broker on 127.0.0.1:`port`, in-memory storage (its data is gone when it stops).
struct Broker {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log: tempfile::TempDir,
    starts: usize,
}

impl Broker {
    fn new(port: u16) -> Broker {
        Broker {
            bin: tansu(),
            port,
            child: None,
            log: tempfile::tempdir().expect("tempdir"),
            starts: 0,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it and waits (at most 20 s) until it answers a metadata request.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log.path().join(format!("tansu-{}.log", self.starts)))
            .expect("log file");
        let url = format!("tcp://{}", self.addr());
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
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
            let ok = tokio::time::timeout(
                Duration::from_secs(2),
                ClientBuilder::new(vec![self.addr()]).build(),
            )
            .await;
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

/// Every message of `topic` on the broker at `addr`, partition by partition, in offset order.
async fn read_topic(addr: &str, topic: &str) -> Result<Vec<Msg>, String> {
    let e = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let client = ClientBuilder::new(vec![addr.to_string()])
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
async fn wait_for(addr: &str, n: usize, secs: u64) -> Vec<Msg> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(5), read_topic(addr, TOPIC)).await
        {
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
             topic = \"{TOPIC}\"\nflush_interval_ms = 50\n{extra}\n{timeout}",
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
    join(sink.send(sample())).await;
    until("every record is acknowledged", || {
        sink.out().records.load(Relaxed) == N as u64
    })
    .await;
    let msgs = wait_for(&broker.addr(), N, 20).await;
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
    let sender = sink.send(sample());
    until("the output has failed to reach the broker", || {
        sink.out().errors.load(Relaxed) >= 2
    })
    .await;
    assert_eq!(sink.out().records.load(Relaxed), 0);
    broker.start().await;
    join(sender).await;
    until("every record is acknowledged", || {
        sink.out().records.load(Relaxed) == N as u64
    })
    .await;
    check_pks_records(&records(&wait_for(&broker.addr(), N, 20).await));
    sink.stop().await;
}

/// The broker is SIGKILLed and restarted mid-stream. With tansu's in-memory storage (the only
/// engine its `dynostore` build has that needs no outside service) the restarted broker has
/// lost everything, so the test kills it at a point where the first half is acknowledged and
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
    let first = wait_for(&broker.addr(), N / 2, 20).await;
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
    let second = wait_for(&broker.addr(), N / 2, 20).await;
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
    let msgs = wait_for(&broker.addr(), N, 20).await;
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
    let msgs = wait_for(&broker.addr(), N, 20).await;
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
    let sender = sink.send(sample());
    until("the output has failed on the missing topic", || {
        sink.out().errors.load(Relaxed) >= 2
    })
    .await;
    assert_eq!(sink.out().records.load(Relaxed), 0);
    let failed = sink.out().last_error().map(|(e, _)| e).unwrap_or_default();
    assert!(
        failed.contains("does not exist") && failed.contains("create_topic = false"),
        "{failed:?}"
    );
    assert!(
        read_topic(&broker.addr(), TOPIC)
            .await
            .expect("read")
            .is_empty(),
        "nothing produced while the topic is missing"
    );
    let client = ClientBuilder::new(vec![broker.addr()])
        .build()
        .await
        .expect("admin client");
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
    let msgs = wait_for(&broker.addr(), N, 20).await;
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
    let first = wait_for(&broker.addr(), N / 2, 20).await;
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
    let second = wait_for(&broker.addr(), N / 2, 30).await;
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
