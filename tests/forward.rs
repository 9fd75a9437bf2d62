//! The `syslog` output against a real receiver: syslog-ng 3.38 (Debian package
//! `syslog-ng-core`) started by the test in the foreground from a config in a temporary folder,
//! listening on a loopback port and writing every message it receives to a file. The PKS
//! sample goes into syslog-sink and out through the forwarding output; the tests check what the
//! receiver stored, by the `seq=` token at the end of every message. Every wait is bounded.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::pki::pki;
use common::{octet_frames, start, PKS_OCTET};
use syslog_sink::parse::{parse, Format};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Messages in the PKS sample.
const N: usize = 2000;

/// Fails (does not skip) when a tool the test needs is missing.
fn require(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: apt-get install -y {package} (.ci/run installs it)");
}

/// A free loopback port (bound, then released for the receiver).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// syslog-ng as a receiver: `syslog(transport(tcp))` source (RFC 5424, octet counting) into a
/// file, one record per message: `PRI|HOST|PROGRAM|PID|MSGID|MSG<<END>>` and LF (a MSG may
/// hold LFs and bytes that are not UTF-8).
struct Receiver {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Program and arguments.
    cmd: Vec<std::ffi::OsString>,
    /// How it stores NILVALUE header fields: (HOSTNAME, the others).
    nil: (&'static str, &'static str),
    /// Whether it keeps a UTF-8 BOM at the start of MSG (rsyslog does, syslog-ng drops it).
    keeps_bom: bool,
    /// Whether it writes NUL as `#000` and drops other control characters (rsyslog).
    escapes_controls: bool,
    starts: usize,
}

impl Receiver {
    fn new(port: u16) -> Receiver {
        Receiver::with_tls(port, "")
    }

    /// With `tls` (the options of syslog-ng's `tls()`, empty for plain TCP).
    fn with_tls(port: u16, tls: &str) -> Receiver {
        let transport = if tls.is_empty() {
            "tcp".to_string()
        } else {
            format!("tls) tls({tls}")
        };
        Receiver::syslog_ng(
            &format!(
                r#"syslog(transport({transport}) ip("127.0.0.1") port({port}) max-connections(10))"#
            ),
            port,
        )
    }

    /// syslog-ng reading RFC 5424 one message per line (`network()` with
    /// `flags(syslog-protocol)`).
    fn lf(port: u16) -> Receiver {
        Receiver::syslog_ng(
            &format!(
                r#"network(transport(tcp) ip("127.0.0.1") port({port}) flags(syslog-protocol) max-connections(10))"#
            ),
            port,
        )
    }

    /// syslog-ng with this source.
    fn syslog_ng(source: &str, port: u16) -> Receiver {
        let bin = require("syslog-ng", "syslog-ng-core");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = format!(
            r#"@version: 3.38
options {{ keep-hostname(yes); use-dns(no); stats-freq(0); create-dirs(no); log-msg-size(65536); }};
source s_in {{ {source}; }};
destination d_out {{
  file("{out}" flush-lines(1)
       template("${{PRI}}|${{HOST}}|${{PROGRAM}}|${{PID}}|${{MSGID}}|${{MSG}}<<END>>\n"));
}};
log {{ source(s_in); destination(d_out); }};
"#,
            out = dir.path().join("out.log").display(),
        );
        std::fs::write(dir.path().join("syslog-ng.conf"), conf).expect("write config");
        let p = |n: &str| dir.path().join(n).into_os_string();
        let cmd = vec![
            bin.into_os_string(),
            "-F".into(),
            "--no-caps".into(),
            "-f".into(),
            p("syslog-ng.conf"),
            "-R".into(),
            p("syslog-ng.persist"),
            "-p".into(),
            p("syslog-ng.pid"),
            "-c".into(),
            p("syslog-ng.ctl"),
        ];
        Receiver {
            dir,
            port,
            child: None,
            cmd,
            // For a NILVALUE HOSTNAME syslog-ng stores the sender's address.
            nil: ("127.0.0.1", ""),
            keeps_bom: false,
            escapes_controls: false,
            starts: 0,
        }
    }

    /// rsyslog as the receiver: imptcp (octet counting on) into omfile, same record format.
    fn rsyslog(port: u16) -> Receiver {
        let (bin, moddir) = rsyslogd();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off")
module(load="imptcp")
input(type="imptcp" address="127.0.0.1" port="{port}" ruleset="fwd")
template(name="fwd" type="string"
         string="%pri%|%hostname%|%app-name%|%procid%|%msgid%|%msg%<<END>>\n")
ruleset(name="fwd") {{ action(type="omfile" file="{out}" template="fwd") }}
"#,
            work = dir.path().display(),
            out = dir.path().join("out.log").display(),
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).expect("write config");
        let p = |n: &str| dir.path().join(n).into_os_string();
        let cmd = vec![
            bin.into_os_string(),
            "-n".into(),
            "-f".into(),
            p("rsyslog.conf"),
            "-M".into(),
            moddir.into_os_string(),
            "-i".into(),
            p("rsyslogd.pid"),
        ];
        Receiver {
            dir,
            port,
            child: None,
            cmd,
            nil: ("-", "-"),
            keeps_bom: true,
            escapes_controls: true,
            starts: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts syslog-ng in the foreground and waits (at most 10 s) until its port accepts.
    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.path(&format!("receiver.{}.log", self.starts)))
            .expect("log file");
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the receiver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{:?} exited ({st}): {}", self.cmd[0], self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{:?} not listening after 10 s: {}",
                self.cmd[0],
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to syslog-ng by PID and waits (at most 10 s) for it to exit.
    fn signal(&mut self, sig: &str) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(c.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("syslog-ng did not exit on {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.path(&format!("receiver.{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// The complete records stored so far (without their end marker).
    fn lines(&self) -> Vec<String> {
        let bytes = std::fs::read(self.path("out.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let mut recs: Vec<String> = text.split(END).map(str::to_string).collect();
        recs.pop(); // what follows the last marker: empty or still being written
        recs
    }

    /// Times each seq was stored.
    fn seq_counts(&self) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for l in self.lines() {
            if let Some(s) = seq_of(&l) {
                *counts.entry(s).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits (at most `limit`) until every seq 1..=N was stored at least once.
    async fn wait_all(&self, limit: Duration) -> HashMap<usize, usize> {
        self.wait_n(N, limit).await
    }

    /// Waits (at most `limit`) until all N messages were stored, and asserts they were.
    async fn assert_all_stored(&self, limit: Duration) {
        let counts = self.wait_all(limit).await;
        assert_eq!(
            counts.len(),
            N,
            "stored: {}; {}; first lines: {:?}",
            counts.len(),
            self.logs(),
            &self.lines()[..self.lines().len().min(3)]
        );
    }

    /// Waits (at most `limit`) until every seq 1..=n was stored at least once.
    async fn wait_n(&self, n: usize, limit: Duration) -> HashMap<usize, usize> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.seq_counts();
            if (1..=n).all(|s| c.contains_key(&s)) || Instant::now() > deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What ends each record in the receiver's file.
const END: &str = "<<END>>\n";

/// The number after the last `seq=` of a line.
fn seq_of(line: &str) -> Option<usize> {
    let i = line.rfind("seq=")?;
    line[i + 4..].get(..8)?.parse().ok()
}

/// rsyslogd and its module folder: the copy `.ci/run` unpacks under `target/interop/rsyslog`
/// (rsyslog conflicts with syslog-ng-core as a Debian package, so it is not installed), the
/// benchmark harness's copy, or an installed one. Fails (does not skip) when there is none.
fn rsyslogd() -> (PathBuf, PathBuf) {
    let roots = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop/rsyslog"),
        PathBuf::from("/tmp/syslog-sink-bench/opt/rsyslog"),
        PathBuf::from("/"),
    ];
    for root in roots {
        let bin = root.join("usr/sbin/rsyslogd");
        let moddir = root.join("usr/lib/x86_64-linux-gnu/rsyslog");
        if bin.exists() && moddir.join("imptcp.so").exists() {
            return (bin, moddir);
        }
    }
    panic!(
        "rsyslogd is not available: .ci/run fetches the rsyslog package (apt-get download \
         rsyslog; dpkg-deb -x rsyslog_*.deb target/interop/rsyslog) and installs its libraries \
         (libestr0 libfastjson4 liblognorm5 libuuid1 libzstd1 zlib1g)"
    );
}

/// What the receiver should store for each PKS message, by seq: the fields of the original
/// frame as our parser reads them, in the receiver's template and with its habits.
fn expected_lines(rx: &Receiver, stream: &[u8]) -> HashMap<usize, String> {
    let nil = rx.nil;
    let mut out = HashMap::new();
    let frames = octet_frames(stream);
    for f in &frames {
        let m = parse(f, Format::Auto).expect("test messages parse");
        // The receivers drop the LF that ends many PKS messages.
        let msg = String::from_utf8_lossy(m.msg.unwrap_or_default());
        let msg = msg.trim_end_matches('\n');
        let bom = if m.bom && rx.keeps_bom {
            "\u{feff}"
        } else {
            ""
        };
        // The receivers keep at most 48 characters of APP-NAME (RFC 5424's limit).
        let app: String = m.app_name.unwrap_or(nil.1).chars().take(48).collect();
        let line = format!(
            "{}|{}|{app}|{}|{}|{bom}{msg}",
            m.pri,
            m.hostname.unwrap_or(nil.0),
            m.procid.unwrap_or(nil.1),
            m.msgid.unwrap_or(nil.1),
        );
        out.insert(seq_of(&line).expect("seq in every test message"), line);
    }
    assert_eq!(out.len(), frames.len());
    out
}

/// The `[[output]]` section of a forwarding output to `port`.
fn fwd_output(port: u16, passthrough: bool) -> String {
    format!(
        "[[output]]\nname = \"fwd\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n\
         passthrough = {passthrough}\nconfirm_after_ms = 200\nmax_backoff_ms = 400\n\
         connect_timeout_ms = 1000\nflush_interval_ms = 50\n"
    )
}

/// Sends the PKS sample on one connection: in `parts` pieces, `pause` apart.
async fn send_pks(addr: SocketAddr, parts: usize, pause: Duration) {
    let stream = std::fs::read(PKS_OCTET).expect("PKS sample");
    let ends = common::octet_frame_ends(&stream);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut start = 0;
    for p in 1..=parts {
        let end = ends[(ends.len() * p / parts).max(1) - 1];
        s.write_all(&stream[start..end]).await.expect("write");
        start = end;
        tokio::time::sleep(pause).await;
    }
    s.shutdown().await.expect("shutdown");
}

/// Asserts every PKS message was stored exactly once, with the original's fields.
fn check_exactly_once(rx: &Receiver) {
    check_stream_once(rx, &std::fs::read(PKS_OCTET).expect("PKS sample"));
}

/// Asserts every message of the octet-counted `stream` was stored exactly once, with the
/// original's fields.
fn check_stream_once(rx: &Receiver, stream: &[u8]) {
    let expect = expected_lines(rx, stream);
    let n = expect.len();
    let lines = rx.lines();
    let mut seen = HashMap::new();
    for l in &lines {
        let s = seq_of(l).unwrap_or_else(|| panic!("no seq in stored line {l:?}"));
        assert!(seen.insert(s, ()).is_none(), "seq {s} stored twice");
        if rx.escapes_controls {
            // Compare without the control characters.
            let strip = |t: &str| -> String {
                t.replace("#000", "")
                    .chars()
                    .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
                    .collect()
            };
            assert_eq!(strip(l), strip(&expect[&s]), "fields of seq {s}");
        } else {
            assert_eq!(l, &expect[&s], "fields of seq {s}");
        }
    }
    assert_eq!(lines.len(), n, "{} of {n} messages stored", lines.len());
}

async fn forward_exactly_once(passthrough: bool) {
    let port = free_port();
    forward_exactly_once_to(Receiver::new(port), port, passthrough).await;
}

async fn forward_exactly_once_to(mut rx: Receiver, port: u16, passthrough: bool) {
    rx.start();
    let s = start("", "", &fwd_output(port, passthrough)).await;
    send_pks(s.addr, 1, Duration::ZERO).await;
    rx.assert_all_stored(Duration::from_secs(15)).await;
    let metrics = s.metrics.clone();
    s.stop().await;
    rx.signal("-TERM");
    check_exactly_once(&rx);
    let m = &metrics.outputs[1];
    assert_eq!(m.records.load(Relaxed), N as u64, "confirmed records");
    assert_eq!(m.retries.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_ng_receives_passthrough_exactly_once() {
    forward_exactly_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_ng_receives_reserialised_exactly_once() {
    forward_exactly_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_at_start_gets_everything_once_up() {
    let port = free_port();
    let mut rx = Receiver::new(port);
    let s = start("", "", &fwd_output(port, false)).await;
    send_pks(s.addr, 1, Duration::ZERO).await;
    // The output retries while nobody listens.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metrics.outputs[1].errors.load(Relaxed) < 2 {
        assert!(Instant::now() < deadline, "no connection failures counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.metrics.outputs[1].records.load(Relaxed), 0);
    rx.start();
    rx.assert_all_stored(Duration::from_secs(15)).await;
    let metrics = s.metrics.clone();
    s.stop().await;
    rx.signal("-TERM");
    check_exactly_once(&rx);
    assert_eq!(metrics.outputs[1].records.load(Relaxed), N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_stream_loses_nothing() {
    let port = free_port();
    let mut rx = Receiver::new(port);
    rx.start();
    // A longer confirmation delay than the other tests: syslog-ng must have stored what was
    // confirmed before the kill, also on a busy machine.
    let out = fwd_output(port, true).replace("confirm_after_ms = 200", "confirm_after_ms = 500");
    let s = start("", "", &out).await;
    let addr = s.addr;
    // 2,000 messages over about 1.2 s.
    let sender = tokio::spawn(send_pks(addr, 40, Duration::from_millis(30)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.seq_counts().len() < 600 {
        assert!(Instant::now() < deadline, "receiver never got 600 messages");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rx.signal("-KILL");
    let before = rx.seq_counts().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.start();
    sender.await.expect("sender");
    let counts = rx.wait_all(Duration::from_secs(15)).await;
    let metrics = s.metrics.clone();
    s.stop().await;
    rx.signal("-TERM");
    let counts_final = rx.seq_counts();
    let missing: Vec<usize> = (1..=N).filter(|s| !counts_final.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages (first {:?}); {} stored before the kill; {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        before,
        rx.logs()
    );
    assert_eq!(counts.len(), N);
    let dups: usize = counts_final.values().map(|c| c - 1).sum();
    let m = &metrics.outputs[1];
    eprintln!(
        "receiver killed after {before} messages: {dups} duplicates; output retries={} reconnects={} errors={}",
        m.retries.load(Relaxed),
        m.reconnects.load(Relaxed),
        m.errors.load(Relaxed)
    );
    assert!(before < N, "the kill came after the whole stream");
    assert!(m.reconnects.load(Relaxed) >= 1, "no reconnect counted");
    assert_eq!(m.records.load(Relaxed), N as u64, "confirmed records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_passthrough_exactly_once() {
    let port = free_port();
    forward_exactly_once_to(Receiver::rsyslog(port), port, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_reserialised_exactly_once() {
    let port = free_port();
    forward_exactly_once_to(Receiver::rsyslog(port), port, false).await;
}

/// LF framing, re-serialised, into syslog-ng reading one message per line: messages with
/// NILVALUEs, STRUCTURED-DATA with escapes, a BOM, a trailing LF, and RFC 3164 input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_ng_receives_lf_framed_reserialised_exactly_once() {
    let n = 300;
    let mut stream = Vec::new();
    for i in 1..=n {
        let msg = match i % 5 {
            0 => format!("<13>1 - - - - - - nil fields seq={i:08}"),
            1 => format!(
                r#"<165>1 2024-03-11T08:00:00Z host-{i} app 42 ID7 [ex@32473 a="q\"x\]y\\z"] sd seq={i:08}"#
            ),
            2 => format!(
                "<14>1 2024-03-11T08:00:00.5+01:00 h k8s.event/ns/x/ - - - \u{feff}bom seq={i:08}"
            ),
            3 => format!("<14>1 2024-03-11T08:00:00Z h app - - - trailing lf seq={i:08}\n"),
            _ => format!("<34>Oct 11 22:14:15 box su[7]: bsd seq={i:08}"),
        };
        stream.extend_from_slice(&common::oc(&msg));
    }
    let port = free_port();
    let mut rx = Receiver::lf(port);
    rx.start();
    let out = format!("{}framing = \"lf\"\n", fwd_output(port, false));
    let s = start("", "", &out).await;
    common::send(s.addr, &stream, || 4096).await;
    let counts = rx.wait_n(n, Duration::from_secs(15)).await;
    assert_eq!(counts.len(), n, "stored: {}; {}", counts.len(), rx.logs());
    s.stop().await;
    rx.signal("-TERM");
    // The RFC 3164 messages arrive as RFC 5424: compare with that form.
    let reserialised: Vec<u8> = octet_frames(&stream)
        .into_iter()
        .flat_map(|f| {
            let mut v = Vec::new();
            let m = parse(f, Format::Auto).expect("parses");
            syslog_sink::output::syslog::write_5424(&mut v, &m);
            common::oc(&String::from_utf8(v).expect("UTF-8"))
        })
        .collect();
    check_stream_once(&rx, &reserialised);
}

// ---------------------------------------------------------------- TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_ng_receives_over_mutual_tls_exactly_once() {
    let files = tempfile::tempdir().expect("tempdir");
    let (server_ca, server_cert, server_key) =
        pki(files.path(), "receiver", &["siem.test", "127.0.0.1"], true);
    let (client_ca, client_cert, client_key) = pki(files.path(), "sink", &["sink.test"], false);
    let port = free_port();
    let mut rx = Receiver::with_tls(
        port,
        &format!(
            "key-file(\"{}\") cert-file(\"{}\") ca-file(\"{}\") peer-verify(required-trusted)",
            server_key.display(),
            server_cert.display(),
            client_ca.display()
        ),
    );
    rx.start();
    let out = format!(
        "{}[output.tls]\nca = {:?}\nserver_name = \"siem.test\"\ncert = {:?}\nkey = {:?}\n",
        fwd_output(port, true),
        server_ca.display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string()
    );
    let s = start("", "", &out).await;
    send_pks(s.addr, 1, Duration::ZERO).await;
    let counts = rx.wait_all(Duration::from_secs(15)).await;
    assert_eq!(counts.len(), N, "stored: {}; {}", counts.len(), rx.logs());
    let metrics = s.metrics.clone();
    s.stop().await;
    rx.signal("-TERM");
    check_exactly_once(&rx);
    assert_eq!(metrics.outputs[1].records.load(Relaxed), N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_receiver_with_an_untrusted_certificate_gets_nothing() {
    let files = tempfile::tempdir().expect("tempdir");
    let (_, server_cert, server_key) = pki(files.path(), "receiver", &["siem.test"], true);
    let (other_ca, _, _) = pki(files.path(), "other", &["other.test"], true);
    let port = free_port();
    let mut rx = Receiver::with_tls(
        port,
        &format!(
            "key-file(\"{}\") cert-file(\"{}\") peer-verify(optional-untrusted)",
            server_key.display(),
            server_cert.display(),
        ),
    );
    rx.start();
    let out = format!(
        "{}[output.tls]\nca = {:?}\nserver_name = \"siem.test\"\n",
        fwd_output(port, true),
        other_ca.display().to_string(),
    );
    let s = start("", "", &out).await;
    send_pks(s.addr, 1, Duration::ZERO).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metrics.outputs[1].errors.load(Relaxed) < 2 {
        assert!(Instant::now() < deadline, "no handshake failures counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.metrics.outputs[1].records.load(Relaxed), 0);
    assert!(
        rx.lines().is_empty(),
        "stored without a verified certificate"
    );
    rx.signal("-TERM");
}
