//! Throughput over TLS vs plain TCP on the same corpus.
//!
//!     cargo bench --bench tls_throughput            # 200,000 messages per round
//!     TLS_BENCH_MESSAGES=50000 cargo bench --bench tls_throughput
//!
//! Starts the server in-process (one plain and one TLS listener, octet framing, one file
//! output in a tempdir; a fresh server per round so the file does not grow across rounds),
//! sends the PKS sample (`tests/data/pks-sink-2k.octet`) repeated up to the message count on
//! one connection, and times from connect until the output has written every record. Three
//! rounds each, interleaved (plain, TLS, plain, ...); prints each round, the medians and the
//! TLS/plain ratio. The client runs in the same process and shares the machine's cores with
//! the server, as a local sender would. Every wait is bounded (120 s per round).

#[path = "support/frames.rs"]
mod frames;
use frames::repeat_frames;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use syslog_sink::config::Config;
use syslog_sink::server::Server;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const ROUNDS: usize = 3;
const ROUND_LIMIT: Duration = Duration::from_secs(120);
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Plain,
    Tls,
}

fn main() {
    let n: usize = std::env::var("TLS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("PKS sample");
    let corpus = repeat_frames(&sample, n);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, cert, key) = pki(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "tls_throughput: {n} messages ({:.1} MB) per round, {ROUNDS} rounds each, one connection",
        corpus.len() as f64 / 1e6
    );
    let mut rates: Vec<(Mode, f64)> = Vec::new();
    for round in 0..ROUNDS {
        for mode in [Mode::Plain, Mode::Tls] {
            let rate = rt.block_on(run_round(
                mode,
                &corpus,
                n,
                &ca_pem,
                &cert,
                &key,
                dir.path(),
            ));
            println!(
                "round {} {:<5} {:>10.0} msgs/s  {:>7.1} MB/s",
                round + 1,
                format!("{mode:?}"),
                rate,
                rate * corpus.len() as f64 / n as f64 / 1e6
            );
            rates.push((mode, rate));
        }
    }
    let median = |m: Mode| {
        let mut v: Vec<f64> = rates.iter().filter(|r| r.0 == m).map(|r| r.1).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (plain, tls) = (median(Mode::Plain), median(Mode::Tls));
    println!(
        "median plain {plain:.0} msgs/s, TLS {tls:.0} msgs/s, TLS/plain = {:.2}",
        tls / plain
    );
}

/// A CA and a server certificate for localhost, written to `dir`; returns the CA's PEM and
/// the certificate and key paths.
fn pki(dir: &std::path::Path) -> (String, String, String) {
    let mut cap = CertificateParams::new(Vec::<String>::new()).expect("params");
    cap.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_pem = cap.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(cap, ca_key);
    let sp = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = sp.signed_by(&key, &issuer).expect("cert");
    let (cp, kp) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cp, cert.pem()).expect("write cert");
    std::fs::write(&kp, key.serialize_pem()).expect("write key");
    (ca_pem, cp.display().to_string(), kp.display().to_string())
}

/// One round: a fresh server, `corpus` sent on one connection, msgs/s until all `n` written.
async fn run_round(
    mode: Mode,
    corpus: &[u8],
    n: usize,
    ca_pem: &str,
    cert: &str,
    key: &str,
    dir: &std::path::Path,
) -> f64 {
    let out_dir = tempfile::tempdir_in(dir).expect("tempdir");
    let out = out_dir.path().join("records.jsonl");
    let text = format!(
        "[server]\nsummary_interval_secs = 0\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\nframing = \"octet\"\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\nframing = \"octet\"\n\
         [listen.tls]\ncert = {cert:?}\nkey = {key:?}\n\
         [[output]]\nname = \"file\"\ntype = \"file\"\npath = {:?}\n",
        out.display().to_string()
    );
    let config = Config::from_toml(&text).expect("config");
    let server = Server::start(&config).await.expect("server");
    let addr: SocketAddr = match mode {
        Mode::Plain => server.local_addrs()[0],
        Mode::Tls => server.local_addrs()[1],
    };
    let metrics = server.metrics();
    let token = server.shutdown_token();
    let handle = tokio::spawn(server.run(Duration::from_secs(60)));

    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    match mode {
        Mode::Plain => write_chunks(tcp, corpus).await,
        Mode::Tls => {
            let s = connector(ca_pem)
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("TLS connect");
            write_chunks(s, corpus).await;
        }
    }
    let deadline = started + ROUND_LIMIT;
    while metrics.outputs[0].records.load(Relaxed) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "{mode:?}: only {} of {n} records within {ROUND_LIMIT:?}",
            metrics.outputs[0].records.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(60), handle).await;
    // Every line is in the file.
    let lines = std::fs::read(&out)
        .expect("output")
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    assert_eq!(lines, n, "{mode:?}: lines in the output file");
    n as f64 / secs
}

async fn write_chunks<S: tokio::io::AsyncWrite + Unpin>(mut s: S, data: &[u8]) {
    for c in data.chunks(CHUNK) {
        s.write_all(c).await.expect("write");
    }
    s.shutdown().await.expect("shutdown");
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}
