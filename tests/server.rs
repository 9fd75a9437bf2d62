//! End-to-end: a server on an ephemeral loopback port, real TCP connections, the JSON-lines
//! file read back and every record checked.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_octet_stream_in_one_write() {
    let s = start("framing = \"octet\"", "", "").await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    send(s.addr, &data, || usize::MAX).await;
    let recs = s.wait_for(2000).await;
    assert_eq!(recs.len(), 2000);
    let recs = s.stop().await;
    check_pks_records(&recs);
    // The peer is recorded, and every record has the server's receive time.
    assert!(recs[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(recs[0]["received_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_octet_stream_in_random_chunks_auto_framing() {
    let s = start("", "", "").await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    let mut rng = Rng(42);
    send(s.addr, &data, || rng.upto(3000)).await;
    s.wait_for(2000).await;
    let recs = s.stop().await;
    check_pks_records(&recs);
    // Many small reads, handed to the connection's processors in turn: the records still leave
    // in the order they were sent.
    let seqs: Vec<usize> = recs.iter().filter_map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "records of one connection out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_prefix_one_byte_per_write() {
    let s = start("", "", "").await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    // The first 60 messages, one byte per write (each byte boundary is a split point).
    let end = octet_frame_ends(&data)[59];
    send(s.addr, &data[..end], || 1).await;
    let recs = s.stop().await;
    assert_eq!(recs.len(), 60);
    let expect = expected();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(seq_of(r), Some(i + 1));
        assert_eq!(r["app_name"], expect[i]["app_name"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_lf_stream_lf_and_auto_framing() {
    for framing in ["lf", "auto"] {
        let s = start(&format!("framing = {framing:?}"), "", "").await;
        let data = std::fs::read(PKS_LF).unwrap();
        let mut rng = Rng(7);
        send(s.addr, &data, || rng.upto(5000)).await;
        s.wait_for(2000).await;
        check_pks_records(&s.stop().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_connections_at_once() {
    let s = start("", "", "").await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    // Cut the octet stream into 4 parts at frame boundaries, one connection each.
    let ends = octet_frame_ends(&data);
    let bounds = [0, ends[499], ends[999], ends[1499], ends[1999]];
    let mut tasks = Vec::new();
    for w in bounds.windows(2) {
        let part = data[w[0]..w[1]].to_vec();
        let addr = s.addr;
        let seed = w[0] as u64 + 1;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed);
            send(addr, &part, || rng.upto(8000)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    s.wait_for(2000).await;
    assert_eq!(
        s.metrics
            .connections_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    check_pks_records(&s.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_octet_and_lf_frames_on_one_connection() {
    let s = start("", "", "").await;
    let msgs = [
        "<14>1 2024-03-11T08:00:00+00:00 h k8s.event/ns1/pod-a/ - - [kubernetes@47450 namespace_name=\"ns1\" object_name=\"pod-a\" container_name=\"\"] Started container nginx",
        "<13>Nov 26 10:00:00 myhost sshd[42]: Accepted publickey for bob",
        "<14>1 2024-03-11T08:00:01+00:00 h k8s.event/ns2/pod-b/ - - [kubernetes@47450 namespace_name=\"ns2\" object_name=\"pod-b\" container_name=\"\"] Back-off restarting failed container",
        "<14>1 2024-03-11T08:00:02Z h app - - - plain\r",
    ];
    let mut stream = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if i % 2 == 0 {
            stream.extend_from_slice(format!("{} {m}\n", m.len() + 1).as_bytes());
        } else {
            stream.extend_from_slice(m.as_bytes());
            stream.push(b'\n');
        }
    }
    send(s.addr, &stream, || 7).await;
    let recs = s.stop().await;
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert_eq!(recs[0]["k8s"]["category"], "started");
    assert_eq!(recs[0]["k8s"]["namespace"], "ns1");
    assert_eq!(recs[0]["message"], "Started container nginx");
    assert_eq!(recs[1]["version"], Value::Null);
    assert_eq!(recs[1]["hostname"], "myhost");
    assert_eq!(recs[1]["app_name"], "sshd");
    assert_eq!(recs[1]["procid"], "42");
    assert_eq!(recs[1]["message"], "Accepted publickey for bob");
    assert_eq!(recs[2]["k8s"]["category"], "back_off");
    assert_eq!(recs[3]["message"], "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_become_records_and_the_stream_stays_in_sync() {
    let s = start("max_frame_bytes = 1000", "", "").await;
    let good = "<14>1 - h app - - - good";
    let big = format!("<14>1 - h app - - - {}", "x".repeat(5000));
    let mut stream = Vec::new();
    stream.extend_from_slice(format!("{} {big}", big.len()).as_bytes()); // over the limit
    stream.extend_from_slice(format!("{} {good}", good.len()).as_bytes());
    stream.extend_from_slice(b"00012 bad length\n"); // leading zero: framing error, resync at LF
    stream.extend_from_slice(format!("{} {good}", good.len()).as_bytes());
    stream.extend_from_slice(b"not syslog at all\n"); // LF frame that does not parse
    stream.extend_from_slice(b"\xff\xfe garbage \x00\n");
    stream.extend_from_slice(format!("{} {good}", good.len()).as_bytes());
    stream.extend_from_slice(b"500 <14>1 - h app - - - cut by EOF");
    send(s.addr, &stream, || 100).await;
    let recs = s.stop().await;
    let kinds: Vec<String> = recs
        .iter()
        .map(|r| {
            if r.get("framing_error").is_some() {
                format!("framing:{}", r["framing_error"].as_str().unwrap())
            } else if r.get("truncated").is_some() {
                format!("truncated:{}", r["truncation"].as_str().unwrap())
            } else if r.get("parse_error").is_some() {
                "parse_error".to_string()
            } else {
                r["message"].as_str().unwrap().to_string()
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "truncated:frame_too_long",
            "good",
            "framing:msg_len_leading_zero",
            "good",
            "parse_error",
            "parse_error",
            "good",
            "truncated:eof_in_frame"
        ],
        "{recs:#?}"
    );
    assert_eq!(recs[0]["declared_length"], big.len());
    assert_eq!(recs[0]["app_name"], "app", "a truncated frame still parses");
    assert_eq!(recs[4]["raw"], "not syslog at all");
    assert!(recs[5]["raw_base64"].is_string());
    assert_eq!(recs[7]["declared_length"], 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frame_at_shutdown_is_delivered_truncated() {
    let s = start("", "", "").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(&oc("<14>1 - h app - - - whole")).await.unwrap();
    c.write_all(b"100 <14>1 - h app - - - half").await.unwrap();
    s.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recs = s.stop().await;
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0]["message"], "whole");
    assert_eq!(recs[1]["truncated"], true);
    assert_eq!(recs[1]["declared_length"], 100);
    assert_eq!(recs[1]["message"], "half");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_and_idle_timeout_closes() {
    let s = start("max_connections = 1\nidle_timeout_secs = 1", "", "").await;
    let mut first = TcpStream::connect(s.addr).await.unwrap();
    first
        .write_all(&oc("<14>1 - - - - - - first"))
        .await
        .unwrap();
    s.wait_for(1).await;
    // The second connection is accepted and closed at once.
    let mut second = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("refused connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(
        s.metrics
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The first one is closed after 1 s without data.
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf))
        .await
        .expect("idle connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // With the slot free again, a new connection is served.
    send(s.addr, &oc("<14>1 - - - - - - again"), || usize::MAX).await;
    let recs = s.wait_for(2).await;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["message"], "again");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_route_records_to_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let more = format!(
        "[[output]]\nname = \"alerts\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 50\n\
         filter = {{ category = [\"err_image_pull\", \"back_off\"] }}\n",
        alerts.display().to_string()
    );
    let s = start("", "", &more).await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    send(s.addr, &data, || 65536).await;
    s.wait_for(2000).await;
    let all = s.stop().await;
    check_pks_records(&all);
    let failures = read_records(&alerts);
    let expect = expected();
    let want = expect
        .iter()
        .filter(|e| e["category"] == "err_image_pull" || e["category"] == "back_off")
        .count();
    assert_eq!(failures.len(), want);
    assert_eq!(want, 42 + 44);
    for r in &failures {
        let c = r["k8s"]["category"].as_str().unwrap();
        assert!(c == "err_image_pull" || c == "back_off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_message_keeps_exact_bytes() {
    let s = start("", "", "").await;
    let msg = b"<14>1 - h app - - - caf\xe9 \xff end\n";
    let mut frame = format!("{} ", msg.len()).into_bytes();
    frame.extend_from_slice(msg);
    send(s.addr, &frame, || usize::MAX).await;
    let recs = s.stop().await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["message"], "caf\u{fffd} \u{fffd} end");
    use base64::Engine;
    let exact = base64::engine::general_purpose::STANDARD
        .decode(recs[0]["message_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(exact, b"caf\xe9 \xff end");
}

/// A FIFO for a `file` output that nobody reads until `go` is sent; the thread counts the lines
/// it then reads.
struct StalledFifo {
    path: std::path::PathBuf,
    go: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<usize>,
}

fn stalled_fifo(dir: &std::path::Path) -> StalledFifo {
    use std::io::BufRead;
    let path = dir.join("slow.fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    // The reader end: opened now (the server's open of the writer end waits for it), read later.
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let reader_path = path.clone();
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(&reader_path).unwrap();
        go_rx.recv().unwrap();
        std::io::BufReader::new(f).lines().count()
    });
    StalledFifo { path, go, reader }
}

/// `copies` copies of the PKS sample, octet-counted.
fn pks_copies(copies: usize) -> (Vec<u8>, usize) {
    let one = std::fs::read(PKS_OCTET).unwrap();
    let data = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * copies)
        .collect();
    (data, one.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_output_pushes_back_on_the_sender_and_loses_nothing() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let fifo = stalled_fifo(dir.path());
    let more = format!(
        "[[output]]\nname = \"slow\"\ntype = \"file\"\npath = {:?}\nqueue_batches = 1\nflush_interval_ms = 10\n",
        fifo.path.display().to_string()
    );
    let s = start("read_buffer_bytes = 65536", "", &more).await;
    // 40 copies of the sample: ~43 MB, far more than the pipe, queues and socket buffers hold.
    let copies = 40;
    let (data, one) = pks_copies(copies);
    let addr = s.addr;
    let sender = tokio::spawn(async move { send(addr, &data, || 1 << 20).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The sender is stuck: the server stopped reading because the slow output is full.
    assert!(
        !sender.is_finished(),
        "sender should be blocked by backpressure"
    );
    let read = s.metrics.bytes.load(Relaxed);
    assert!(
        read < (one * copies / 2) as u64,
        "server read {read} bytes while its output was stalled"
    );
    // Let the output drain: everything arrives, in both outputs.
    fifo.go.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("sender finishes once the output drains")
        .unwrap();
    let recs = s.wait_for(2000 * copies).await;
    assert_eq!(recs.len(), 2000 * copies);
    s.stop().await;
    assert_eq!(fifo.reader.join().unwrap(), 2000 * copies);
}

/// With a long queue (4,096 batches) nothing but `[server] max_inflight_bytes` stops the reads
/// of 4 connections while the output is stalled: the server holds about the budget, not the
/// 20 MB sent, and every record arrives once the output drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_budget_bounds_what_all_connections_hold() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let fifo = stalled_fifo(dir.path());
    let budget = 1 << 20;
    let more = format!(
        "[[output]]\nname = \"slow\"\ntype = \"file\"\npath = {:?}\nqueue_batches = 4096\nflush_interval_ms = 10\n",
        fifo.path.display().to_string()
    );
    let s = start_with(
        &format!("max_inflight_bytes = {budget}"),
        "read_buffer_bytes = 65536",
        "queue_batches = 4096",
        &more,
    )
    .await;
    let (conns, copies) = (4, 5);
    let mut senders = Vec::new();
    for _ in 0..conns {
        let (data, _) = pks_copies(copies);
        let addr = s.addr;
        senders.push(tokio::spawn(
            async move { send(addr, &data, || 1 << 20).await },
        ));
    }
    // Wait until the reads stop (the budget is spent), at most 10 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = s.metrics.bytes.load(Relaxed);
        if now == last || tokio::time::Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let read = s.metrics.bytes.load(Relaxed);
    // What the budget lets through (a third of it: frames and their JSON), plus per connection
    // what was read before waiting for a share (one read and the buffer), plus what the stalled
    // file output holds outside the budget: its write buffer (1 MiB of JSON) and the pipe.
    let bound = budget / 3 + conns * 2 * 65536 + (1 << 20) + 128 * 1024;
    assert!(
        read <= bound as u64,
        "server read {read} bytes while stalled; the budget allows about {bound}"
    );
    assert!(s.metrics.budget_waits.load(Relaxed) > 0);
    assert!(senders.iter().all(|t| !t.is_finished()));
    fifo.go.send(()).unwrap();
    for t in senders {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("senders finish once the output drains")
            .unwrap();
    }
    let n = 2000 * copies * conns;
    assert_eq!(s.wait_for(n).await.len(), n);
    s.stop().await;
    assert_eq!(fifo.reader.join().unwrap(), n);
}
