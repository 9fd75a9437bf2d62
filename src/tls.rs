//! TLS listeners (RFC 5425): certificate loading, the acceptor, client-name allowlists and
//! certificate reload.
//!
//! A `[listen.tls]` section turns a listener into a TLS one (rustls with the `ring` provider).
//! Each connection is handled in its own task, after the connection-limit permit is taken, under
//! `handshake_timeout_secs` ([`TlsListener::accept`]):
//!
//! 1. the first byte is peeked: a TLS handshake starts with `0x16`; anything else is a sender
//!    configured without TLS (vRLI calls what it then receives "garbage"), which gets one log
//!    line and is closed (counted in `tls_plaintext_clients`);
//! 2. rustls does the handshake. With `client_ca` a client must present a certificate issued by
//!    one of those CAs; with `allowed_client_names` its subject CN or one of its DNS SANs must
//!    also match the list ([`name_matches`]). Refusals are counted in `tls_handshake_failures`
//!    and logged with the peer and the reason, at most one line per [`LOG_INTERVAL`] per listener
//!    and kind (the next line says how many were not logged);
//! 3. the verified client identity ([`client_identity`]: the CN, else the first DNS SAN) goes
//!    into every record of the connection as `peer_cert`.
//!
//! The `Arc<ServerConfig>` sits behind an [`ArcSwap`] read once per accept. [`TlsReload::reload`]
//! (what SIGHUP does in `server::serve`) re-reads every listener's files; established
//! connections keep the config they started with, and a bad new file is reported while the
//! old certificate stays in use.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, InconsistentKeys, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsConfig};
use crate::metrics::Metrics;

/// The first byte of a TLS record that carries a handshake message (ClientHello).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;
/// At most one refusal log line of each kind per listener per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// A `[listen.tls]` file that cannot be used: the key (`cert`, `key`, `client_ca`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The key of `[listen.tls]` at fault.
    pub key: &'static str,
    /// Why, naming the file.
    pub reason: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for TlsError {}

fn tls_err(key: &'static str, reason: String) -> TlsError {
    TlsError { key, reason }
}

/// The crypto provider of every TLS listener (`ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| tls_err(key, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate of a PEM file; an error when there is none.
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(key, format!("{}: bad PEM ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(
            key,
            format!("no certificate (BEGIN CERTIFICATE) in {}", path.display()),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => tls_err(
            "key",
            format!(
                "no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in {}",
                path.display()
            ),
        ),
        e => tls_err("key", format!("{}: bad PEM ({e})", path.display())),
    })
}

/// Reads the files of `cfg` and builds the rustls server config: the certificate chain and its
/// key (which must match), and with `client_ca` a verifier that requires client certificates
/// (plus the name allowlist when `allowed_client_names` is set).
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let certs = load_certs("cert", &cfg.cert)?;
    let key = load_key(&cfg.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            tls_err(
                "key",
                format!("{}: unusable private key ({e})", cfg.key.display()),
            )
        })?;
    match CertifiedKey::new(certs.clone(), signing_key).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(tls_err(
                "key",
                format!(
                    "{}: does not match the certificate in {}",
                    cfg.key.display(),
                    cfg.cert.display()
                ),
            ))
        }
        Err(e) => {
            return Err(tls_err(
                "cert",
                format!("{}: unusable certificate ({e})", cfg.cert.display()),
            ))
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("cert", format!("TLS setup failed: {e}")))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs("client_ca", ca)? {
                roots.add(c).map_err(|e| {
                    tls_err(
                        "client_ca",
                        format!("{}: unusable CA certificate ({e})", ca.display()),
                    )
                })?;
            }
            let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    tls_err(
                        "client_ca",
                        format!("{}: cannot verify clients with it ({e})", ca.display()),
                    )
                })?;
            let verifier: Arc<dyn ClientCertVerifier> = if cfg.allowed_client_names.is_empty() {
                webpki
            } else {
                Arc::new(AllowlistVerifier {
                    inner: webpki,
                    allowed: cfg.allowed_client_names.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        tls_err(
            "cert",
            format!("{} with key {}: {e}", cfg.cert.display(), cfg.key.display()),
        )
    })?;
    // No TLS 1.3 session tickets: syslog senders only write, so tickets sent after the
    // handshake sit unread in the sender's socket, and its close then becomes a TCP reset that
    // throws away the tail of the stream before the server has read it.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Checks an `allowed_client_names` entry: a DNS-like name, or `*.` followed by one.
pub fn check_name_pattern(pattern: &str) -> Result<(), &'static str> {
    let rest = pattern.strip_prefix("*.").unwrap_or(pattern);
    if rest.is_empty() {
        return Err("empty name");
    }
    if rest.contains('*') {
        return Err("a wildcard must be the whole first label (\"*.example.com\")");
    }
    if rest.split('.').any(str::is_empty) {
        return Err("empty label");
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("whitespace or control character");
    }
    Ok(())
}

/// Whether a certificate name matches an allowlist entry: equal (ASCII case-insensitive), or
/// for `*.suffix`, one non-empty label without `*` followed by `.suffix`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && !label.contains('*') && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

/// The names of a client certificate that the allowlist and `peer_cert` use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject's common name (the first CN when there are several).
    pub common_name: Option<String>,
    /// The DNS names of the subject alternative name extension, in order.
    pub dns_names: Vec<String>,
}

impl CertNames {
    /// Reads the names of a DER certificate; `None` when it does not parse.
    pub fn of(cert: &CertificateDer<'_>) -> Option<CertNames> {
        let ee = webpki::EndEntityCert::try_from(cert).ok()?;
        Some(CertNames {
            common_name: subject_common_name(ee.subject()),
            dns_names: ee.valid_dns_names().map(str::to_string).collect(),
        })
    }

    /// The identity written as `peer_cert`: the CN, else the first DNS SAN.
    pub fn identity(&self) -> Option<&str> {
        self.common_name
            .as_deref()
            .or(self.dns_names.first().map(String::as_str))
    }

    /// Whether the CN or a DNS SAN matches one of `allowed`.
    pub fn allowed_by(&self, allowed: &[String]) -> bool {
        self.common_name
            .iter()
            .chain(&self.dns_names)
            .any(|n| allowed.iter().any(|p| name_matches(p, n)))
    }
}

impl fmt::Display for CertNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CN={} DNS SANs=[{}]",
            self.common_name.as_deref().unwrap_or("(none)"),
            self.dns_names.join(", ")
        )
    }
}

/// The identity of a connection's verified client certificate (see [`CertNames::identity`]).
pub fn client_identity(stream: &TlsStream<TcpStream>) -> Option<String> {
    let (_, conn) = stream.get_ref();
    let cert = conn.peer_certificates()?.first()?;
    CertNames::of(cert)?.identity().map(str::to_string)
}

/// One DER TLV: (tag, contents, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The first commonName (OID 2.5.4.3) of a DER Name's contents (the RDNSequence without its
/// outer SEQUENCE header, as webpki gives it).
fn subject_common_name(mut rdns: &[u8]) -> Option<String> {
    const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];
    while !rdns.is_empty() {
        let (tag, set, rest) = der_next(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, rest) = der_next(atvs)?;
            atvs = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_next(atv)?;
            if oid_tag != 0x06 || oid != CN_OID {
                continue;
            }
            let (vtag, v, _) = der_next(value)?;
            return match vtag {
                // UTF8String, PrintableString, IA5String, TeletexString (treated as Latin-1).
                0x0c | 0x13 | 0x16 => std::str::from_utf8(v).ok().map(str::to_string),
                0x14 => Some(v.iter().map(|&b| char::from(b)).collect()),
                // BMPString: UTF-16BE.
                0x1e if v.len() % 2 == 0 => String::from_utf16(
                    &v.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect::<Vec<_>>(),
                )
                .ok(),
                _ => None,
            };
        }
    }
    None
}

/// Why a client certificate's names were refused.
#[derive(Debug)]
struct NameNotAllowed(CertNames);

impl fmt::Display for NameNotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client certificate name not in allowed_client_names ({})",
            self.0
        )
    }
}

impl std::error::Error for NameNotAllowed {}

/// The CA verifier, then the name allowlist: a refusal fails the handshake.
#[derive(Debug)]
struct AllowlistVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowlistVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = CertNames::of(end_entity).unwrap_or_default();
        if names.allowed_by(&self.allowed) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NameNotAllowed(names))),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Lets one log line through per interval and counts the ones held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    /// A limiter of one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held back since the
    /// last line; `None` when it is to be held back.
    pub fn check(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.0 {
            Some(t) if t.elapsed() < self.interval => {
                st.1 += 1;
                None
            }
            _ => {
                let held = st.1;
                *st = (Some(Instant::now()), 0);
                Some(held)
            }
        }
    }
}

/// The TLS side of one listener: its settings, the current config, its log limiters.
#[derive(Debug)]
pub struct TlsListener {
    /// `listen[N].tls`, for messages.
    key: String,
    /// The settings, re-read by [`TlsListener::reload`].
    cfg: TlsConfig,
    /// The config new connections use.
    current: ArcSwap<ServerConfig>,
    /// Plain-text client lines.
    plaintext_log: LogLimiter,
    /// Handshake failure lines.
    failure_log: LogLimiter,
}

/// Why a TLS connection did not get past its start.
#[derive(Debug)]
enum Refused {
    /// Closed before sending anything.
    Empty,
    /// The first byte is not a TLS handshake.
    PlainText(u8),
    /// The handshake failed.
    Handshake(std::io::Error),
    /// The handshake did not finish in time.
    Timeout,
}

impl TlsListener {
    /// Loads the files of `cfg`; `key` is the section's config key (`listen[0].tls`).
    pub fn new(key: String, cfg: &TlsConfig) -> Result<TlsListener, ConfigError> {
        let config = server_config(cfg).map_err(|e| ConfigError(format!("{key}.{e}")))?;
        Ok(TlsListener {
            key,
            cfg: cfg.clone(),
            current: ArcSwap::new(config),
            plaintext_log: LogLimiter::new(LOG_INTERVAL),
            failure_log: LogLimiter::new(LOG_INTERVAL),
        })
    }

    /// Re-reads the certificate, key and CA files. On success new connections use them; on
    /// error the config in use stays and the error names the key and the file.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config =
            server_config(&self.cfg).map_err(|e| ConfigError(format!("{}.{e}", self.key)))?;
        self.current.store(config);
        Ok(())
    }

    /// The handshake of one accepted connection, under the handshake timeout: peeks the first
    /// byte (plain-text senders are logged and closed), then runs rustls. `None` when the
    /// connection was refused (counted and logged here).
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        metrics: &Metrics,
    ) -> Option<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.current.load_full());
        let handshake = async {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(0) => return Err(Refused::Empty),
                Ok(_) if first[0] != TLS_HANDSHAKE_BYTE => {
                    return Err(Refused::PlainText(first[0]))
                }
                Ok(_) => {}
                Err(e) => return Err(Refused::Handshake(e)),
            }
            acceptor.accept(stream).await.map_err(Refused::Handshake)
        };
        let timeout = self.cfg.handshake_timeout();
        let refused = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(r)) => r,
            Err(_) => Refused::Timeout,
        };
        match refused {
            Refused::Empty => {
                tracing::debug!(%peer, "connection closed before the TLS handshake");
            }
            Refused::PlainText(byte) => {
                metrics.tls_plaintext_clients.fetch_add(1, Relaxed);
                if let Some(held) = self.plaintext_log.check() {
                    tracing::warn!(listener = %self.key, first_byte = byte, not_logged = held,
                        "plain-text syslog on a TLS port from {peer}: is the sender configured without TLS?");
                }
            }
            Refused::Handshake(e) => {
                metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                if let Some(held) = self.failure_log.check() {
                    tracing::warn!(listener = %self.key, %peer, reason = %refusal_reason(&e), not_logged = held,
                        "TLS handshake failed; connection refused");
                }
            }
            Refused::Timeout => {
                metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                if let Some(held) = self.failure_log.check() {
                    tracing::warn!(listener = %self.key, %peer, reason = "timeout",
                        handshake_timeout_secs = self.cfg.handshake_timeout_secs, not_logged = held,
                        "TLS handshake not finished in time; connection closed");
                }
            }
        }
        None
    }
}

/// A handshake error as the log shows it: our own verifier's reason unwrapped from rustls'
/// `Other(OtherError(..))`, anything else as rustls or the OS says it.
fn refusal_reason(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(why)))) => {
            why.to_string()
        }
        _ => e.to_string(),
    }
}

/// Reloads the certificates of every TLS listener of a server; cheap to clone. SIGHUP calls
/// [`TlsReload::reload`].
#[derive(Debug, Clone, Default)]
pub struct TlsReload {
    listeners: Vec<Arc<TlsListener>>,
}

impl TlsReload {
    /// A reloader for these listeners.
    pub fn new(listeners: Vec<Arc<TlsListener>>) -> Self {
        TlsReload { listeners }
    }

    /// Re-reads every TLS listener's files and logs the outcome. Each listener whose files are
    /// bad keeps the certificate it had; the errors are returned joined by `; `.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        for l in &self.listeners {
            match l.reload() {
                Ok(()) => tracing::info!(listener = %l.key, cert = %l.cfg.cert.display(),
                    "TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(listener = %l.key, "TLS reload failed, keeping the certificates in use: {e}");
                    errors.push(e.0);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_one_label() {
        assert!(name_matches("*.siem.example", "a.siem.example"));
        assert!(name_matches("*.siem.example", "A.SIEM.example"));
        assert!(!name_matches("*.siem.example", "a.b.siem.example"));
        assert!(!name_matches("*.siem.example", "siem.example"));
        assert!(!name_matches("*.siem.example", ".siem.example"));
        assert!(!name_matches("*.siem.example", "*.siem.examplex"));
        assert!(name_matches(
            "fluent-bit.pks-system",
            "Fluent-Bit.pks-system"
        ));
        assert!(!name_matches(
            "fluent-bit.pks-system",
            "x.fluent-bit.pks-system"
        ));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_name_pattern("*.siem.example").is_ok());
        assert!(check_name_pattern("fluent-bit.pks-system").is_ok());
        assert!(check_name_pattern("*").is_err());
        assert!(check_name_pattern("a.*.b").is_err());
        assert!(check_name_pattern("x*.b").is_err());
        assert!(check_name_pattern("a..b").is_err());
        assert!(check_name_pattern("").is_err());
    }

    #[test]
    fn limiter_lets_one_line_through_per_interval() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        let l2 = LogLimiter::new(Duration::ZERO);
        assert_eq!(l2.check(), Some(0));
        assert_eq!(l2.check(), Some(0));
    }

    #[test]
    fn der_common_name() {
        // SET { SEQ { OID 2.5.4.6, PrintableString "DE" } }, SET { SEQ { OID 2.5.4.3, UTF8String "ab" } }
        let rdns = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'D', b'E', 0x31,
            0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'a', b'b',
        ];
        assert_eq!(subject_common_name(&rdns).as_deref(), Some("ab"));
        assert_eq!(subject_common_name(&rdns[..13]), None);
        assert_eq!(subject_common_name(&rdns[..20]), None);
    }
}
