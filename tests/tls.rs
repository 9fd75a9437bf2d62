//! TLS listeners (RFC 5425), end to end: a throwaway PKI made with rcgen at test time (no keys
//! committed), the server in-process on loopback, tokio-rustls clients, and real TLS syslog
//! clients from Debian packages (`openssl s_client`, `syslog-ng`). Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use syslog_sink::config::Config;
use syslog_sink::metrics::Metrics;
use syslog_sink::server::{Server, Stopped};
use syslog_sink::tls::TlsReload;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- PKI

/// A CA that can sign leaves.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    /// A leaf certificate and its key (PEM): subject CN `cn` (none when `None`), SANs `sans`.
    fn leaf(&self, cn: Option<&str>, sans: &[&str], server: bool) -> Leaf {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server_leaf(&self) -> Leaf {
        self.leaf(Some("syslog-sink test"), &["localhost", "127.0.0.1"], true)
    }
}

/// A certificate and its private key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

/// Files of one test's PKI, in a tempdir.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn leaf(&self, name: &str, l: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.crt"), &l.cert),
            self.write(&format!("{name}.key"), &l.key),
        )
    }
}

/// A `[listen.tls]` TOML section.
fn tls_section(cert: &Path, key: &Path, client_ca: Option<&Path>, names: &[&str]) -> String {
    let mut s = format!(
        "[listen.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some(ca) = client_ca {
        s.push_str(&format!("client_ca = {:?}\n", ca.display().to_string()));
    }
    if !names.is_empty() {
        s.push_str(&format!("allowed_client_names = {names:?}\n"));
    }
    s
}

// ---------------------------------------------------------------- server

/// A server running in the test's runtime, with its TLS reload handle.
struct Tls {
    addrs: Vec<SocketAddr>,
    out: PathBuf,
    metrics: Arc<Metrics>,
    reload: TlsReload,
    token: CancellationToken,
    handle: JoinHandle<Stopped>,
    _dir: tempfile::TempDir,
}

/// Starts a server whose `[[listen]]` sections are `listens` (each an `address = ...` body,
/// `127.0.0.1:0` ports) and one file output.
async fn start_tls(listens: &[String]) -> Tls {
    if std::env::var_os("TLS_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,rustls=info")
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("records.jsonl");
    let mut text = "[server]\nsummary_interval_secs = 0\nshutdown_grace_secs = 20\n".to_string();
    for l in listens {
        text.push_str(&format!("[[listen]]\naddress = \"127.0.0.1:0\"\n{l}\n"));
    }
    text.push_str(&format!(
        "[[output]]\nname = \"file\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 50\n",
        out.display().to_string()
    ));
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let server = Server::start(&config).await.unwrap();
    Tls {
        addrs: server.local_addrs().to_vec(),
        out,
        metrics: server.metrics(),
        reload: server.tls_reload(),
        token: server.shutdown_token(),
        handle: tokio::spawn(server.run(Duration::from_secs(20))),
        _dir: dir,
    }
}

impl Tls {
    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Waits until the output holds `n` lines (at most 20 s), returns them.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        wait_until(Duration::from_secs(20), || {
            read_records(&self.out).len() >= n
        })
        .await;
        read_records(&self.out)
    }

    async fn stop(self) -> Vec<Value> {
        let text = self.stop_text().await;
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }

    /// Shuts down and returns the output file's text.
    async fn stop_text(self) -> String {
        self.token.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .unwrap();
        assert_eq!(stopped, Stopped::Clean);
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

/// Polls `cond` every 20 ms for at most `limit`; returns whether it held.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- clients

fn connector(ca_pem: &str, client: Option<&Leaf>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(l) => {
            let certs = CertificateDer::pem_slice_iter(l.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(l.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        connector(ca_pem, client).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS connect timed out"))?
}

/// Writes `data` in chunks from `chunk`, then closes the TLS session (close_notify + FIN).
async fn send_all<S: AsyncWrite + Unpin>(s: &mut S, data: &[u8], mut chunk: impl FnMut() -> usize) {
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk().clamp(1, rest.len());
        s.write_all(&rest[..n]).await.unwrap();
        rest = &rest[n..];
    }
    s.flush().await.unwrap();
}

/// Sends `data` over a new TLS connection and closes it.
async fn tls_send(addr: SocketAddr, ca_pem: &str, client: Option<&Leaf>, data: &[u8], seed: u64) {
    let mut s = tls_connect(addr, ca_pem, client)
        .await
        .expect("TLS connect");
    let mut rng = Rng(seed);
    send_all(&mut s, data, || rng.upto(6000)).await;
    s.shutdown().await.unwrap();
}

/// After a refused handshake the server closes: reading gives an error (an alert) or EOF,
/// within 10 s.
async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("server sent {n} bytes instead of closing"),
        Err(_) => panic!("server did not close the connection within 10 s"),
    }
}

/// `n` small RFC 5424 messages with ` seq=N` tokens, octet-counted.
fn small_stream(first_seq: usize, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in first_seq..first_seq + n {
        v.extend(oc(&format!(
            "<14>1 2024-03-11T08:00:00Z host app - - - hello over tls seq={i:08}"
        )));
    }
    v
}

/// Asserts the records are exactly seqs `1..=n`, each once, none an error.
fn check_seqs(recs: &[Value], n: usize) {
    assert_eq!(recs.len(), n, "record count");
    let mut seen = vec![false; n];
    for r in recs {
        assert!(r.get("parse_error").is_none(), "parse error: {r}");
        assert!(r.get("framing_error").is_none(), "framing error: {r}");
        let s = seq_of(r).unwrap_or_else(|| panic!("no seq in {r}"));
        assert!((1..=n).contains(&s), "seq {s} out of range");
        assert!(!seen[s - 1], "seq {s} twice");
        seen[s - 1] = true;
    }
}

// ---------------------------------------------------------------- tests: rustls clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_octet_stream_delivered_in_full() {
    let (f, ca) = (Files::new(), Ca::new("test CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let s = start_tls(&[format!(
        "framing = \"octet\"\n{}",
        tls_section(&cert, &key, None, &[])
    )])
    .await;
    let data = std::fs::read(PKS_OCTET).unwrap();
    tls_send(s.addr(), &ca.pem, None, &data, 11).await;
    assert_eq!(s.wait_for(2000).await.len(), 2000);
    let recs = s.stop().await;
    check_pks_records(&recs);
    assert!(recs.iter().all(|r| r.get("peer_cert").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepted_with_peer_cert_in_every_record() {
    let (f, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let client_ca = f.write("clients.pem", &clients.pem);
    let names = ["fluent-bit.pks-system", "*.siem.example"];
    let s = start_tls(&[tls_section(&cert, &key, Some(&client_ca), &names)]).await;
    // Identity from the CN.
    let fluent = clients.leaf(
        Some("fluent-bit.pks-system"),
        &["node-1.pks.internal"],
        false,
    );
    let data = std::fs::read(PKS_OCTET).unwrap();
    tls_send(s.addr(), &ca.pem, Some(&fluent), &data, 5).await;
    s.wait_for(2000).await;
    // No CN: identity from the first DNS SAN, admitted by the wildcard.
    let siem = clients.leaf(None, &["collector.siem.example", "other.example"], false);
    tls_send(s.addr(), &ca.pem, Some(&siem), &small_stream(1, 10), 6).await;
    s.wait_for(2010).await;
    let m = s.metrics.clone();
    let recs = s.stop().await;
    assert_eq!(recs.len(), 2010);
    let (pks, small): (Vec<Value>, Vec<Value>) = recs
        .into_iter()
        .partition(|r| r["peer_cert"] == "fluent-bit.pks-system");
    check_pks_records(&pks);
    check_seqs(&small, 10);
    for r in &small {
        assert_eq!(r["peer_cert"], "collector.siem.example", "{r}");
    }
    assert_eq!(m.tls_handshake_failures.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_cert_is_written_right_after_peer() {
    let (f, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let client_ca = f.write("clients.pem", &clients.pem);
    let s = start_tls(&[tls_section(&cert, &key, Some(&client_ca), &[])]).await;
    let c = clients.leaf(Some("fluent-bit.pks-system"), &[], false);
    tls_send(s.addr(), &ca.pem, Some(&c), &small_stream(1, 3), 1).await;
    s.wait_for(3).await;
    let text = s.stop_text().await;
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_seqs(&recs, 3);
    for line in text.lines() {
        let peer = line.find("\"peer\":").unwrap();
        let cert = line
            .find(",\"peer_cert\":\"fluent-bit.pks-system\",")
            .unwrap();
        let facility = line.find("\"facility\":").unwrap();
        assert!(peer < cert && cert < facility, "{line}");
    }
}

/// Starts an mTLS listener whose allowlist is `names`, connects with `client`, sends a
/// message, and asserts the connection was refused: closed, counted, nothing written.
async fn assert_refused(client: Option<&Leaf>, other_ca: bool, names: &[&str]) {
    let (f, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let client_ca = f.write("clients.pem", &clients.pem);
    let s = start_tls(&[tls_section(&cert, &key, Some(&client_ca), names)]).await;
    // A client certificate made by the caller's description, signed by the trusted CA or not.
    // The stranger CA even has the trusted CA's name: only its key differs.
    let stranger = Ca::new("client CA");
    let leaf = client.map(|l| {
        let signer = if other_ca { &stranger } else { &clients };
        let cn = if l.cert.is_empty() {
            None
        } else {
            Some(l.cert.as_str())
        };
        let sans: Vec<&str> = l.key.split(',').filter(|s| !s.is_empty()).collect();
        signer.leaf(cn, &sans, false)
    });
    // With TLS 1.3 the client's side of the handshake can finish before the server has
    // checked the client certificate, so the refusal shows on the next read.
    match tls_connect(s.addr(), &ca.pem, leaf.as_ref()).await {
        Err(_) => {}
        Ok(mut c) => {
            let _ = c.write_all(&small_stream(1, 1)).await;
            let _ = c.flush().await;
            expect_closed(&mut c).await;
        }
    }
    let m = s.metrics.clone();
    assert!(
        wait_until(Duration::from_secs(10), || m
            .tls_handshake_failures
            .load(Relaxed)
            == 1)
        .await,
        "handshake failure counted"
    );
    let recs = s.stop().await;
    assert!(recs.is_empty(), "no record from a refused client: {recs:?}");
    assert_eq!(m.tls_plaintext_clients.load(Relaxed), 0);
}

/// Describes a client certificate for [`assert_refused`]: `cert` holds the CN ("" for none),
/// `key` the comma-separated SANs.
fn desc(cn: &str, sans: &str) -> Leaf {
    Leaf {
        cert: cn.to_string(),
        key: sans.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_client_without_certificate_is_refused() {
    assert_refused(None, false, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_certificate_from_another_ca_is_refused() {
    assert_refused(Some(&desc("fluent-bit.pks-system", "")), true, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_name_not_in_allowlist_is_refused() {
    // Neither the CN nor a SAN matches: the wildcard covers one label only.
    assert_refused(
        Some(&desc("intruder.example", "a.b.siem.example,siem.example")),
        false,
        &["fluent-bit.pks-system", "*.siem.example"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_client_on_tls_port_is_closed_without_records() {
    let (f, ca) = (Files::new(), Ca::new("test CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let s = start_tls(&[tls_section(&cert, &key, None, &[])]).await;
    let mut c = TcpStream::connect(s.addr()).await.unwrap();
    c.write_all(&small_stream(1, 5)).await.unwrap();
    expect_closed(&mut c).await;
    let m = s.metrics.clone();
    assert!(wait_until(Duration::from_secs(10), || m.connections_open() == 0).await);
    let recs = s.stop().await;
    assert!(recs.is_empty(), "no junk records: {recs:?}");
    assert_eq!(m.tls_plaintext_clients.load(Relaxed), 1);
    assert_eq!(m.tls_handshake_failures.load(Relaxed), 0);
    assert!(m
        .summary(0, Duration::from_secs(1))
        .contains("tls_plaintext_clients=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_half_open_connections() {
    let (f, ca) = (Files::new(), Ca::new("test CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let section = format!(
        "{}handshake_timeout_secs = 1\n",
        tls_section(&cert, &key, None, &[])
    );
    let s = start_tls(&["max_connections = 1".to_string() + "\n" + &section]).await;
    // A TLS record header and nothing more: the handshake never completes.
    let mut c = TcpStream::connect(s.addr()).await.unwrap();
    c.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let t = std::time::Instant::now();
    expect_closed(&mut c).await;
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // The slot is free again: a real client gets in.
    tls_send(s.addr(), &ca.pem, None, &small_stream(1, 4), 3).await;
    s.wait_for(4).await;
    let m = s.metrics.clone();
    check_seqs(&s.stop().await, 4);
    assert_eq!(m.tls_handshake_failures.load(Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plain_listeners_side_by_side() {
    let (f, ca) = (Files::new(), Ca::new("test CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let s = start_tls(&[tls_section(&cert, &key, None, &[]), String::new()]).await;
    let (tls_addr, plain_addr) = (s.addrs[0], s.addrs[1]);
    let a = tokio::spawn({
        let pem = ca.pem.clone();
        async move { tls_send(tls_addr, &pem, None, &small_stream(1, 500), 8).await }
    });
    let mut rng = Rng(9);
    send(plain_addr, &small_stream(501, 500), || rng.upto(4000)).await;
    a.await.unwrap();
    s.wait_for(1000).await;
    let m = s.metrics.clone();
    check_seqs(&s.stop().await, 1000);
    assert_eq!(m.connections_accepted.load(Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_new_cert_for_new_connections_old_connection_keeps_working() {
    let (f, ca1, ca2) = (Files::new(), Ca::new("first CA"), Ca::new("second CA"));
    let (cert, key) = f.leaf("server", &ca1.server_leaf());
    let s = start_tls(&[tls_section(&cert, &key, None, &[])]).await;
    let mut old = tls_connect(s.addr(), &ca1.pem, None).await.unwrap();
    old.write_all(&small_stream(1, 10)).await.unwrap();
    old.flush().await.unwrap();
    s.wait_for(10).await;
    // New certificate (from another CA) in place, then what SIGHUP does.
    f.leaf("server", &ca2.server_leaf());
    s.reload.reload().expect("reload");
    // New connections get the new certificate: CA 2 is trusted, CA 1 no longer is.
    tls_send(s.addr(), &ca2.pem, None, &small_stream(11, 10), 2).await;
    assert!(tls_connect(s.addr(), &ca1.pem, None).await.is_err());
    // The established connection goes on.
    old.write_all(&small_stream(21, 10)).await.unwrap();
    old.shutdown().await.unwrap();
    s.wait_for(30).await;
    check_seqs(&s.stop().await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_bad_new_files_keeps_the_old_cert() {
    let (f, ca) = (Files::new(), Ca::new("test CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let s = start_tls(&[tls_section(&cert, &key, None, &[])]).await;
    // A key that does not belong to the certificate.
    let other = ca.server_leaf();
    f.write("server.key", &other.key);
    let e = s.reload.reload().unwrap_err().0;
    assert!(
        e.starts_with("listen[0].tls.key: ") && e.contains("does not match the certificate in"),
        "{e}"
    );
    // An unreadable certificate.
    std::fs::remove_file(&cert).unwrap();
    let e = s.reload.reload().unwrap_err().0;
    assert!(e.starts_with("listen[0].tls.cert: cannot read "), "{e}");
    // The old certificate is still served.
    tls_send(s.addr(), &ca.pem, None, &small_stream(1, 5), 4).await;
    s.wait_for(5).await;
    check_seqs(&s.stop().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key_and_the_file() {
    let (f, ca) = (Files::new(), Ca::new("test CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let other_key = f.write("other.key", &ca.server_leaf().key);
    let missing = f.path("missing.crt");
    let out = f.path("out.jsonl");
    let config = |tls: String| {
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n{tls}\n[[output]]\nname = \"f\"\ntype = \"file\"\npath = {:?}\n",
            out.display().to_string()
        )
    };
    let err = |tls: String| Config::from_toml(&config(tls)).unwrap_err().0;
    let e = err(tls_section(&missing, &key, None, &[]));
    assert!(
        e.starts_with(&format!(
            "listen[0].tls.cert: cannot read {}: ",
            missing.display()
        )),
        "{e}"
    );
    let e = err(tls_section(&cert, &other_key, None, &[]));
    assert_eq!(
        e,
        format!(
            "listen[0].tls.key: {}: does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )
    );
    let e = err(tls_section(&cert, &cert, None, &[]));
    assert!(e.starts_with("listen[0].tls.key: no private key"), "{e}");
    let e = err(tls_section(&key, &key, None, &[]));
    assert!(e.starts_with("listen[0].tls.cert: no certificate"), "{e}");
    let e = err(tls_section(&cert, &key, Some(&missing), &[]));
    assert!(e.starts_with("listen[0].tls.client_ca: cannot read"), "{e}");
    let e = err(tls_section(&cert, &key, None, &["a.example"]));
    assert!(
        e.starts_with("listen[0].tls.allowed_client_names: needs client_ca"),
        "{e}"
    );
    let e = err(tls_section(&cert, &key, Some(&cert), &["a.*.example"]));
    assert!(
        e.starts_with("listen[0].tls.allowed_client_names: \"a.*.example\""),
        "{e}"
    );
    let e = err(format!(
        "{}colour = \"blue\"\n",
        tls_section(&cert, &key, None, &[])
    ));
    assert!(e.contains("unknown field `colour`"), "{e}");
    assert!(Config::from_toml(&config(tls_section(&cert, &key, Some(&cert), &[]))).is_ok());

    // The same through the binary's check-config.
    let file = f.write(
        "bad.toml",
        &config(tls_section(&cert, &other_key, None, &[])),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_syslog-sink"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("listen[0].tls.key: ")
            && stderr.contains("does not match the certificate in"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- interop: real clients

/// Fails (does not skip) when a tool the interop tests need is missing.
fn require(tool: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: apt-get install -y {package} (.ci/run installs it)");
}

/// Kills the child process when dropped (a failing test leaves nothing running).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a child to exit, at most `limit`.
fn wait_child(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pipes an octet-counted stream into `openssl s_client` and checks every message arrived.
async fn openssl_s_client(mtls: bool) {
    let openssl = require("openssl", "openssl");
    let (f, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let ca_file = f.write("ca.pem", &ca.pem);
    let client_ca = f.write("clients.pem", &clients.pem);
    let section = if mtls {
        tls_section(&cert, &key, Some(&client_ca), &["s-client.siem.example"])
    } else {
        tls_section(&cert, &key, None, &[])
    };
    let s = start_tls(&[format!("framing = \"octet\"\n{section}")]).await;
    let mut cmd = Command::new(openssl);
    cmd.args(["s_client", "-connect", &s.addr().to_string(), "-CAfile"])
        .arg(&ca_file)
        .args(["-verify_return_error", "-quiet", "-no_ign_eof"]);
    if mtls {
        let (c, k) = f.leaf(
            "client",
            &clients.leaf(Some("s-client.siem.example"), &[], false),
        );
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let n = 1000;
    let data = small_stream(1, n);
    let mut child = Reaper(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
        // Dropping stdin is EOF: with -no_ign_eof, s_client closes the session.
    });
    let recs = s.wait_for(n).await;
    writer.join().unwrap();
    let status = tokio::task::block_in_place(|| wait_child(&mut child.0, Duration::from_secs(10)));
    if recs.len() < n {
        let mut err = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!(
            "{} of {n} records from s_client (exit {status:?}); stderr:\n{err}",
            recs.len()
        );
    }
    let recs = s.stop().await;
    check_seqs(&recs, n);
    if mtls {
        assert!(recs
            .iter()
            .all(|r| r["peer_cert"] == "s-client.siem.example"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_openssl_s_client() {
    openssl_s_client(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_openssl_s_client_mtls() {
    openssl_s_client(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_syslog_ng_forwards_over_mtls() {
    let syslog_ng = require("syslog-ng", "syslog-ng-core");
    let (f, ca, clients) = (Files::new(), Ca::new("server CA"), Ca::new("client CA"));
    let (cert, key) = f.leaf("server", &ca.server_leaf());
    let ca_file = f.write("ca.pem", &ca.pem);
    let client_ca = f.write("clients.pem", &clients.pem);
    let (ccert, ckey) = f.leaf(
        "client",
        &clients.leaf(Some("syslog-ng.siem.example"), &[], false),
    );
    let s = start_tls(&[format!(
        "framing = \"octet\"\n{}",
        tls_section(&cert, &key, Some(&client_ca), &["*.siem.example"])
    )])
    .await;
    // RFC 5424 lines that syslog-ng parses (flags(syslog-protocol)) and forwards with its
    // syslog() driver: RFC 5424 with octet counting, over TLS.
    let n = 500;
    let mut input = String::new();
    for i in 1..=n {
        input.push_str(&format!(
            "<14>1 2024-03-11T08:00:00Z node-{} k8s.event/ns{}/pod-{i}/ - - - Started container app seq={i:08}\n",
            i % 3,
            i % 5
        ));
    }
    let input_file = f.write("input.log", &input);
    let conf = format!(
        r#"@version: 3.38
options {{ keep-hostname(yes); stats-freq(0); time-reopen(1); create-dirs(no); }};
source s_in {{ file("{input}" flags(syslog-protocol) follow-freq(1)); }};
destination d_sink {{
  syslog("127.0.0.1" port({port}) transport("tls")
    tls(ca-file("{ca}") peer-verify(required-trusted) cert-file("{ccert}") key-file("{ckey}")));
}};
log {{ source(s_in); destination(d_sink); }};
"#,
        input = input_file.display(),
        port = s.addr().port(),
        ca = ca_file.display(),
        ccert = ccert.display(),
        ckey = ckey.display(),
    );
    let conf_file = f.write("syslog-ng.conf", &conf);
    let log = std::fs::File::create(f.path("syslog-ng.log")).unwrap();
    let mut child = Reaper(
        Command::new(syslog_ng)
            .arg("-F")
            .arg("--no-caps")
            .arg("-f")
            .arg(&conf_file)
            .arg("-R")
            .arg(f.path("syslog-ng.persist"))
            .arg("-p")
            .arg(f.path("syslog-ng.pid"))
            .arg("-c")
            .arg(f.path("syslog-ng.ctl"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let recs = s.wait_for(n).await;
    // Stop it by PID (SIGTERM), as an init system would.
    let pid = child.0.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::task::block_in_place(|| wait_child(&mut child.0, Duration::from_secs(10)));
    if recs.len() < n {
        let log = std::fs::read_to_string(f.path("syslog-ng.log")).unwrap_or_default();
        panic!(
            "{} of {n} records from syslog-ng (exit {status:?}); its log:\n{log}",
            recs.len()
        );
    }
    let recs = s.stop().await;
    check_seqs(&recs, n);
    for r in &recs {
        assert_eq!(r["peer_cert"], "syslog-ng.siem.example", "{r}");
        assert!(
            r["app_name"]
                .as_str()
                .unwrap_or("")
                .starts_with("k8s.event/ns"),
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reloads_certificates_on_sighup() {
    let (f, ca1, ca2) = (Files::new(), Ca::new("first CA"), Ca::new("second CA"));
    let (cert, key) = f.leaf("server", &ca1.server_leaf());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let out = f.path("records.jsonl");
    let cfg = f.write(
        "c.toml",
        &format!(
            "[server]\nsummary_interval_secs = 0\n[[listen]]\naddress = \"{addr}\"\n{}\
             [[output]]\nname = \"f\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 50\n",
            tls_section(&cert, &key, None, &[]),
            out.display().to_string()
        ),
    );
    let log_path = f.path("stderr.log");
    let mut child = Reaper(
        Command::new(env!("CARGO_BIN_EXE_syslog-sink"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut old = None;
    for _ in 0..200 {
        if let Ok(c) = tls_connect(addr, &ca1.pem, None).await {
            old = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut old = old.unwrap_or_else(|| panic!("server did not start:\n{}", log()));
    old.write_all(&small_stream(1, 1)).await.unwrap();
    old.flush().await.unwrap();
    // A new certificate, then SIGHUP: new connections get it.
    f.leaf("server", &ca2.server_leaf());
    hup();
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(mut c) = tls_connect(addr, &ca2.pem, None).await {
            c.write_all(&small_stream(2, 1)).await.unwrap();
            c.shutdown().await.unwrap();
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "new certificate not served after SIGHUP:\n{}", log());
    // A key that does not match, then SIGHUP: reported, the certificate in use stays.
    f.write("server.key", &ca2.server_leaf().key);
    hup();
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains("TLS reload failed"))
        .await,
        "{}",
        log()
    );
    tls_send(addr, &ca2.pem, None, &small_stream(3, 1), 1).await;
    // The first connection still works.
    old.write_all(&small_stream(4, 1)).await.unwrap();
    old.shutdown().await.unwrap();
    assert!(wait_until(Duration::from_secs(20), || read_records(&out).len() >= 4).await);
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::block_in_place(|| wait_child(&mut child.0, Duration::from_secs(20)));
    let log = log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("TLS certificates reloaded"), "{log}");
    assert!(log.contains("does not match the certificate in"), "{log}");
    check_seqs(&read_records(&out), 4);
}
