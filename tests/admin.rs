//! The admin listener: `/metrics` counts a known stream exactly, `/readyz` follows an output
//! going down and coming back, `/healthz`, the request limits, and the status page in a real
//! headless browser (Debian's `chromium`; the test fails when it is missing: `.ci/run`
//! installs it). The page's screenshot goes to `target/test-output/admin-status-page.png`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::oc;
use serde_json::Value;
use syslog_sink::admin::{self, AdminState};
use syslog_sink::config::Config;
use syslog_sink::server::{Server, Stopped};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server with its admin listener, both on ephemeral loopback ports.
struct WithAdmin {
    addr: SocketAddr,
    admin: SocketAddr,
    token: CancellationToken,
    handle: JoinHandle<Stopped>,
    _dir: tempfile::TempDir,
}

/// Starts `config` (`{out}` is replaced by a file path in a temporary folder) with an admin
/// listener on 127.0.0.1:0.
async fn start(config: &str) -> WithAdmin {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("records.jsonl");
    // Disk buffers (syslog outputs have one by default) in the temporary folder too.
    let text = config.replace("{out}", &out.display().to_string()).replace(
        "[server]\n",
        &format!(
            "[server]\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let listener = admin::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("admin bind");
    let admin_addr = listener.local_addr().expect("admin addr");
    let server = Server::start(&config).await.expect("server start");
    let state = AdminState::new(&config, &server, None);
    let token = server.shutdown_token();
    tokio::spawn(admin::run(listener, state, token.clone()));
    let addr = server.local_addrs()[0];
    let handle = tokio::spawn(server.run(Duration::from_secs(10)));
    WithAdmin {
        addr,
        admin: admin_addr,
        token,
        handle,
        _dir: dir,
    }
}

impl WithAdmin {
    async fn stop(self) {
        self.token.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("server stops in time")
            .expect("server task");
        assert_eq!(stopped, Stopped::Clean);
    }
}

/// `GET path` over a fresh connection: (status, body). Bounded by 5 s.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect admin");
        // The server may answer and close before reading all of an oversized request.
        let _ = s.write_all(raw.as_bytes()).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("admin answers within 5 s")
}

/// The value of the sample line `name{labels}` (exactly as written) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `series` has `value` (at most 10 s); returns the last scrape.
async fn wait_metric(admin: SocketAddr, series: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(admin, "/metrics").await;
        if sample(&text, series) == Some(value) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn event(ns: &str, object: &str, text: &str) -> String {
    format!(
        "<14>1 2024-03-11T08:00:00+00:00 h k8s.event/{ns}/{object}/ - - [kubernetes@47450 \
         namespace_name=\"{ns}\" object_name=\"{object}\" container_name=\"\"] {text}"
    )
}

#[tokio::test]
async fn metrics_count_a_known_stream_exactly() {
    let s = start(
        "[server]\nsummary_interval_secs = 0\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\nmax_frame_bytes = 512\n\
         [[output]]\nname = \"all\"\ntype = \"file\"\npath = \"{out}\"\nflush_interval_ms = 20\n\
         [[output]]\nname = \"failures\"\ntype = \"stdout\"\nfilter = { category = [\"err_image_pull\"] }\n",
    )
    .await;
    let (code, body) = get(s.admin, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let mut stream = Vec::new();
    for i in 0..3 {
        stream.extend(oc(&event(
            "web",
            &format!("web-{i}"),
            "Error: ErrImagePull",
        )));
    }
    for _ in 0..2 {
        stream.extend(oc(&event(
            "web",
            "web-0",
            "Back-off restarting failed container",
        )));
    }
    stream.extend(oc(&event(
        "db",
        "db-0",
        "Back-off restarting failed container",
    )));
    stream.extend(oc(&event("db", "db-0", "Started container postgres")));
    for _ in 0..4 {
        stream.extend(oc(
            "<14>1 2024-03-11T08:00:00+00:00 h pod.log/db/db-0/postgres - - - checkpoint done",
        ));
    }
    stream.extend(oc("<13>1 2024-03-11T08:00:00+00:00 h app - - - plain"));
    stream.extend(oc("not syslog at all"));
    let long = format!("<13>1 - h app - - - {}", "x".repeat(600));
    stream.extend(oc(&long)); // over max_frame_bytes: truncated
    stream.extend(b"0 \n"); // MSG-LEN 0: a framing error
    let frames = 3 + 2 + 1 + 1 + 4 + 1 + 1 + 1 + 1;
    common::send(s.addr, &stream, || 1000).await;

    let text = wait_metric(s.admin, "syslog_sink_records_total", frames as f64).await;
    let l = format!("{{listener=\"{}\"}}", s.addr);
    for (series, value) in [
        ("syslog_sink_records_total".to_string(), frames as f64),
        (
            format!("syslog_sink_frames_received_total{l}"),
            frames as f64,
        ),
        (
            format!("syslog_sink_bytes_received_total{l}"),
            stream.len() as f64,
        ),
        (format!("syslog_sink_connections_accepted_total{l}"), 1.0),
        (format!("syslog_sink_connections_refused_total{l}"), 0.0),
        (
            "syslog_sink_events_total{category=\"err_image_pull\"}".into(),
            3.0,
        ),
        (
            "syslog_sink_events_total{category=\"back_off\"}".into(),
            3.0,
        ),
        ("syslog_sink_events_total{category=\"started\"}".into(), 1.0),
        ("syslog_sink_events_total{category=\"oom\"}".into(), 0.0),
        ("syslog_sink_k8s_records_total{kind=\"event\"}".into(), 7.0),
        (
            "syslog_sink_k8s_records_total{kind=\"pod_log\"}".into(),
            4.0,
        ),
        (
            "syslog_sink_parse_errors_total{kind=\"syntax\"}".into(),
            1.0,
        ),
        (
            "syslog_sink_parse_errors_total{kind=\"msg_len_zero\"}".into(),
            1.0,
        ),
        (
            "syslog_sink_truncated_frames_total{reason=\"frame_too_long\"}".into(),
            1.0,
        ),
        (
            "syslog_sink_limit_hits_total{kind=\"max_frame_bytes\"}".into(),
            1.0,
        ),
        (
            "syslog_sink_limit_hits_total{kind=\"max_connections\"}".into(),
            0.0,
        ),
        (
            "syslog_sink_namespace_records_total{namespace=\"web\"}".into(),
            5.0,
        ),
        (
            "syslog_sink_namespace_records_total{namespace=\"db\"}".into(),
            6.0,
        ),
        (
            "syslog_sink_namespace_records_total{namespace=\"other\"}".into(),
            0.0,
        ),
        (
            "syslog_sink_namespace_events_total{namespace=\"web\",category=\"err_image_pull\"}"
                .into(),
            3.0,
        ),
        (
            "syslog_sink_namespace_events_total{namespace=\"web\",category=\"back_off\"}".into(),
            2.0,
        ),
        (
            "syslog_sink_namespace_events_total{namespace=\"db\",category=\"back_off\"}".into(),
            1.0,
        ),
        ("syslog_sink_failure_events_total".into(), 6.0),
        (
            "syslog_sink_output_records_total{output=\"all\"}".into(),
            frames as f64,
        ),
        (
            "syslog_sink_output_records_total{output=\"failures\"}".into(),
            3.0,
        ),
        (
            "syslog_sink_output_errors_total{output=\"all\"}".into(),
            0.0,
        ),
        ("syslog_sink_output_up{output=\"all\"}".into(), 1.0),
        (
            "syslog_sink_output_state{output=\"all\",state=\"up\"}".into(),
            1.0,
        ),
        (
            "syslog_sink_output_queue_capacity{output=\"all\"}".into(),
            64.0,
        ),
        ("syslog_sink_rules_generation".into(), 0.0),
        (
            "syslog_sink_limit_hits_total{kind=\"max_inflight_bytes\"}".into(),
            0.0,
        ),
        ("syslog_sink_inflight_bytes_limit".into(), 16_777_216.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    // Every family has HELP and TYPE; the OpenMetrics end marker is there.
    assert!(text.contains("# TYPE syslog_sink_output_retries counter"));
    assert!(text.trim_end().ends_with("# EOF"));
    // The connection closed: the gauge went back to 0.
    let text = wait_metric(s.admin, &format!("syslog_sink_connections_open{l}"), 0.0).await;
    assert_eq!(
        sample(&text, &format!("syslog_sink_connections_open{l}")),
        Some(0.0)
    );

    // The status JSON says the same.
    let (code, body) = get(s.admin, "/api/status").await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(v["totals"]["records"], frames);
    assert_eq!(v["failing_namespaces"][0]["namespace"], "web");
    assert_eq!(v["failing_namespaces"][0]["err_image_pull"], 3);
    assert_eq!(v["failing_namespaces"][0]["back_off"], 2);
    assert_eq!(v["failing_namespaces"][1]["namespace"], "db");
    assert_eq!(v["recent_failures"].as_array().map(Vec::len), Some(6));
    assert_eq!(v["recent_failures"][0]["namespace"], "db");
    assert_eq!(v["recent_failures"][0]["category"], "back_off");
    assert_eq!(v["recent_failures"][5]["object"], "web-0");
    assert_eq!(v["recent_failures"][5]["message"], "Error: ErrImagePull");
    s.stop().await;
}

#[tokio::test]
async fn admin_requests_are_bounded() {
    let s = start(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[output]]\nname = \"o\"\ntype = \"file\"\npath = \"{out}\"\n",
    )
    .await;
    assert_eq!(get(s.admin, "/nope").await.0, 404);
    let (code, _) = request(
        s.admin,
        "POST /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(code, 405);
    // A request head larger than the buffer is refused, not buffered.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, _) = request(s.admin, &huge).await;
    assert_eq!(code, 431, "oversized request head");
    let (code, page) = get(s.admin, "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("<title>syslog-sink status</title>"));
    // Self-contained: nothing loaded from elsewhere.
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("@import")
    );
    s.stop().await;
}

/// A syslog receiver on `addr` that reads and discards; aborted to take it down.
fn receiver(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        // A JoinSet: aborting the receiver drops it, which aborts (closes) every connection.
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut c, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    })
}

/// Polls `/readyz` until its status is `want` (at most 10 s); returns the body.
async fn wait_ready(admin: SocketAddr, want: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(admin, "/readyz").await;
        if code == want {
            return serde_json::from_str(&body).expect("readyz JSON");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {code}, wanted {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn readyz_turns_unready_while_an_output_is_down_and_ready_after() {
    let rx = TcpListener::bind("127.0.0.1:0").await.expect("receiver");
    let rx_addr = rx.local_addr().expect("receiver addr");
    let mut recv = receiver(rx);
    let s = start(&format!(
        "[server]\nsummary_interval_secs = 0\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[output]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{rx_addr}\"\n\
         max_backoff_ms = 100\nconfirm_after_ms = 20\nflush_interval_ms = 20\n"
    ))
    .await;
    let body = wait_ready(s.admin, 200).await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["outputs"][0]["state"], "up");
    let msg = oc("<13>1 - h app - - - hello");
    common::send(s.addr, &msg, || 1000).await;
    wait_metric(
        s.admin,
        "syslog_sink_output_records_total{output=\"siem\"}",
        1.0,
    )
    .await;

    // The receiver goes away; the next record finds the connection closed and cannot reconnect.
    recv.abort();
    let _ = (&mut recv).await;
    common::send(s.addr, &msg, || 1000).await;
    let body = wait_ready(s.admin, 503).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["outputs"][0]["state"], "retrying");
    let why = body["not_ready"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("\"siem\"") && why.contains("retrying"),
        "{why}"
    );
    assert!(body["outputs"][0]["last_error"].as_str().is_some());
    let text = wait_metric(s.admin, "syslog_sink_output_up{output=\"siem\"}", 0.0).await;
    assert_eq!(
        sample(&text, "syslog_sink_output_up{output=\"siem\"}"),
        Some(0.0)
    );

    // Back on the same port: the output reconnects, resends and is ready again.
    let rx = TcpListener::bind(rx_addr).await.expect("receiver again");
    let recv = receiver(rx);
    let body = wait_ready(s.admin, 200).await;
    assert_eq!(body["outputs"][0]["state"], "up");
    wait_metric(
        s.admin,
        "syslog_sink_output_records_total{output=\"siem\"}",
        2.0,
    )
    .await;
    s.stop().await;
    recv.abort();
}

/// An output whose destination is down at start is not ready before any record arrives (its
/// startup probe failed), and ready once the destination is up, still without a record: for a
/// `syslog` output with its default disk buffer and without one, and an `http` output. The
/// server then stops cleanly (nothing was held).
#[tokio::test]
async fn readyz_tells_a_destination_down_at_start_before_any_record() {
    for (name, output) in [
        (
            "syslog, disk buffer",
            "type = \"syslog\"\naddress = \"{addr}\"\nmax_backoff_ms = 100\n",
        ),
        (
            "syslog, no buffer",
            "type = \"syslog\"\naddress = \"{addr}\"\nmax_backoff_ms = 100\nbuffer = false\n",
        ),
        ("http", "type = \"http\"\nurl = \"http://{addr}/hook\"\n"),
    ] {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port")
            .local_addr()
            .expect("addr");
        let s = start(&format!(
            "[server]\nsummary_interval_secs = 0\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[output]]\nname = \"siem\"\n{}",
            output.replace("{addr}", &port.to_string())
        ))
        .await;
        let body = wait_ready(s.admin, 503).await;
        assert_eq!(body["outputs"][0]["state"], "retrying", "{name}: {body}");
        let why = body["outputs"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            why.contains("cannot connect to") && why.contains(&port.port().to_string()),
            "{name}: {why}"
        );
        let text = get(s.admin, "/metrics").await.1;
        assert_eq!(
            sample(&text, "syslog_sink_output_records_total{output=\"siem\"}"),
            Some(0.0),
            "{name}: no record was sent"
        );

        let rx = receiver(TcpListener::bind(port).await.expect("receiver"));
        let body = wait_ready(s.admin, 200).await;
        assert_eq!(body["outputs"][0]["state"], "up", "{name}: {body}");
        s.stop().await;
        rx.abort();
    }
}

/// Where the browser test writes its screenshot (kept after the run).
fn test_output_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

/// Runs Debian's chromium headless with `args` against `url`; its stdout. Bounded by 60 s.
async fn chromium(args: &[&str], url: &str) -> String {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new("which")
                .arg(b)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!("chromium is not installed: `apt-get install chromium` (.ci/run installs it)")
        });
    let profile = tempfile::tempdir().expect("profile dir");
    let stdout_path = profile.path().join("stdout");
    let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for chromium") {
            break st;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "chromium failed: {status:?}");
    std::fs::read_to_string(&stdout_path).expect("chromium output")
}

/// The text of the first element with `attr` in `dom` (attributes as the page writes them).
fn cell<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let i = dom.find(attr)?;
    let rest = &dom[i..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(&rest[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_what_was_sent() {
    let s = start(
        "[server]\nsummary_interval_secs = 0\n[admin]\nsample_interval_secs = 1\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[output]]\nname = \"events\"\ntype = \"file\"\npath = \"{out}\"\nflush_interval_ms = 50\n\
         [[output]]\nname = \"failures\"\ntype = \"file\"\npath = \"{out}.failures\"\n\
         filter = { category = [\"err_image_pull\", \"back_off\"] }\n",
    )
    .await;
    // The PKS sample, and what it holds, from the expect file (not from the server).
    let data = std::fs::read(common::PKS_OCTET).expect("sample");
    let expect = common::expected();
    let mut per_cat = std::collections::BTreeMap::<String, u64>::new();
    let mut per_ns = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for e in &expect {
        if let Some(c) = e["category"].as_str() {
            *per_cat.entry(c.to_string()).or_default() += 1;
            let ns = per_ns
                .entry(e["namespace"].as_str().unwrap_or_default().to_string())
                .or_default();
            match c {
                "err_image_pull" => ns.0 += 1,
                "back_off" => ns.1 += 1,
                _ => {}
            }
        }
    }
    // In five parts a second apart, so the chart has a shape.
    let ends = common::octet_frame_ends(&data);
    let mut start = 0;
    for part in 1..=5 {
        let end = ends[ends.len() * part / 5 - 1];
        common::send(s.addr, &data[start..end], || 64 * 1024).await;
        start = end;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    wait_metric(s.admin, "syslog_sink_records_total", expect.len() as f64).await;

    // Keep a stream going while the page loads: plain (non-Kubernetes) messages, so the counts
    // per category and namespace stay those of the sample. Bounded: at most 20 s.
    let sending = Arc::new(AtomicBool::new(true));
    let trickle = {
        let (addr, sending) = (s.addr, sending.clone());
        tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut n = 0u64;
            while sending.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let m = oc(&format!("<13>1 - h app - - - background {n}"));
                if c.write_all(&m).await.is_err() {
                    break;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    let url = format!("http://{}/", s.admin);
    let dom = chromium(&["--virtual-time-budget=4000", "--dump-dom"], &url).await;
    let shot = test_output_dir().join("admin-status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            "--virtual-time-budget=4000",
            "--window-size=1280,1500",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    )
    .await;
    sending.store(false, Ordering::Relaxed);
    let background = tokio::time::timeout(Duration::from_secs(25), trickle)
        .await
        .expect("trickle ends")
        .expect("trickle task");
    assert!(background > 0, "the background stream ran");

    // The page rendered the status (not the loading state) and the counts match the sample.
    assert_eq!(cell(&dom, "id=\"ready\""), Some("ready"), "{dom}");
    for (cat, n) in &per_cat {
        let shown = cell(&dom, &format!("data-category=\"{cat}\""));
        assert_eq!(shown, Some(n.to_string().as_str()), "category {cat}");
    }
    let records = cell(&dom, "data-total=\"records\"")
        .map(|t| t.replace(',', ""))
        .and_then(|t| t.parse::<u64>().ok())
        .expect("records total shown");
    assert!(records >= expect.len() as u64, "records {records}");
    // Failing namespaces: each row shown has the sample's numbers, sorted by
    // err_image_pull + back_off, and the top one is the sample's top one.
    let rows: Vec<&str> = dom.split("<tr data-namespace=\"").skip(1).collect();
    assert!(!rows.is_empty(), "no failing namespaces shown");
    let mut prev = u64::MAX;
    for row in &rows {
        let ns = &row[..row.find('"').expect("quote")];
        let eip: u64 = cell(row, "data-col=\"err_image_pull\"")
            .and_then(|t| t.parse().ok())
            .expect("eip");
        let bo: u64 = cell(row, "data-col=\"back_off\"")
            .and_then(|t| t.parse().ok())
            .expect("bo");
        assert_eq!(per_ns.get(ns).copied(), Some((eip, bo)), "namespace {ns}");
        assert!(eip + bo <= prev, "sorted");
        prev = eip + bo;
    }
    let best = per_ns.values().map(|(a, b)| a + b).max().unwrap_or(0);
    let first = rows[0];
    let first_sum: u64 = cell(first, "data-col=\"err_image_pull\"")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0)
        + cell(first, "data-col=\"back_off\"")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
    assert_eq!(first_sum, best);
    // The chart drew lines, and the outputs and listener are listed.
    assert!(dom.contains("<polyline"), "chart without lines");
    assert!(dom.contains("data-output=\"failures\""));
    // Records without a namespace (node events) are labelled "(none)" in /metrics.
    let no_ns = expect
        .iter()
        .filter(|e| !e["kind"].is_null() && e["namespace"].as_str().is_none_or(str::is_empty))
        .count();
    assert!(no_ns > 0, "the sample has node events");
    let (_, text) = get(s.admin, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            "syslog_sink_namespace_records_total{namespace=\"(none)\"}"
        ),
        Some(no_ns as f64),
        "{text}"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot is a real PNG"
    );
    println!("screenshot: {}", shot.display());
    s.stop().await;
}
