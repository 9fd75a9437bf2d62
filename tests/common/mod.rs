//! Helpers shared by the integration tests: start a server on an ephemeral loopback port with
//! a file output in a temporary folder, send bytes, stop it, read and check the records; the
//! real binary killed and restarted ([`sink`]).
#![allow(dead_code)]

pub mod alloc;
pub mod pki;
pub mod sink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use syslog_sink::config::Config;
use syslog_sink::metrics::Metrics;
use syslog_sink::server::{Server, Stopped};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The PKS sample in octet-counted framing (2,000 messages).
pub const PKS_OCTET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pks-sink-2k.octet");
/// The same messages, one per line.
pub const PKS_LF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pks-sink-2k.lf");
/// Expected parse and classification per message.
pub const PKS_EXPECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/pks-sink-2k.expect.jsonl"
);

/// A server running in the test's runtime.
pub struct Running {
    /// Its listener.
    pub addr: SocketAddr,
    /// The JSON-lines file of its `file` output.
    pub out: PathBuf,
    /// Its counters.
    pub metrics: std::sync::Arc<Metrics>,
    token: CancellationToken,
    handle: JoinHandle<Stopped>,
    _dir: tempfile::TempDir,
}

/// Starts a server with one listener on 127.0.0.1:0 (plus `listen_extra` TOML lines) and one
/// file output (plus `output_extra` lines), with `more` appended to the config.
pub async fn start(listen_extra: &str, output_extra: &str, more: &str) -> Running {
    start_with("", listen_extra, output_extra, more).await
}

/// [`start`] with `server_extra` TOML lines in `[server]`.
pub async fn start_with(
    server_extra: &str,
    listen_extra: &str,
    output_extra: &str,
    more: &str,
) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out/records.jsonl");
    let data = dir.path().join("data");
    let text = format!(
        "[server]\nsummary_interval_secs = 0\nshutdown_grace_secs = 20\ndata_dir = {:?}\n{server_extra}\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n{listen_extra}\n\
         [[output]]\nname = \"file\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 50\n{output_extra}\n{more}\n",
        data.display().to_string(),
        out.display().to_string()
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let server = Server::start(&config).await.expect("server start");
    let addr = server.local_addrs()[0];
    let token = server.shutdown_token();
    let metrics = server.metrics();
    let handle = tokio::spawn(server.run(Duration::from_secs(20)));
    Running {
        addr,
        out,
        metrics,
        token,
        handle,
        _dir: dir,
    }
}

impl Running {
    /// Shuts the server down (as SIGTERM would) and returns the records written.
    pub async fn stop(self) -> Vec<Value> {
        self.token.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task");
        assert_eq!(stopped, Stopped::Clean);
        let bytes = std::fs::read(&self.out).unwrap_or_default();
        assert!(
            bytes.last().is_none_or(|&b| b == b'\n'),
            "output ends in a partial line after shutdown"
        );
        read_records(&self.out)
    }

    /// Waits until the output file holds `n` lines (at most 20 s), returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let recs = read_records(&self.out);
            if recs.len() >= n || tokio::time::Instant::now() > deadline {
                return recs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every complete line of a JSON-lines file, parsed (each must be valid JSON). A last line
/// without its LF is still being written by the output (the file is polled while the server
/// runs) and is left for the next read; after [`Running::stop`] the file ends with a LF.
pub fn read_records(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..complete]).expect("records are UTF-8");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Sends `data` on a new connection in chunks whose sizes come from `chunk`, then closes it.
pub async fn send(addr: SocketAddr, data: &[u8], mut chunk: impl FnMut() -> usize) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk().clamp(1, rest.len());
        s.write_all(&rest[..n]).await.expect("write");
        rest = &rest[n..];
    }
    s.shutdown().await.expect("shutdown");
}

/// A small deterministic PRNG (xorshift) for chunk sizes.
pub struct Rng(pub u64);

impl Rng {
    /// Next value in 1..=max.
    pub fn upto(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % max as u64) as usize + 1
    }
}

/// The expected values per message of the PKS sample, indexed by seq - 1.
pub fn expected() -> Vec<Value> {
    std::fs::read_to_string(PKS_EXPECT)
        .expect("expect file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("expect line"))
        .collect()
}

/// The ` seq=NNNNNNNN` token at the end of a record's message.
pub fn seq_of(rec: &Value) -> Option<usize> {
    let msg = rec["message"].as_str()?;
    let i = msg.rfind(" seq=")?;
    msg[i + 5..].trim_end().parse().ok()
}

/// Asserts that `records` are exactly the 2,000 PKS sample messages, each once, with the
/// expected header fields and classification.
pub fn check_pks_records(records: &[Value]) {
    let expect = expected();
    assert_eq!(records.len(), expect.len(), "one record per message");
    let mut seen = vec![false; expect.len()];
    for rec in records {
        assert!(rec.get("parse_error").is_none(), "parse error: {rec}");
        assert!(rec.get("truncated").is_none(), "truncated: {rec}");
        let seq = seq_of(rec).unwrap_or_else(|| panic!("no seq in {rec}"));
        assert!(!seen[seq - 1], "seq {seq} twice");
        seen[seq - 1] = true;
        let e = &expect[seq - 1];
        assert_eq!(rec["app_name"], e["app_name"], "app_name of seq {seq}");
        assert_eq!(rec["hostname"], e["hostname"], "hostname of seq {seq}");
        if e["kind"].is_null() {
            assert!(
                rec.get("k8s").is_none(),
                "seq {seq} is not a k8s record: {rec}"
            );
            continue;
        }
        let k = &rec["k8s"];
        assert_eq!(k["kind"], e["kind"], "kind of seq {seq}");
        assert_eq!(k["category"], e["category"], "category of seq {seq}: {rec}");
        for key in ["namespace", "object", "container", "vm_id"] {
            assert_eq!(k[key], e[key], "{key} of seq {seq}");
        }
    }
}

/// `msg` as one octet-counted frame (`LEN SP MSG`).
pub fn oc(msg: &str) -> Vec<u8> {
    format!("{} {msg}", msg.len()).into_bytes()
}

/// End offset (exclusive) of each frame of an octet-counted stream (`MSG-LEN SP MSG`...);
/// panics on bad framing (test data only).
pub fn octet_frame_ends(stream: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let sp = stream[pos..]
            .iter()
            .position(|&b| b == b' ')
            .expect("MSG-LEN followed by SP");
        let len: usize = std::str::from_utf8(&stream[pos..pos + sp])
            .expect("ASCII MSG-LEN")
            .parse()
            .expect("decimal MSG-LEN");
        pos += sp + 1 + len;
        assert!(pos <= stream.len(), "frame overruns the stream");
        ends.push(pos);
    }
    ends
}

/// The SYSLOG-MSGs of an octet-counted stream, without MSG-LEN (test data only).
pub fn octet_frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut start = 0;
    octet_frame_ends(stream)
        .into_iter()
        .map(|end| {
            let sp = start
                + stream[start..end]
                    .iter()
                    .position(|&b| b == b' ')
                    .unwrap_or(0);
            let frame = &stream[sp + 1..end];
            start = end;
            frame
        })
        .collect()
}

/// The records `syslog-sink parse` makes of what `input` yields (what the server writes for one
/// connection that sends it and closes), without `received_at`.
pub fn offline_records(
    input: impl std::io::Read,
    framing: syslog_sink::framing::FramingMode,
    max_frame_bytes: usize,
) -> Vec<Value> {
    use syslog_sink::cli::{parse_stream, ParseOptions};
    let opts = ParseOptions {
        framing,
        trailer: syslog_sink::framing::Trailer::CrLf,
        format: syslog_sink::parse::Format::Auto,
        max_frame_bytes,
        frames: false,
    };
    let classifier = syslog_sink::classify::Classifier::builtin();
    let mut out = Vec::new();
    parse_stream(input, &mut out, &opts, &classifier).expect("parse_stream");
    std::str::from_utf8(&out)
        .expect("records are UTF-8")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("record is JSON");
            if let Some(o) = v.as_object_mut() {
                o.remove("received_at");
            }
            v
        })
        .collect()
}
