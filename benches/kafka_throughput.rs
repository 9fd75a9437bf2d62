//! Throughput of the `kafka` output into a local tansu broker (in-memory storage).
//!
//!     cargo bench --bench kafka_throughput             # 100,000 messages per round
//!     KAFKA_BENCH_MESSAGES=20000 cargo bench --bench kafka_throughput
//!
//! Starts tansu (`SYSLOG_SINK_TANSU`, else `target/interop/tansu/bin/tansu`, as
//! `tests/kafka.rs`) on a free loopback port, then per round a fresh server in-process (one
//! listener, one `kafka` output to a new topic of 3 partitions, round robin, defaults
//! otherwise), sends the PKS sample (`tests/data/pks-sink-2k.octet`) repeated up to the message
//! count on one connection, and times from connect until the broker has acknowledged every
//! record (the output's `records` counter). Each round runs, one after the other, the output
//! without a disk buffer (`buffer = false`), with its default one (in a temporary `data_dir`,
//! fsync every second), and without a buffer under each `compression` codec (gzip, snappy, lz4,
//! zstd); three rounds; prints each, the medians and each variant's ratio to the first.
//! Broker, server and sender share the machine's cores. Every wait is bounded (120 s per round).

#[path = "support/frames.rs"]
mod frames;
use frames::repeat_frames;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use syslog_sink::config::Config;
use syslog_sink::server::Server;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ROUNDS: usize = 3;
const ROUND_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let n: usize = std::env::var("KAFKA_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bin = std::env::var_os("SYSLOG_SINK_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/interop/tansu/bin/tansu"
            ))
        });
    assert!(bin.is_file(), "tansu missing: {}", bin.display());
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("PKS sample");
    let corpus = repeat_frames(&sample, n);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut broker = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/", "--silent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "kafka_throughput: {n} messages ({:.1} MB) per round, {ROUNDS} rounds, one connection, tansu memory://",
        corpus.len() as f64 / 1e6
    );
    let variants = [
        ("no buffer", "buffer = false"),
        ("disk buffer", "buffer = true"),
        ("gzip", "buffer = false\ncompression = \"gzip\""),
        ("snappy", "buffer = false\ncompression = \"snappy\""),
        ("lz4", "buffer = false\ncompression = \"lz4\""),
        ("zstd", "buffer = false\ncompression = \"zstd\""),
    ];
    let mut rates = vec![Vec::new(); variants.len()];
    for round in 0..ROUNDS {
        for (i, (name, extra)) in variants.iter().enumerate() {
            let topic = format!("bench-{round}-{i}");
            let (secs, rate) = rt.block_on(run_round(port, &topic, extra, &corpus, n));
            println!(
                "round {round} {name:>11}: {secs:.2} s, {rate:.0} messages/s, {:.1} MB/s",
                corpus.len() as f64 / secs / 1e6
            );
            rates[i].push(rate);
        }
    }
    let _ = broker.kill();
    let _ = broker.wait();
    let medians: Vec<f64> = rates
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    for ((name, _), m) in variants.iter().zip(&medians) {
        println!(
            "median {name:>11}: {m:.0} messages/s, {:.2} x no buffer",
            m / medians[0]
        );
    }
}

async fn run_round(port: u16, topic: &str, extra: &str, corpus: &[u8], n: usize) -> (f64, f64) {
    let data = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[server]\nsummary_interval_secs = 0\ndata_dir = {:?}\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[output]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = [\"127.0.0.1:{port}\"]\n\
         topic = \"{topic}\"\nrequest_timeout_ms = 10000\n{extra}\n",
        data.path().display().to_string()
    );
    let config = Config::from_toml(&text).expect("config");
    // The broker may still be starting in round 0: the output retries until it answers.
    let server = Server::start(&config).await.expect("server");
    let addr = server.local_addrs()[0];
    let token = server.shutdown_token();
    let metrics = server.metrics();
    let handle = tokio::spawn(server.run(Duration::from_secs(30)));
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for c in corpus.chunks(64 * 1024) {
        s.write_all(c).await.expect("write");
    }
    s.shutdown().await.expect("shutdown");
    while metrics.outputs[0].records.load(Relaxed) < n as u64 {
        assert!(
            t0.elapsed() < ROUND_LIMIT,
            "{topic}: only {} of {n} acknowledged in {ROUND_LIMIT:?}",
            metrics.outputs[0].records.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    (secs, n as f64 / secs)
}
