//! syslog-sink: receives RFC 5424 syslog over TCP, understands Kubernetes (PKS/TKGI) events and
//! fans every record out to outputs without losing any.
//!
//! The modules follow the data path:
//! [`server`] (listeners, connections, limits, shutdown) → [`framing`] (RFC 6587 decoders) →
//! [`parse`] (RFC 5424 / 3164 into a borrowed [`parse::Message`]) → [`classify`] (k8s events) →
//! [`record`] (the JSON record) → [`route`] (fan-out, bounded queues) → [`output`] (file, stdout),
//! with [`config`] and [`metrics`] beside them, and [`tls`] (RFC 5425) and [`limits`] (per-peer
//! limits) beside [`server`]. [`admin`] serves metrics, health and a status page over HTTP from
//! [`metrics`] and [`stats`]; [`reload`] swaps classification rules and output filters on
//! SIGHUP. `main.rs` only parses the command line.

pub mod admin;
pub mod buffer;
pub mod classify;
pub mod cli;
pub mod config;
pub mod framing;
pub mod limits;
pub mod metrics;
pub mod output;
pub mod parse;
pub mod record;
pub mod reload;
pub mod route;
pub mod server;
pub mod stats;
pub mod tls;
