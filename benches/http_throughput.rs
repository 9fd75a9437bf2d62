//! Throughput of the `http` output alone, per encoding, with and without gzip.
//!
//!     cargo bench --bench http_throughput             # 200,000 records per round
//!     HTTP_BENCH_RECORDS=50000 cargo bench --bench http_throughput
//!     HTTP_BENCH_ENCODINGS=splunk_hec,json cargo bench --bench http_throughput   # these, in order
//!
//! The PKS sample's records (made once with `syslog-sink parse`'s code, so no socket or parser
//! in the loop) are cut into batches of 400 records, as one socket read of the server would
//! give, and fed through a bounded queue to the output's own run loop ([`output::run`]), which
//! POSTs them to a receiver in the same process (hyper's HTTP/1.1 server on 127.0.0.1 that
//! reads each body and answers 200, `{"errors":false}` for `_bulk`; it does not decompress).
//! Timed from the first batch until the output counted every record as accepted. A short
//! warm-up round, then three rounds per configuration, the median printed. Every round is bounded (120 s).
//!
//! The output with and without its disk buffer, behind the whole server: `cargo bench --bench
//! buffer` (`BUFFER_BENCH_OUTPUTS=http`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use syslog_sink::cli::{parse_stream, ParseOptions};
use syslog_sink::config::Config;
use syslog_sink::metrics::Metrics;
use syslog_sink::output::{self, http::HttpOutput};
use syslog_sink::route::{Batch, Line};

#[path = "support/http_receiver.rs"]
mod http_receiver;
use http_receiver::receiver;

const ROUNDS: usize = 3;
const ROUND_LIMIT: Duration = Duration::from_secs(120);
const PER_BATCH: usize = 400;

fn main() {
    let n: usize = std::env::var("HTTP_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let lines = sample_lines();
    let batches = make_batches(&lines, n);
    let json_bytes: usize = batches.iter().map(|b| b.json.len()).sum();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "http_throughput: {n} records ({:.1} MB of JSON) per round, batches of {PER_BATCH}, \
         {ROUNDS} rounds each",
        json_bytes as f64 / 1e6
    );
    serde_alternative(&lines);
    let encodings = std::env::var("HTTP_BENCH_ENCODINGS")
        .unwrap_or_else(|_| "json,splunk_hec,elasticsearch_bulk".to_string());
    // A full warm-up round first: without it the first configuration measured runs at a
    // third of its speed (fresh heap pages, thread start-up).
    rt.block_on(round("json", false, &batches, n));
    for encoding in encodings.split(',') {
        for gzip in [false, true] {
            let mut rates = Vec::new();
            let mut wire = 0;
            // One warm-up round, not counted (allocator, connection, caches).
            rt.block_on(round(encoding, gzip, &batches, n.min(20_000)));
            for _ in 0..ROUNDS {
                let (rate, bytes) = rt.block_on(round(encoding, gzip, &batches, n));
                rates.push(rate);
                wire = bytes;
            }
            rates.sort_by(|a, b| a.total_cmp(b));
            let median = rates[rates.len() / 2];
            println!(
                "{encoding:<19} gzip={gzip:<5} {median:>9.0} records/s  {:>6.1} MB/s of records  \
                 body {:>6.1} MB ({:.2} of the JSON)  [rounds: {}]",
                median * json_bytes as f64 / n as f64 / 1e6,
                wire as f64 / 1e6,
                wire as f64 / json_bytes as f64,
                rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// The three fields HEC needs, as serde_json would give them (borrowed where unescaped).
#[derive(serde::Deserialize)]
struct HecFields<'a> {
    #[serde(borrow)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    hostname: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    app_name: Option<std::borrow::Cow<'a, str>>,
}

/// What the output's targeted scan of a line saves: the cost of a serde_json parse of the
/// whole line for the fields an envelope needs (it must walk the nested structured data and
/// the message too). Printed per record, to set beside the output's cost per record.
fn serde_alternative(lines: &[Vec<u8>]) {
    let rounds = 50;
    let t0 = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for l in lines {
            if let Ok(f) = serde_json::from_slice::<HecFields>(std::hint::black_box(l)) {
                found += usize::from(f.timestamp.is_some())
                    + usize::from(f.hostname.is_some())
                    + usize::from(f.app_name.is_some());
            }
        }
    }
    let per = t0.elapsed().as_nanos() as f64 / (rounds * lines.len()) as f64;
    println!(
        "serde_json borrowed parse of timestamp/hostname/app_name: {per:.0} ns/record \
         ({found} fields found; the output scans for them instead)"
    );
}

/// The PKS sample's 2,000 records as JSON lines (with a `received_at` like the server's).
fn sample_lines() -> Vec<Vec<u8>> {
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("PKS sample");
    let opts = ParseOptions {
        framing: syslog_sink::framing::FramingMode::Octet,
        trailer: syslog_sink::framing::Trailer::CrLf,
        format: syslog_sink::parse::Format::Auto,
        max_frame_bytes: 64 << 10,
        frames: false,
    };
    let classifier = syslog_sink::classify::Classifier::builtin();
    let mut out = Vec::new();
    parse_stream(&sample[..], &mut out, &opts, &classifier).expect("parse");
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut line = b"{\"received_at\":\"2026-11-26T10:50:29.123456Z\",".to_vec();
            line.extend_from_slice(&l[1..]);
            line.push(b'\n');
            line
        })
        .collect()
}

/// `n` records in batches of [`PER_BATCH`], every line for output 0.
fn make_batches(lines: &[Vec<u8>], n: usize) -> Vec<Arc<Batch>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let mut json = Vec::new();
        let mut ls = Vec::new();
        for k in i..(i + PER_BATCH).min(n) {
            json.extend_from_slice(&lines[k % lines.len()]);
            ls.push(Line {
                end: json.len() as u32,
                mask: 1,
            });
        }
        i += ls.len();
        out.push(Arc::new(Batch {
            json: Bytes::from(json),
            lines: ls,
            all: 1,
            any: 1,
            frames: Vec::new(),
            budget: None,
        }));
    }
    out
}

/// One round: records/s until the output counted all `n` accepted, and the body bytes sent.
async fn round(encoding: &str, gzip: bool, batches: &[Arc<Batch>], n: usize) -> (f64, u64) {
    let (addr, wire, server) = receiver(encoding == "elasticsearch_bulk").await;
    let token = if encoding == "splunk_hec" {
        "token = \"bench\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[output]]\nname = \"bench\"\ntype = \"http\"\n\
         url = \"http://{addr}/\"\nencoding = \"{encoding}\"\ngzip = {gzip}\n{token}"
    );
    let config = Config::from_toml(&text).expect("config");
    let metrics = Arc::new(Metrics::new(&[], &["bench".to_string()]));
    let out = HttpOutput::new(&config.output[0], 0, metrics.clone()).expect("output");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let run = tokio::spawn(output::run(
        out,
        0,
        rx,
        Duration::from_millis(100),
        metrics.clone(),
    ));
    let t0 = Instant::now();
    let work = async {
        for b in batches {
            tx.send(b.clone()).await.expect("output running");
        }
        while metrics.outputs[0].records.load(Relaxed) < n as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(ROUND_LIMIT, work)
        .await
        .expect("round within the time limit");
    let secs = t0.elapsed().as_secs_f64();
    drop(tx);
    let _ = tokio::time::timeout(ROUND_LIMIT, run).await;
    server.abort();
    (n as f64 / secs, wire.load(Relaxed))
}
