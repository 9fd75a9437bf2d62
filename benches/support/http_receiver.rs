//! The local HTTP receiver of the benchmarks (`benches/http_throughput.rs`,
//! `benches/buffer.rs`): hyper's HTTP/1.1 server on 127.0.0.1 that reads every request body
//! and answers 200 (`{"errors":false}` for `_bulk`), counting the body bytes. It does not
//! decompress.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts the receiver; returns its address, the body bytes it read, and its task (abort it to
/// stop).
pub async fn receiver(bulk: bool) -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    let h = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let b = b.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let b = b.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        b.fetch_add(body.len() as u64, Relaxed);
                        let answer: &'static [u8] = if bulk {
                            b"{\"took\":1,\"errors\":false,\"items\":[]}"
                        } else {
                            b"{\"text\":\"Success\",\"code\":0}"
                        };
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(answer))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, bytes, h)
}
