//! Hostile input over real loopback connections: every test checks what was recorded and that
//! the server still serves a new client afterwards. Bounded in count and time.
//!
//! Covered elsewhere, not repeated here (tests/server.rs): oversize frame, leading-zero MSG-LEN,
//! non-syslog and non-UTF-8 lines, MSG-LEN larger than the data then EOF
//! (`hostile_frames_become_records_and_the_stream_stays_in_sync`); a frame split one byte per
//! packet (`pks_prefix_one_byte_per_write`); `max_connections = 1` refusing and a client that
//! connects and never sends being closed by `idle_timeout_secs`
//! (`connection_limit_refuses_and_idle_timeout_closes`).

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use syslog_sink::framing::FramingMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The records `syslog-sink parse` makes of `data`, without `received_at` and `peer`.
fn offline(data: &[u8], framing: FramingMode, max_frame_bytes: usize) -> Vec<Value> {
    offline_records(data, framing, max_frame_bytes)
        .into_iter()
        .map(strip)
        .collect()
}

/// A record without the keys that depend on time and socket (`received_at`, `peer`).
fn strip(mut v: Value) -> Value {
    let o = v.as_object_mut().expect("record is an object");
    o.remove("received_at");
    o.remove("peer");
    v
}

/// Sends one good frame on a new connection and waits for its record (the `n`th).
async fn assert_still_serves(s: &Running, n: usize) {
    send(s.addr, &oc("<14>1 - h app - - - still serving"), || {
        usize::MAX
    })
    .await;
    let recs = s.wait_for(n).await;
    assert_eq!(recs.len(), n, "records after the hostile client");
    assert_eq!(recs[n - 1]["message"], "still serving");
}

/// How a record came out: `framing:<code>`, `truncated:<reason>`, `parse_error` or the message.
fn shape(r: &Value) -> String {
    let mut s = if let Some(c) = r.get("framing_error") {
        format!("framing:{}", c.as_str().unwrap_or("?"))
    } else if r.get("parse_error").is_some() {
        "parse_error".to_string()
    } else {
        r["message"].as_str().unwrap_or("?").to_string()
    };
    if let Some(t) = r.get("truncation") {
        s.push_str(&format!("+truncated:{}", t.as_str().unwrap_or("?")));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_is_recorded_exactly_as_parse_would() {
    let max = 512;
    let s = start(&format!("max_frame_bytes = {max}"), "", "").await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let data: Vec<u8> = (0..64 * 1024).map(|_| (rng.upto(256) - 1) as u8).collect();
    let want = offline(&data, FramingMode::Auto, max);
    assert!(want.len() > 10, "{} records", want.len());
    send(s.addr, &data, || rng.upto(3000)).await;
    let got: Vec<Value> = s
        .wait_for(want.len())
        .await
        .into_iter()
        .map(strip)
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "server and parse disagree on random bytes");
    assert_still_serves(&s, want.len() + 1).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_msg_len_values() {
    let max = 1000;
    let s = start(&format!("max_frame_bytes = {max}"), "", "").await;
    let good = oc("<14>1 - h app - - - good");
    let with_good = |bad: &[u8]| [bad, &good].concat();
    let mut digits = vec![b'7'; 100 * 1024];
    digits.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "huge MSG-LEN, data, EOF",
            [&b"999999999999 "[..], &[b'x'; 3000]].concat(),
            vec!["parse_error+truncated:frame_too_long"],
        ),
        (
            "zero length",
            with_good(b"0 <14>1 - h app - - - zero\n"),
            vec!["framing:msg_len_zero", "good"],
        ),
        (
            "leading zeros",
            with_good(b"0000000000000000000000000024 <14>1 - h app - - - lz\n"),
            vec!["framing:msg_len_leading_zero", "good"],
        ),
        (
            "100 KiB of digits",
            with_good(&digits),
            vec!["framing:frame_too_long", "good"],
        ),
        (
            "digits then no SP",
            with_good(b"12x<14>1 - h app - - - nosp\n"),
            vec!["framing:msg_len_missing_sp", "good"],
        ),
        (
            "MSG-LEN one short",
            with_good(b"23 <14>1 - h app - - - good\n"),
            // The frame ends one octet early; the leftover `d` and LF form a line of their own.
            vec!["goo", "parse_error", "good"],
        ),
    ];
    let mut total = 0;
    for (name, data, shapes) in cases {
        send(s.addr, &data, || 1500).await;
        total += shapes.len();
        let recs = s.wait_for(total).await;
        assert_eq!(recs.len(), total, "{name}: {recs:#?}");
        let new = &recs[total - shapes.len()..];
        let got: Vec<String> = new.iter().map(shape).collect();
        assert_eq!(got, shapes, "{name}");
        let new: Vec<Value> = new.iter().cloned().map(strip).collect();
        assert_eq!(new, offline(&data, FramingMode::Auto, max), "{name}");
    }
    let recs = s.wait_for(total).await;
    assert_eq!(recs[0]["declared_length"], 999_999_999_999u64);
    assert_eq!(recs[0]["raw"].as_str().map(str::len), Some(max));
    assert_still_serves(&s, total + 1).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_delay_other_clients() {
    let s = start("idle_timeout_secs = 10", "", "").await;
    let slow_frame = oc("<14>1 - h app - - - slow");
    // The slow client sends all but 3 bytes, then one byte per second.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.set_nodelay(true).unwrap();
    let split = slow_frame.len() - 3;
    slow.write_all(&slow_frame[..split]).await.unwrap();
    let tail = slow_frame[split..].to_vec();
    let slow_task = tokio::spawn(async move {
        for b in tail {
            tokio::time::sleep(Duration::from_secs(1)).await;
            slow.write_all(&[b]).await.unwrap();
        }
        slow.shutdown().await.unwrap();
        slow
    });
    // Meanwhile another client's messages each arrive within the bound.
    let mut fast = TcpStream::connect(s.addr).await.unwrap();
    fast.set_nodelay(true).unwrap();
    let mut worst = Duration::ZERO;
    for i in 1..=8 {
        let sent = Instant::now();
        fast.write_all(&oc(&format!("<14>1 - h app - - - fast {i}")))
            .await
            .unwrap();
        let recs = s.wait_for(i).await;
        let latency = sent.elapsed();
        assert_eq!(recs.len(), i, "fast message {i} not recorded");
        assert_eq!(recs[i - 1]["message"], format!("fast {i}"));
        worst = worst.max(latency);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        worst < Duration::from_secs(2),
        "worst latency {worst:?} while a slowloris client was connected"
    );
    drop(fast);
    tokio::time::timeout(Duration::from_secs(10), slow_task)
        .await
        .expect("slow client finishes")
        .unwrap();
    let recs = s.wait_for(9).await;
    assert_eq!(recs.len(), 9);
    assert_eq!(recs[8]["message"], "slow");
    assert!(recs[8].get("truncated").is_none());
    assert_still_serves(&s, 10).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_past_max_connections() {
    let s = start("max_connections = 8", "", "").await;
    // Eight connections hold every slot (each sends one frame, so it is known to be accepted).
    let mut holders = Vec::new();
    for i in 0..8 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&oc(&format!("<14>1 - h app - - - holder {i}")))
            .await
            .unwrap();
        holders.push(c);
    }
    assert_eq!(s.wait_for(8).await.len(), 8);
    // A flood of 40 more: each is closed by the server at once, nothing recorded.
    let mut flood = Vec::new();
    for _ in 0..40 {
        let addr = s.addr;
        flood.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("refused connection is closed within 5 s")
                .unwrap_or(0)
        }));
    }
    for f in flood {
        assert_eq!(f.await.unwrap(), 0);
    }
    assert_eq!(s.metrics.connections_refused.load(Relaxed), 40);
    assert_eq!(s.metrics.connections_accepted.load(Relaxed), 8);
    // The slots free up and the server serves again.
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metrics.connections_open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.metrics.connections_open(), 0);
    assert_still_serves(&s, 9).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_has_all_its_data_recorded() {
    let s = start("", "", "").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut data = Vec::new();
    for i in 0..50 {
        data.extend_from_slice(format!("<14>1 - h app - - - line {i}\n").as_bytes());
    }
    data.extend_from_slice(b"<14>1 - h app - - - no trailer");
    c.write_all(&data).await.unwrap();
    c.shutdown().await.unwrap();
    // The server reads to EOF, then closes its side; the client's read side stays open till then.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .expect("server closes a half-closed connection after EOF")
        .unwrap();
    assert!(rest.is_empty());
    let recs = s.wait_for(51).await;
    assert_eq!(recs.len(), 51);
    for (i, r) in recs[..50].iter().enumerate() {
        assert_eq!(r["message"], format!("line {i}"));
    }
    assert_eq!(shape(&recs[50]), "no trailer+truncated:eof_without_trailer");
    assert_still_serves(&s, 52).await;
    s.stop().await;
}

/// The PKS octet sample cut into its frames (MSG-LEN SP MSG each).
fn pks_frames() -> Vec<Vec<u8>> {
    let data = std::fs::read(PKS_OCTET).unwrap();
    let mut start = 0;
    octet_frame_ends(&data)
        .into_iter()
        .map(|end| {
            let f = data[start..end].to_vec();
            start = end;
            f
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pks_stream_interleaved_with_garbage_on_one_connection() {
    let frames = pks_frames();
    assert_eq!(frames.len(), 2000);
    for framing in ["octet", "auto"] {
        let s = start(&format!("framing = {framing:?}"), "", "").await;
        let mut rng = Rng(11);
        let mut stream = Vec::new();
        let mut garbage = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            stream.extend_from_slice(f);
            if i % 7 == 3 {
                // Not a digit, not NUL, not `<`: a bad MSG-LEN (octet) or a line that does not
                // parse (auto); it ends at its LF, and the next PKS frame follows.
                let mut g = vec![b"x#\xff!"[rng.upto(4) - 1]];
                g.extend((0..rng.upto(300)).map(|_| match (rng.upto(256) - 1) as u8 {
                    b'\n' | b'\r' => b'?',
                    b => b,
                }));
                stream.extend_from_slice(&g);
                stream.push(b'\n');
                garbage.push(g);
            }
        }
        send(s.addr, &stream, || rng.upto(9000)).await;
        let total = frames.len() + garbage.len();
        let recs = s.wait_for(total).await;
        assert_eq!(recs.len(), total, "{framing}");
        let (bad, good): (Vec<Value>, Vec<Value>) = recs
            .into_iter()
            .partition(|r| r.get("framing_error").is_some() || r.get("parse_error").is_some());
        check_pks_records(&good);
        assert_eq!(bad.len(), garbage.len(), "{framing}");
        use base64::Engine;
        for (r, g) in bad.iter().zip(&garbage) {
            let raw = match r.get("raw_base64") {
                Some(b) => base64::engine::general_purpose::STANDARD
                    .decode(b.as_str().unwrap())
                    .unwrap(),
                None => r["raw"].as_str().unwrap().as_bytes().to_vec(),
            };
            let want = match framing {
                // A bad MSG-LEN keeps its bytes up to and including the LF.
                "octet" => {
                    assert_eq!(r["framing_error"], "msg_len_not_digit");
                    [&g[..], b"\n"].concat()
                }
                _ => {
                    assert!(r["parse_error"].is_string(), "{r}");
                    g.clone()
                }
            };
            assert_eq!(raw, want, "{framing}");
        }
        assert_still_serves(&s, total + 1).await;
        s.stop().await;
    }
}
