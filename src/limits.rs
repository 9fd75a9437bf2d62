//! Limits per peer and per connection: what one sender may take of a listener.
//!
//! * [`PeerLimits`] (one per listener) counts each peer IP's open connections
//!   (`max_connections_per_ip`: the next one is refused) and gives each IP a token bucket
//!   (`max_messages_per_sec`): when a peer's connections have read more messages than the bucket
//!   holds, their readers pause before the next read. Pausing is backpressure: the kernel's
//!   socket buffer fills and TCP slows the sender; no message is ever dropped.
//! * [`read_room`] bounds a connection's read buffer (`max_buffered_bytes`): a read may only
//!   take what fits, so the bytes held for one connection never exceed the limit, whatever the
//!   sender declares.
//!
//! Every limit hit is counted in [`Metrics`] and logged at most once per [`LOG_INTERVAL`] per
//! peer IP ([`LogGate`]), so a hostile peer cannot flood the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::config::ListenConfig;
use crate::metrics::Metrics;

/// At most one log line per peer IP and limit per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// A log gate forgets peers it has not logged for this long once it tracks this many.
const LOG_GATE_PRUNE_AT: usize = 4096;

/// Rate-limits log lines per peer IP: [`LogGate::check`] says whether to log now and how many
/// hits were not logged since the last line.
#[derive(Debug)]
pub struct LogGate {
    interval: Duration,
    /// Per IP: when it was last logged, and hits since.
    last: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl LogGate {
    /// A gate that lets one line per IP through per `interval`.
    pub fn new(interval: Duration) -> LogGate {
        LogGate {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records a hit by `ip`; `Some(suppressed)` when a line should be logged now (`suppressed`
    /// hits were not logged since the previous line), `None` to stay quiet.
    pub fn check(&self, ip: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut last = lock(&self.last);
        if last.len() >= LOG_GATE_PRUNE_AT {
            let interval = self.interval;
            last.retain(|_, (t, _)| now.duration_since(*t) < interval);
        }
        match last.get_mut(&ip) {
            Some((t, n)) if now.duration_since(*t) < self.interval => {
                *n += 1;
                None
            }
            Some((t, n)) => {
                let suppressed = *n;
                *t = now;
                *n = 0;
                Some(suppressed)
            }
            None => {
                last.insert(ip, (now, 0));
                Some(0)
            }
        }
    }
}

/// A poisoned lock only means another connection panicked mid-update of plain counters: keep
/// going with what is there.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One peer IP's state on one listener; dropped when its last connection closes.
#[derive(Debug)]
struct Peer {
    /// Connections open from this IP.
    connections: usize,
    /// Token bucket: messages that may still be read now (negative: owed).
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled: Instant,
}

/// Per-listener, per-peer-IP limits: connection count and message rate.
#[derive(Debug)]
pub struct PeerLimits {
    /// `max_connections_per_ip`.
    max_per_ip: usize,
    /// `max_messages_per_sec`, `None` for no rate limit.
    rate: Option<f64>,
    /// Bucket size: one second's worth of messages (at least 1).
    burst: f64,
    peers: Mutex<HashMap<IpAddr, Peer>>,
    metrics: Arc<Metrics>,
    refusal_log: LogGate,
    rate_log: LogGate,
}

impl PeerLimits {
    /// The limits of a `[[listen]]` section.
    pub fn new(cfg: &ListenConfig, metrics: Arc<Metrics>) -> PeerLimits {
        let rate = cfg.max_messages_per_sec.map(|r| r as f64);
        PeerLimits {
            max_per_ip: cfg.max_connections_per_ip,
            rate,
            burst: rate.unwrap_or(1.0).max(1.0),
            peers: Mutex::new(HashMap::new()),
            metrics,
            refusal_log: LogGate::new(LOG_INTERVAL),
            rate_log: LogGate::new(LOG_INTERVAL),
        }
    }

    /// Admits a new connection from `ip`, or refuses it (counted, logged at most once per
    /// interval per IP) when `ip` already has `max_connections_per_ip` open. The guard gives the
    /// slot back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerGuard> {
        let mut peers = lock(&self.peers);
        let burst = self.burst;
        let peer = peers.entry(ip).or_insert_with(|| Peer {
            connections: 0,
            tokens: burst,
            refilled: Instant::now(),
        });
        if peer.connections >= self.max_per_ip {
            drop(peers);
            self.metrics
                .connections_refused_per_ip
                .fetch_add(1, Relaxed);
            if let Some(suppressed) = self.refusal_log.check(ip) {
                tracing::warn!(peer_ip = %ip, max_connections_per_ip = self.max_per_ip,
                    refused_since_last_log = suppressed,
                    "per-IP connection limit reached: refusing connection");
            }
            return None;
        }
        peer.connections += 1;
        Some(PeerGuard {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` (0 when none).
    pub fn connections(&self, ip: IpAddr) -> usize {
        lock(&self.peers).get(&ip).map_or(0, |p| p.connections)
    }
}

/// One admitted connection's share of its peer's limits.
#[derive(Debug)]
pub struct PeerGuard {
    limits: Arc<PeerLimits>,
    ip: IpAddr,
}

impl PeerGuard {
    /// Takes `messages` from the peer's bucket; `Some(wait)` when the bucket is empty: the
    /// reader should not read again before `wait` has passed (the pause is counted, and logged
    /// at most once per interval per IP). `None` without a rate limit or while under it.
    pub fn throttle(&self, messages: usize) -> Option<Duration> {
        let rate = self.limits.rate?;
        let wait = {
            let mut peers = lock(&self.limits.peers);
            let peer = peers.get_mut(&self.ip)?;
            let now = Instant::now();
            let earned = now.duration_since(peer.refilled).as_secs_f64() * rate;
            peer.tokens = (peer.tokens + earned).min(self.limits.burst) - messages as f64;
            peer.refilled = now;
            if peer.tokens >= 0.0 {
                return None;
            }
            Duration::from_secs_f64(-peer.tokens / rate)
        };
        let m = &self.limits.metrics;
        m.rate_limit_pauses.fetch_add(1, Relaxed);
        m.rate_limit_paused_ms
            .fetch_add(wait.as_millis().min(u128::from(u64::MAX)) as u64, Relaxed);
        if let Some(suppressed) = self.limits.rate_log.check(self.ip) {
            tracing::info!(peer_ip = %self.ip, max_messages_per_sec = rate,
                pause_ms = wait.as_millis() as u64, pauses_since_last_log = suppressed,
                "per-IP message rate reached: pausing reads (backpressure, nothing dropped)");
        }
        Some(wait)
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut peers = lock(&self.limits.peers);
        if let Some(p) = peers.get_mut(&self.ip) {
            p.connections = p.connections.saturating_sub(1);
            if p.connections == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Prepares `buf` for the next read of at most `read_size` bytes and returns how many bytes
/// that read may take so that `buf` never holds more than `max_buffered` bytes (the read takes
/// the smaller of that and the spare capacity). Grows the buffer only when less than half a
/// read is spare, and then by what the read may take, so an idle connection or one holding a
/// partial frame does not get more memory. A read clamped by the limit is counted in
/// [`Metrics::buffer_limit_hits`].
///
/// Between reads the framing decoder keeps at most `max_frame_bytes` plus a 21-octet header of
/// one frame, and `max_buffered` is at least `max_frame_bytes + 64` (checked by the config), so
/// the room is never 0; it is at least 1 in any case, so a read never looks like EOF.
pub fn read_room(
    buf: &mut BytesMut,
    read_size: usize,
    max_buffered: usize,
    metrics: &Metrics,
) -> usize {
    let room = max_buffered.saturating_sub(buf.len()).min(read_size).max(1);
    if room < read_size {
        metrics.buffer_limit_hits.fetch_add(1, Relaxed);
    }
    if buf.capacity() - buf.len() < room.min(read_size / 2).max(1) {
        buf.reserve(room);
    }
    room
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(extra: &str) -> ListenConfig {
        let text = format!("address = \"127.0.0.1:0\"\n{extra}");
        toml::from_str(&text).expect("listen config")
    }

    fn limits(extra: &str) -> (Arc<PeerLimits>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (
            Arc::new(PeerLimits::new(&listen(extra), metrics.clone())),
            metrics,
        )
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn config_defaults_and_checks() {
        use crate::config::Config;
        let conf = |listen: &str| {
            Config::from_toml(&format!(
                "[[listen]]\naddress = \"127.0.0.1:0\"\n{listen}\n\
                 [[output]]\nname = \"o\"\ntype = \"stdout\"\n"
            ))
        };
        let c = conf("").expect("defaults");
        let l = &c.listen[0];
        assert_eq!(l.max_connections_per_ip, 64);
        assert_eq!(l.max_buffered(), 65536 + 131072);
        assert_eq!(l.max_messages_per_sec, None);
        let c = conf("max_frame_bytes = 1000\nmax_buffered_bytes = 1064").expect("smallest");
        assert_eq!(c.listen[0].max_buffered(), 1064);
        for (bad, key) in [
            (
                "max_connections_per_ip = 0",
                "listen[0].max_connections_per_ip",
            ),
            (
                "max_frame_bytes = 1000\nmax_buffered_bytes = 1063",
                "listen[0].max_buffered_bytes",
            ),
            (
                "max_buffered_bytes = 2000000000",
                "listen[0].max_buffered_bytes",
            ),
            ("max_messages_per_sec = 0", "listen[0].max_messages_per_sec"),
        ] {
            let e = conf(bad).expect_err(bad);
            assert!(e.0.starts_with(key), "{bad}: {e}");
        }
    }

    #[test]
    fn per_ip_connection_limit() {
        let (l, m) = limits("max_connections_per_ip = 2");
        let a1 = l.admit(A).expect("first");
        let a2 = l.admit(A).expect("second");
        assert!(l.admit(A).is_none(), "third from the same IP");
        assert!(l.admit(A).is_none());
        let b1 = l.admit(B).expect("another IP has its own count");
        assert_eq!(m.connections_refused_per_ip.load(Relaxed), 2);
        assert_eq!(l.connections(A), 2);
        drop(a1);
        assert_eq!(l.connections(A), 1);
        let a3 = l.admit(A).expect("a slot came back");
        drop((a2, a3, b1));
        assert_eq!(l.connections(A), 0);
        assert!(lock(&l.peers).is_empty(), "state of closed peers is freed");
    }

    #[test]
    fn token_bucket_pauses_without_dropping() {
        let (l, m) = limits("max_messages_per_sec = 100");
        let g = l.admit(A).expect("admit");
        // The first second's worth passes at once.
        assert_eq!(g.throttle(60), None);
        assert_eq!(g.throttle(40), None);
        // Then 50 more are owed: half a second.
        let wait = g.throttle(50).expect("over the rate");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(m.rate_limit_pauses.load(Relaxed), 1);
        // A second connection from the same IP shares the bucket.
        let g2 = l.admit(A).expect("admit");
        assert!(g2.throttle(1).is_some());
        // Without a limit, never.
        let (free, _) = limits("");
        let g = free.admit(A).expect("admit");
        assert_eq!(g.throttle(1_000_000), None);
    }

    #[test]
    fn log_gate_once_per_interval_per_ip() {
        let gate = LogGate::new(Duration::from_millis(50));
        assert_eq!(gate.check(A), Some(0));
        assert_eq!(gate.check(A), None);
        assert_eq!(gate.check(A), None);
        assert_eq!(gate.check(B), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(gate.check(A), Some(2), "two hits were not logged");
        // Bounded: thousands of peers do not grow it without limit once they are old.
        for i in 0..(LOG_GATE_PRUNE_AT as u32 + 10) {
            gate.check(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        std::thread::sleep(Duration::from_millis(60));
        gate.check(A);
        assert!(lock(&gate.last).len() <= 2);
    }

    #[test]
    fn read_room_never_lets_the_buffer_pass_the_limit() {
        let metrics = Metrics::default();
        let (read, max) = (4096, 10_000);
        let mut buf = BytesMut::new();
        // A decoder that keeps everything (the worst case): the buffer stops at the limit.
        for _ in 0..10 {
            let room = read_room(&mut buf, read, max, &metrics);
            // A read takes at most the room and the spare capacity.
            let n = room.min(buf.capacity() - buf.len());
            assert!(n > 0 || buf.len() == max);
            buf.extend_from_slice(&vec![b'x'; n.min(max - buf.len())]);
            assert!(buf.len() <= max, "{}", buf.len());
        }
        assert_eq!(buf.len(), max);
        assert!(metrics.buffer_limit_hits.load(Relaxed) >= 1);
        assert!(buf.capacity() <= 2 * max, "capacity {}", buf.capacity());
        // With room to spare the read is the configured size, not clamped.
        let mut buf = BytesMut::new();
        assert_eq!(read_room(&mut buf, read, max, &metrics), read);
        assert!(buf.capacity() >= read);
        // Half a read or more spare (a partial frame waiting for its end): no growth.
        let mut buf = BytesMut::with_capacity(2 * read);
        buf.extend_from_slice(&vec![b'x'; read + 100]);
        let cap = buf.capacity();
        read_room(&mut buf, read, max, &metrics);
        assert_eq!(buf.capacity(), cap);
    }
}
