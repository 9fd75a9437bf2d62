//! Output throughput with and without the disk buffer: `cargo bench --bench buffer`.
//!
//! The PKS sample (2,000 messages) repeated `BUFFER_BENCH_MESSAGES / 2000` times (default
//! 200,000 messages) is sent on one loopback connection into a server in this process with one
//! output, each against its local receiver:
//!
//! - `file`: a temporary file;
//! - `syslog` (passthrough, `confirm_after_ms = 100`): a receiver in this process that counts
//!   frames;
//! - `http` (`encoding = "json"`, the defaults otherwise): hyper's HTTP/1.1 server in this
//!   process that reads every body and answers 200 (`benches/support/http_receiver.rs`);
//! - `nats` (the defaults: `max_inflight = 1024`): the nats-server at `NATS_URL` (default
//!   `nats://127.0.0.1:4222`, JetStream, file storage), a stream of its own per round, deleted
//!   after it; skipped when no server answers.
//!
//! Each output runs without a buffer, with `[output.buffer]` (defaults: 1 GiB, fsync every
//! second), and with a buffer that is never synced during the round (`fsync_interval_ms =
//! 3600000`: the cost of the log itself, without the disk's write speed), in
//! `BUFFER_BENCH_ROUNDS` interleaved rounds (default 3). `BUFFER_BENCH_OUTPUTS` picks outputs
//! (default `file,syslog,http,nats`). A round ends when the output has written every record
//! (file), the receiver has counted every message (syslog), or the output has counted every
//! record accepted (http: a 2xx answer) or acknowledged (nats: JetStream's `PubAck`), at most
//! 60 s. Prints msgs/s per round, the medians, and buffered/unbuffered.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use syslog_sink::config::Config;
use syslog_sink::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/http_receiver.rs"]
mod http_receiver;

const PKS_OCTET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pks-sink-2k.octet");
const LIMIT: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts octet-counted frames arriving on any connection.
async fn receiver(listener: TcpListener, frames: Arc<AtomicU64>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let frames = frames.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1 << 20);
            let mut chunk = vec![0u8; 256 << 10];
            loop {
                let n = match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut pos = 0;
                let mut count = 0;
                while let Some(sp) = buf[pos..].iter().take(12).position(|&b| b == b' ') {
                    let len: usize = std::str::from_utf8(&buf[pos..pos + sp])
                        .ok()
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(usize::MAX);
                    let end = (pos + sp + 1).saturating_add(len);
                    if end > buf.len() {
                        break;
                    }
                    pos = end;
                    count += 1;
                }
                buf.drain(..pos);
                frames.fetch_add(count, Relaxed);
            }
        });
    }
}

/// An output measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Syslog,
    Http,
    Nats,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s.trim() {
            "file" => Some(Kind::File),
            "syslog" => Some(Kind::Syslog),
            "http" => Some(Kind::Http),
            "nats" => Some(Kind::Nats),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Syslog => "syslog",
            Kind::Http => "http",
            Kind::Nats => "nats",
        }
    }
}

/// Whether a NATS server answers at `url` (within 5 s).
async fn nats_up(url: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url)).await,
        Ok(Ok(_))
    )
}

/// Deletes JetStream stream `name` (best effort, at most 10 s).
async fn delete_stream(url: &str, name: &str) {
    let work = async {
        if let Ok(c) = async_nats::connect(url).await {
            let _ = async_nats::jetstream::new(c).delete_stream(name).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
}

/// One round: returns messages per second.
async fn round(data: &[u8], n: u64, kind: Kind, variant: usize, dir: &Path, nats: &str) -> f64 {
    let buffer = VARIANTS[variant].1;
    let frames = Arc::new(AtomicU64::new(0));
    let mut rx_task = None;
    let mut stream = None;
    let output = match kind {
        Kind::Syslog => {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            rx_task = Some(tokio::spawn(receiver(listener, frames.clone())));
            format!(
                "[[output]]\nname = \"out\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n\
                 passthrough = true\nconfirm_after_ms = 100\n{buffer}\n",
            )
        }
        Kind::File => format!(
            "[[output]]\nname = \"out\"\ntype = \"file\"\npath = {:?}\n{buffer}\n",
            dir.join("out.jsonl").display().to_string(),
        ),
        Kind::Http => {
            let (addr, _, task) = http_receiver::receiver(false).await;
            rx_task = Some(task);
            format!(
                "[[output]]\nname = \"out\"\ntype = \"http\"\nurl = \"http://{addr}/\"\n{buffer}\n"
            )
        }
        Kind::Nats => {
            let tag = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let name = format!("BUFBENCH_{tag:x}");
            let text = format!(
                "[[output]]\nname = \"out\"\ntype = \"nats\"\nurl = {nats:?}\nstream = {name:?}\n\
                 subject = \"bb{tag:x}.events.{{category}}.{{namespace}}\"\n{buffer}\n"
            );
            stream = Some(name);
            text
        }
    };
    let text = format!(
        "[server]\nsummary_interval_secs = 0\ndata_dir = {:?}\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n{output}",
        dir.join("data").display().to_string()
    );
    let config = Config::from_toml(&text).expect("config");
    let server = Server::start(&config).await.expect("start");
    let addr = server.local_addrs()[0];
    let metrics = server.metrics();
    let token = server.shutdown_token();
    let run = tokio::spawn(server.run(Duration::from_secs(30)));
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(data).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let done = || match kind {
        Kind::Syslog => frames.load(Relaxed) >= n,
        _ => metrics.outputs[0].records.load(Relaxed) >= n,
    };
    while !done() {
        assert!(started.elapsed() < LIMIT, "round took over {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    token.cancel();
    let _ = tokio::time::timeout(LIMIT, run).await;
    if let Some(t) = rx_task {
        t.abort();
    }
    if let Some(name) = stream {
        delete_stream(nats, &name).await;
    }
    rate
}

/// Name and `[[output]]` lines of each variant.
const VARIANTS: [(&str, &str); 3] = [
    ("no buffer", "buffer = false"),
    ("buffer", "[output.buffer]"),
    (
        "buffer, no sync",
        "[output.buffer]\nfsync_interval_ms = 3600000",
    ),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let reps = (env_usize("BUFFER_BENCH_MESSAGES", 200_000) / 2000).max(1);
    let rounds = env_usize("BUFFER_BENCH_ROUNDS", 3).max(1);
    let sample = std::fs::read(PKS_OCTET).expect("PKS sample");
    let data: Vec<u8> = sample.repeat(reps);
    let n = (reps * 2000) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{n} messages ({:.1} MB) per round, {rounds} rounds",
        data.len() as f64 / 1e6
    );
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let outputs: Vec<Kind> = std::env::var("BUFFER_BENCH_OUTPUTS")
        .unwrap_or_else(|_| "file,syslog,http,nats".into())
        .split(',')
        .filter_map(Kind::parse)
        .collect();
    for kind in outputs {
        let name = kind.name();
        if kind == Kind::Nats && !rt.block_on(nats_up(&nats)) {
            println!("{name:6} skipped: no NATS server answers at {nats}");
            continue;
        }
        let mut rates = vec![Vec::new(); VARIANTS.len()];
        for r in 0..rounds {
            for (v, rates) in rates.iter_mut().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                let rate = rt.block_on(round(&data, n, kind, v, dir.path(), &nats));
                println!(
                    "{name:6} round {r} {:16} {rate:>10.0} msgs/s",
                    VARIANTS[v].0
                );
                rates.push(rate);
            }
        }
        let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
        for (v, m) in medians.iter().enumerate() {
            println!(
                "{name:6} median {:16} {m:>10.0} msgs/s  ratio to no buffer {:.2}",
                VARIANTS[v].0,
                m / medians[0]
            );
        }
    }
}
