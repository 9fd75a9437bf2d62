//! Throughput of the `nats` output against a local nats-server with JetStream.
//!
//!     cargo bench --bench nats_throughput                 # 50,000 records per setting
//!     NATS_BENCH_MESSAGES=20000 NATS_BENCH_INFLIGHT=1,64,1024 NATS_URL=nats://127.0.0.1:4222 \
//!         cargo bench --bench nats_throughput
//!
//! The records are the PKS sample (`tests/data/pks-sink-2k.octet`) as `syslog-sink parse`
//! makes them, repeated up to the count. For each `max_inflight` the output publishes them into
//! a stream of its own (subject `b<n>.events.{category}.{namespace}`, deleted afterwards),
//! handed over in batches of 256 lines as the run loop would, and the time runs until `flush`
//! returned, i.e. until every record has its JetStream acknowledgement. A setting stops early
//! after 30 s (the count then says how many made it). Also prints what building the subject
//! from a record costs. Needs nats-server listening (`.ci/run` starts one on 4222).
//!
//! The output with and without its disk buffer, behind the whole server: `cargo bench --bench
//! buffer` (`BUFFER_BENCH_OUTPUTS=nats`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use syslog_sink::config::Config;
use syslog_sink::metrics::Metrics;
use syslog_sink::output::nats::{NatsOutput, SubjectTemplate};
use syslog_sink::output::Output;

const BATCH: usize = 256;
const LIMIT: Duration = Duration::from_secs(30);

fn main() {
    let n: usize = std::env::var("NATS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let inflight: Vec<usize> = std::env::var("NATS_BENCH_INFLIGHT")
        .unwrap_or_else(|_| "1,16,256,1024".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let records = records(n);
    let bytes: usize = records.iter().map(|b| b.len()).sum();
    println!(
        "nats_throughput: {n} records ({:.1} MB), batches of {BATCH}, {url}",
        bytes as f64 / 1e6
    );
    subject_cost(&records);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for m in inflight {
        rt.block_on(run(&url, m, &records));
    }
}

/// The sample's records as JSON lines, `n` of them, in batches of [`BATCH`] lines.
fn records(n: usize) -> Vec<Bytes> {
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("PKS sample");
    let opts = syslog_sink::cli::ParseOptions {
        framing: syslog_sink::framing::FramingMode::Octet,
        trailer: syslog_sink::framing::Trailer::CrLf,
        format: syslog_sink::parse::Format::Auto,
        max_frame_bytes: 65536,
        frames: false,
    };
    let classifier = syslog_sink::classify::Classifier::builtin();
    let mut out = Vec::new();
    syslog_sink::cli::parse_stream(&sample[..], &mut out, &opts, &classifier).expect("parse");
    let lines: Vec<&[u8]> = out
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.len() > 1)
        .collect();
    let mut batches = Vec::new();
    let mut cur = Vec::new();
    let mut count = 0;
    for l in lines.iter().cycle().take(n) {
        cur.extend_from_slice(l);
        count += 1;
        if count % BATCH == 0 {
            batches.push(Bytes::from(std::mem::take(&mut cur)));
        }
    }
    if !cur.is_empty() {
        batches.push(Bytes::from(cur));
    }
    batches
}

/// What rendering `k8s.events.{category}.{namespace}` costs per record (best of 5 passes over
/// the lines, split beforehand), next to what serde_json alone takes to read those fields.
fn subject_cost(batches: &[Bytes]) {
    let t = SubjectTemplate::parse("k8s.events.{category}.{namespace}").expect("template");
    let lines: Vec<&[u8]> = batches
        .iter()
        .flat_map(|b| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()))
        .collect();
    let best = |f: &mut dyn FnMut(&[u8]) -> usize| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                let mut n = 0;
                for l in &lines {
                    n += f(l);
                }
                std::hint::black_box(n);
                start.elapsed().as_nanos() as f64 / lines.len() as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut s = String::new();
    let scan = best(&mut |l| {
        s.clear();
        t.render(l, &mut s);
        s.len()
    });
    let serde = best(&mut |l| {
        serde_json::from_slice::<SerdeFields<'_>>(l)
            .map(|f| f.k8s.map_or(0, |k| k.category.map_or(0, |c| c.len())))
            .unwrap_or(0)
    });
    println!(
        "subject from record: {scan:.0} ns per record (serde_json for the same fields: \
         {serde:.0} ns; {} records, e.g. {s})",
        lines.len()
    );
}

/// The fields the template needs, read with serde_json (the output does this, then builds the
/// subject).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SerdeFields<'a> {
    #[serde(borrow)]
    hostname: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    k8s: Option<SerdeK8s<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SerdeK8s<'a> {
    #[serde(borrow)]
    category: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<std::borrow::Cow<'a, str>>,
}

async fn run(url: &str, max_inflight: usize, batches: &[Bytes]) {
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let stream = format!("BENCH_{tag:x}");
    let text = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[output]]\nname = \"bus\"\ntype = \"nats\"\n\
         url = {url:?}\nstream = {stream:?}\nsubject = \"b{tag:x}.events.{{category}}.{{namespace}}\"\n\
         max_inflight = {max_inflight}\n"
    );
    let cfg = Config::from_toml(&text).expect("config");
    let metrics = Arc::new(Metrics::new(&[], &["bus".to_string()]));
    let mut out = NatsOutput::new(&cfg.output[0], 0, metrics.clone()).expect("output");
    // Connect and create the stream before the clock starts.
    if let Err(e) = out.flush().await {
        println!("max_inflight {max_inflight}: cannot start: {e}");
        return;
    }
    let start = Instant::now();
    for b in batches {
        if start.elapsed() > LIMIT {
            break;
        }
        if let Err(e) = out.write(b.clone()).await {
            println!("max_inflight {max_inflight}: write failed: {e}");
            return;
        }
    }
    if let Err(e) = tokio::time::timeout(LIMIT, out.flush()).await {
        println!("max_inflight {max_inflight}: flush did not finish: {e}");
    }
    let e = start.elapsed();
    let acked = metrics.outputs[0].records.load(Relaxed);
    let mb = metrics.outputs[0].bytes.load(Relaxed) as f64 / 1e6;
    println!(
        "max_inflight {max_inflight:>5}: {acked} records acknowledged in {:.2} s: {:.0} msgs/s, {:.1} MB/s",
        e.as_secs_f64(),
        acked as f64 / e.as_secs_f64(),
        mb / e.as_secs_f64()
    );
    let _ = out.close().await;
    if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url)).await
    {
        let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
    }
}
