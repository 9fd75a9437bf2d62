//! Limits per peer over real loopback connections: `max_connections_per_ip` refuses the next
//! connection, `max_messages_per_sec` slows a sender without losing a message, and one flooding
//! connection does not hold up another's messages. Bounded in count and time.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_refuses_the_next_connection_from_that_ip() {
    let s = start("max_connections_per_ip = 3", "", "").await;
    let mut open = Vec::new();
    for i in 0..3 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&oc(&format!("<14>1 - h app - - - conn {i}")))
            .await
            .unwrap();
        open.push(c);
    }
    assert_eq!(s.wait_for(3).await.len(), 3);
    // The 4th from 127.0.0.1 is closed at once; nothing it sends is read.
    let mut fourth = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("the 4th connection is closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(s.metrics.connections_refused_per_ip.load(Relaxed), 1);
    assert_eq!(s.metrics.connections_refused.load(Relaxed), 0);
    assert!(s
        .metrics
        .summary(0, Duration::from_secs(1))
        .contains("refused_per_ip=1"));
    // One closes: the IP has a slot again.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metrics.connections_open() > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send(s.addr, &oc("<14>1 - h app - - - after"), || usize::MAX).await;
    let recs = s.wait_for(4).await;
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[3]["message"], "after");
    drop(open);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_slows_a_sender_and_loses_nothing() {
    // 500 messages/s with 4 KiB reads: the first 500 pass at once, the next 500 take ~1 s.
    let s = start(
        "max_messages_per_sec = 500\nread_buffer_bytes = 4096",
        "",
        "",
    )
    .await;
    let n = 1000;
    let mut data = Vec::new();
    for i in 0..n {
        data.extend_from_slice(&oc(&format!(
            "<14>1 - h app - - - rate {i:04} {}",
            "p".repeat(60)
        )));
    }
    let started = Instant::now();
    send(s.addr, &data, || usize::MAX).await;
    let recs = s.wait_for(n).await;
    let took = started.elapsed();
    assert_eq!(recs.len(), n);
    for (i, r) in recs.iter().enumerate() {
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("rate {i:04} ")),
            "message {i} out of order or lost"
        );
    }
    assert!(took >= Duration::from_millis(700), "not slowed: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(s.metrics.rate_limit_pauses.load(Relaxed) > 0);
    assert!(s.metrics.rate_limit_paused_ms.load(Relaxed) >= 500);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_connection_does_not_delay_another() {
    // The probe's records also go to a small file of their own, so polling stays cheap.
    let dir = tempfile::tempdir().unwrap();
    let probe_out = dir.path().join("probe.jsonl");
    let more = format!(
        "[[output]]\nname = \"probe\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 20\n\
         filter = {{ app_name_prefix = [\"probe\"] }}\n",
        probe_out.display().to_string()
    );
    let s = start("", "", &more).await;
    let one = std::fs::read(PKS_OCTET).unwrap();
    // The flood: the PKS sample again and again on one connection until the probes are done
    // (at most 20 s or 60 copies).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, flag) = (s.addr, stop.clone());
    let flooder = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut copies = 0;
        while !flag.load(Relaxed) && copies < 60 && started.elapsed() < Duration::from_secs(20) {
            c.write_all(&one).await.unwrap();
            copies += 1;
        }
        c.shutdown().await.unwrap();
        copies
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut probe = TcpStream::connect(s.addr).await.unwrap();
    probe.set_nodelay(true).unwrap();
    let mut worst = Duration::ZERO;
    for i in 1..=10 {
        let sent = Instant::now();
        probe
            .write_all(&oc(&format!("<14>1 - h probe - - - probe {i}")))
            .await
            .unwrap();
        loop {
            if read_records(&probe_out).len() >= i {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "probe {i} not recorded"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worst < Duration::from_secs(2),
        "worst probe latency {worst:?} beside a flood"
    );
    drop(probe);
    assert!(
        !flooder.is_finished(),
        "the flood ended before the probes did"
    );
    stop.store(true, Relaxed);
    let copies = tokio::time::timeout(Duration::from_secs(30), flooder)
        .await
        .expect("flood sent")
        .unwrap();
    println!("worst probe latency {worst:?}; flood: {copies} copies of the PKS sample");
    let total = 2000 * copies + 10;
    let recs = s.wait_for(total).await;
    assert_eq!(recs.len(), total, "every flood and probe record");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_limit_shortens_reads_and_loses_nothing() {
    // The smallest buffer the config allows for 20000-byte frames (the sample's largest is
    // 19998): reads are cut to what fits, every message still arrives whole.
    let s = start(
        "max_frame_bytes = 20000\nmax_buffered_bytes = 20064\nread_buffer_bytes = 16384",
        "",
        "",
    )
    .await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    let mut rng = Rng(5);
    send(s.addr, &data, || rng.upto(40_000)).await;
    s.wait_for(2000).await;
    assert!(s.metrics.buffer_limit_hits.load(Relaxed) > 0);
    check_pks_records(&s.stop().await);
}
