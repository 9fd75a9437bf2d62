//! The disk buffer under faults, through the `syslog` output into a receiver run by the test
//! (a loopback listener that reads octet-counted frames and notes, per `seq=` token, the
//! connections each message arrived on): receiver down at start with a small buffer (the
//! senders are pushed back, nothing dropped), receiver killed and restarted mid-stream, the
//! real binary killed with `kill -9` and restarted with a non-empty buffer, and damaged segment
//! files (a flipped byte, a torn tail) detected, reported, counted and skipped. Each test
//! asserts the exact multiset of messages that arrived. Every wait is bounded.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use common::sink::{self, free_port, seq_in, Sink};

/// Message `seq` (1-based), RFC 5424, with some padding so batches differ in size.
fn message(seq: usize) -> String {
    format!(
        "<14>1 2024-03-11T08:00:00Z host-{} app - - - event {} seq={seq:08}",
        seq % 7,
        "x".repeat(seq % 61)
    )
}

/// Messages `range` as one octet-counted stream.
fn stream(range: std::ops::RangeInclusive<usize>) -> Vec<u8> {
    range.flat_map(|i| common::oc(&message(i))).collect()
}

/// Per seq, the receiver connections (numbered from 1) it arrived on.
type Seen = Arc<Mutex<HashMap<usize, Vec<usize>>>>;

/// A syslog receiver on a loopback port: octet-counted frames, stored at once.
struct Receiver {
    port: u16,
    seen: Seen,
    conns: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    fn new(port: u16) -> Receiver {
        Receiver {
            port,
            seen: Arc::default(),
            conns: Arc::default(),
            task: None,
        }
    }

    /// Listens (retrying the bind for up to 5 s while the port is still held).
    async fn start(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "receiver cannot bind: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (seen, conns) = (self.seen.clone(), self.conns.clone());
        self.task = Some(tokio::spawn(async move {
            let mut set = JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                let id = conns.fetch_add(1, Relaxed) + 1;
                set.spawn(read_frames(s, id, seen.clone()));
            }
        }));
    }

    /// Kills it: the listener and every connection close at once (unread bytes are lost).
    async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Times each seq arrived.
    fn counts(&self) -> HashMap<usize, usize> {
        let seen = self.seen.lock().expect("lock");
        seen.iter().map(|(s, c)| (*s, c.len())).collect()
    }

    fn seen(&self) -> HashMap<usize, Vec<usize>> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits (at most `limit`) until every seq of `want` arrived.
    async fn wait_for(&self, want: &BTreeSet<usize>, limit: Duration) -> HashMap<usize, usize> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.counts();
            if want.iter().all(|s| c.contains_key(s)) || Instant::now() > deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn read_frames(mut s: TcpStream, id: usize, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Some(sp) = buf[pos..].iter().position(|&b| b == b' ') {
            let Some(len) = std::str::from_utf8(&buf[pos..pos + sp])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                panic!(
                    "bad frame header at {:?}",
                    &buf[pos..buf.len().min(pos + 40)]
                );
            };
            let start = pos + sp + 1;
            if buf.len() < start + len {
                break;
            }
            let seq = seq_in(&buf[start..start + len]).expect("seq in every message");
            seen.lock().expect("lock").entry(seq).or_default().push(id);
            pos = start + len;
        }
        buf.drain(..pos);
    }
}

/// A `syslog` output section to `port` with `extra` lines (a `[output.buffer]` goes last).
fn fwd(port: u16, extra: &str) -> String {
    format!(
        "[[output]]\nname = \"fwd\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n\
         confirm_after_ms = 200\nmax_backoff_ms = 200\nconnect_timeout_ms = 1000\n\
         flush_interval_ms = 50\n{extra}\n"
    )
}

/// Sends `data` on a new connection, `piece` bytes at a time with `pause` between, counting the
/// bytes written in `progress`.
async fn send_slowly(
    addr: SocketAddr,
    data: Vec<u8>,
    piece: usize,
    pause: Duration,
    progress: Arc<AtomicU64>,
) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for c in data.chunks(piece) {
        s.write_all(c).await.expect("write");
        progress.fetch_add(c.len() as u64, Relaxed);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    s.shutdown().await.expect("shutdown");
}

fn all(range: std::ops::RangeInclusive<usize>) -> BTreeSet<usize> {
    range.collect()
}

/// Asserts each seq of `want` arrived exactly once and nothing else arrived.
fn assert_exactly_once(rx: &Receiver, want: &BTreeSet<usize>) {
    sink::check_arrivals(&rx.counts(), want, &BTreeSet::new());
}

/// Receiver down at start, a 64 KiB buffer: the buffer fills to its bound, the server stops
/// reading the sender (backpressure), nothing is dropped; once the receiver is up every message
/// arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_at_start_fills_the_buffer_then_everything_arrives_once() {
    let n = 15_000;
    let port = free_port();
    let mut rx = Receiver::new(port);
    let max = 64 << 10;
    let s = common::start(
        "read_buffer_bytes = 8192\nmax_buffered_bytes = 73728",
        "queue_batches = 1",
        // A short confirmation delay: 64 KiB per confirmation bounds the throughput here.
        &fwd(
            port,
            &format!("queue_batches = 1\n[output.buffer]\nmax_bytes = {max}\n"),
        )
        .replace("confirm_after_ms = 200", "confirm_after_ms = 30"),
    )
    .await;
    let data = stream(1..=n);
    let total = data.len() as u64;
    let progress = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_slowly(
        s.addr,
        data,
        64 << 10,
        Duration::ZERO,
        progress.clone(),
    ));
    let m = &s.metrics.outputs[1];
    // The buffer fills up to its bound...
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.buffer_bytes.load(Relaxed) < max / 2 {
        assert!(Instant::now() < deadline, "buffer never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and then the server stops reading the sender's socket (TCP backpressure: the
    // kernel's socket buffers hold the rest, then the sender's writes block).
    let mut last = s.metrics.bytes.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = s.metrics.bytes.load(Relaxed);
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never stopped reading"
        );
        last = now;
    }
    assert!(last < total / 2, "the server read {last} of {total} bytes");
    assert!(s.metrics.records.load(Relaxed) < n as u64 / 2);
    // One entry may go past the bound (one socket read's batch).
    let bytes = m.buffer_bytes.load(Relaxed);
    assert!(bytes <= max + (32 << 10), "buffer holds {bytes} bytes");
    assert_eq!(m.records.load(Relaxed), 0);
    rx.start().await;
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("sender finishes once the receiver is up")
        .expect("sender");
    rx.wait_for(&all(1..=n), Duration::from_secs(30)).await;
    let metrics = s.metrics.clone();
    s.stop().await;
    assert_exactly_once(&rx, &all(1..=n));
    let m = &metrics.outputs[1];
    assert_eq!(m.records.load(Relaxed), n as u64);
    assert_eq!(m.buffer_records.load(Relaxed), 0);
    assert_eq!(m.buffer_corrupt.load(Relaxed), 0);
}

/// With the receiver down, the buffer absorbs more than the in-flight budget
/// (`max_inflight_bytes`): batches the stalled output has not taken do not hold the budget, so
/// the server reads the whole stream into the buffer; then every message arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_absorbs_an_outage_larger_than_the_in_flight_budget() {
    let n = 30_000;
    let port = free_port();
    let mut rx = Receiver::new(port);
    // 16 KiB reads take 48 KiB of the 2 MiB budget each: 64 batches (the window) would hold
    // 3 MiB.
    let s = common::start_with(
        "max_inflight_bytes = 2097152",
        "read_buffer_bytes = 16384",
        "",
        &fwd(port, "[output.buffer]\nmax_bytes = 67108864\n"),
    )
    .await;
    let data = stream(1..=n);
    let total = data.len() as u64;
    assert!(total > 2 << 20);
    let progress = Arc::new(AtomicU64::new(0));
    send_slowly(s.addr, data, 64 << 10, Duration::ZERO, progress).await;
    let m = &s.metrics.outputs[1];
    let deadline = Instant::now() + Duration::from_secs(15);
    while m.buffer_records.load(Relaxed) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "the buffer took {} of {n} records (server read {} of {total} bytes)",
            m.buffer_records.load(Relaxed),
            s.metrics.bytes.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.start().await;
    rx.wait_for(&all(1..=n), Duration::from_secs(20)).await;
    s.stop().await;
    assert_exactly_once(&rx, &all(1..=n));
}

/// The receiver is killed (its unread bytes lost) after a third of the stream and comes back
/// 300 ms later: every message arrives, and a message arrives twice only when its first copy
/// came on a connection that was cut (the unconfirmed window resent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_and_restarted_mid_stream_loses_nothing() {
    let n = 6000;
    let port = free_port();
    let mut rx = Receiver::new(port);
    rx.start().await;
    let s = common::start("", "", &fwd(port, "passthrough = true")).await;
    let progress = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_slowly(
        s.addr,
        stream(1..=n),
        8 << 10,
        Duration::from_millis(3),
        progress,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.counts().len() < n / 3 {
        assert!(Instant::now() < deadline, "receiver never got a third");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rx.kill().await;
    let before = rx.counts().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.start().await;
    tokio::time::timeout(Duration::from_secs(20), sender)
        .await
        .expect("sender finishes")
        .expect("sender");
    rx.wait_for(&all(1..=n), Duration::from_secs(20)).await;
    let metrics = s.metrics.clone();
    s.stop().await;
    let seen = rx.seen();
    let last_conn = rx.conns.load(Relaxed);
    let missing: Vec<_> = (1..=n).filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "lost {missing:?}");
    let mut dups = 0;
    for (seq, conns) in &seen {
        assert!(*seq >= 1 && *seq <= n);
        assert!(conns.len() <= 2, "seq {seq} arrived {} times", conns.len());
        if conns.len() == 2 {
            dups += 1;
            assert!(
                conns[0] < last_conn,
                "seq {seq} twice, first on the last connection ({conns:?})"
            );
        }
    }
    let m = &metrics.outputs[1];
    eprintln!(
        "receiver killed after {before} messages: {dups} duplicates, reconnects={}",
        m.reconnects.load(Relaxed)
    );
    assert!(before < n);
    assert!(m.reconnects.load(Relaxed) >= 1);
    assert_eq!(m.buffer_records.load(Relaxed), 0);
}

/// The real binary with a `syslog` output "fwd" to `rx_port` and a buffer with `buffer`.
fn fwd_sink(dir: &Path, rx_port: u16, buffer: &str) -> Sink {
    Sink::new(
        dir,
        &format!("{}[output.buffer]\n{buffer}\n", fwd(rx_port, "")),
    )
}

/// The buffer folder of output "fwd" after its checkpoint: per segment file and entry, seqs.
fn buffered(sink: &Sink) -> Vec<sink::Segment> {
    sink::buffered(&sink.buffer_dir("fwd"), true)
}

/// syslog-sink delivers the first half (confirmed: the checkpoint passes it), then (receiver
/// down) buffers the second half, and is killed with SIGKILL. Restarted with the receiver
/// back, it delivers the buffer: every message arrives exactly once (a duplicate could only
/// come from records confirmed but not yet in the checkpoint at the kill, and there are none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_the_buffer() {
    let n = 4000;
    let half = n / 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let rx_port = free_port();
    let mut rx = Receiver::new(rx_port);
    rx.start().await;
    let mut sink = fwd_sink(dir.path(), rx_port, "max_bytes = 1048576");
    sink.start();
    let p = Arc::new(AtomicU64::new(0));
    send_slowly(
        sink.addr(),
        stream(1..=half),
        16 << 10,
        Duration::ZERO,
        p.clone(),
    )
    .await;
    rx.wait_for(&all(1..=half), Duration::from_secs(15)).await;
    // Confirmed and in the checkpoint: nothing of the first half left after it.
    sink::wait_checkpointed(&sink.buffer_dir("fwd"), true, Duration::from_secs(10)).await;
    rx.kill().await;
    send_slowly(
        sink.addr(),
        stream(half + 1..=n),
        4 << 10,
        Duration::ZERO,
        p,
    )
    .await;
    sink::wait_buffered(&sink.buffer_dir("fwd"), true, &all(half + 1..=n)).await;
    let first_run = rx.conns.load(Relaxed);
    sink.signal("-KILL");
    let left_records = sink::buffered_records(&sink.buffer_dir("fwd"), true);
    rx.start().await;
    sink.start();
    rx.wait_for(&all(1..=n), Duration::from_secs(20)).await;
    sink.stop();
    let seen = rx.seen();
    let missing: Vec<_> = (1..=n).filter(|s| !seen.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "lost {} ({:?}...)",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut dups = 0;
    for (seq, conns) in &seen {
        assert!((1..=n).contains(seq));
        if *seq > half {
            assert_eq!(conns.len(), 1, "seq {seq} (second half) arrived {conns:?}");
            assert!(conns[0] > first_run, "seq {seq} arrived before the restart");
        } else {
            assert!(conns.len() <= 2, "seq {seq} arrived {conns:?}");
            if conns.len() == 2 {
                dups += 1;
                assert!(
                    conns[0] <= first_run && conns[1] > first_run,
                    "{seq}: {conns:?}"
                );
            }
        }
    }
    eprintln!("kill -9 with {left_records} records in the buffer; {dups} first-half duplicates");
    assert_eq!(dups, 0);
    assert!(left_records >= half);
    let log = sink.log(2);
    assert!(
        log.contains("delivering the records left from the last run"),
        "{log}"
    );
    // The restart confirmed everything: nothing left after the checkpoint.
    assert_eq!(sink::buffered_records(&sink.buffer_dir("fwd"), true), 0);
}

/// A buffered run killed with SIGKILL, then two segment files damaged: a byte flipped inside
/// an entry of one (that entry and the rest of the file are lost), the last bytes of the last
/// one cut off (a torn write). The restart delivers every entry before the damage, and the
/// entries of the files after it, exactly once; logs each damage with file and offset; counts
/// them (`buffer_corrupt=2` in the summary line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_are_reported_and_skipped_keeping_what_is_before() {
    let n = 3000;
    let dir = tempfile::tempdir().expect("tempdir");
    let rx_port = free_port();
    let mut rx = Receiver::new(rx_port);
    // 1 MiB: segments of 128 KiB, so about 3 files.
    let mut sink = fwd_sink(dir.path(), rx_port, "max_bytes = 1048576");
    sink.start();
    let p = Arc::new(AtomicU64::new(0));
    send_slowly(
        sink.addr(),
        stream(1..=n),
        2 << 10,
        Duration::from_millis(1),
        p,
    )
    .await;
    sink::wait_buffered(&sink.buffer_dir("fwd"), true, &all(1..=n)).await;
    sink.signal("-KILL");
    let segs: Vec<_> = buffered(&sink)
        .into_iter()
        .filter(|(_, e)| e.len() >= 3)
        .collect();
    assert!(
        segs.len() >= 2,
        "want 2 segment files with entries: {segs:?}"
    );
    // Flip a byte in the middle entry of the second-to-last file.
    let (flip_file, flip_entries) = &segs[segs.len() - 2];
    let k = flip_entries.len() / 2;
    let flip_at = flip_entries[k].0;
    let mut bytes = std::fs::read(flip_file).expect("read segment");
    bytes[flip_at as usize + 30] ^= 0x20;
    std::fs::write(flip_file, &bytes).expect("write segment");
    // Cut 5 bytes off the last file.
    let (torn_file, torn_entries) = &segs[segs.len() - 1];
    let len = std::fs::metadata(torn_file).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(torn_file)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let torn_at = torn_entries[torn_entries.len() - 1].0;
    let mut want = BTreeSet::new();
    let mut lost = BTreeSet::new();
    for (_, seqs) in &flip_entries[k..] {
        lost.extend(seqs.iter().copied());
    }
    lost.extend(torn_entries[torn_entries.len() - 1].1.iter().copied());
    for s in 1..=n {
        if !lost.contains(&s) {
            want.insert(s);
        }
    }
    assert!(!lost.is_empty() && want.len() + lost.len() == n);
    rx.start().await;
    sink.start();
    rx.wait_for(&want, Duration::from_secs(20)).await;
    sink.stop();
    assert_exactly_once(&rx, &want);
    let log = sink.log(2);
    let name = |p: &Path| p.file_name().expect("name").to_string_lossy().into_owned();
    for (file, offset) in [(flip_file, flip_at), (torn_file, torn_at)] {
        let line = log
            .lines()
            .find(|l| l.contains("damaged entry") && l.contains(&name(file)))
            .unwrap_or_else(|| panic!("no damage line for {}: {log}", name(file)));
        assert!(line.contains(&format!("offset={offset}")), "{line}");
    }
    assert!(log.contains("buffer_corrupt=2"), "{log}");
    eprintln!(
        "{} delivered, {} lost in the damaged entries",
        want.len(),
        lost.len()
    );
}

/// The disk fills up under the buffer: the binary runs with a file-size limit (`RLIMIT_FSIZE`
/// 256 KiB, soft) that its first segment file soon reaches, so appends fail (`EFBIG`, the same
/// path as `ENOSPC`; SIGXFSZ is ignored by the server, not fatal). The writer logs the
/// failure, cuts the partial entry and retries while the queue and the listener hold the rest;
/// nothing new reaches the receiver. Once the limit is lifted (`prlimit --pid`) every message
/// arrives exactly once and nothing in the buffer is damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_holds_the_records_and_loses_nothing_when_space_returns() {
    let n = 12_000;
    let limit: usize = 256 << 10;
    let port = free_port();
    let mut rx = Receiver::new(port);
    rx.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bin = Sink::new(dir.path(), &fwd(port, "passthrough = true\n"));
    let buffer = bin.buffer_dir("fwd");
    bin.start_under(&["prlimit", &format!("--fsize={limit}:unlimited"), "--"]);
    let data = stream(1..=n);
    assert!(data.len() > 4 * limit, "{} bytes", data.len());
    let progress = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_slowly(
        bin.addr(),
        data,
        64 << 10,
        Duration::ZERO,
        progress,
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !bin.log(1).contains("disk buffer: write failed") {
        assert!(
            Instant::now() < deadline,
            "no write failure: {}",
            bin.log(1)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While appends fail, nothing new goes out: arrivals stop at what was appended before
    // (waiting until two looks 500 ms apart agree, at most 10 s, for a loaded machine).
    let mut still = rx.counts().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rx.counts().len();
        if now == still {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "arrivals did not stop while appends failed ({now} of {n})"
        );
        still = now;
    }
    assert!(still < n, "all {n} arrived although the buffer was full");
    let segments: u64 = std::fs::read_dir(&buffer)
        .expect("buffer folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(
        segments <= limit as u64,
        "{segments} bytes in segments past the {limit}-byte limit (partial entry not cut)"
    );
    let lifted = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &bin.pid().to_string(),
            "--fsize=unlimited:unlimited",
        ])
        .status()
        .expect("prlimit");
    assert!(lifted.success(), "prlimit --pid failed");
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("sender done within 30 s")
        .expect("sender");
    rx.wait_for(&all(1..=n), Duration::from_secs(30)).await;
    sink::wait_checkpointed(&buffer, true, Duration::from_secs(15)).await;
    bin.stop();
    assert_exactly_once(&rx, &all(1..=n));
    let log = bin.log(1);
    assert!(!log.contains("damaged entry"), "{log}");
    eprintln!("disk full: {still} of {n} arrived while appends failed; all {n} after");
}
