//! SIGHUP reload of the binary: new classification rules and output filters apply to the next
//! batch of connections that stay open, a config that does not validate is refused with the
//! reason and the rules in use stay, and `[server] log_format = "json"` writes JSON log lines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{oc, read_records};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_syslog-sink");

/// Kills the server if the test fails before stopping it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET path` (blocking, at most 5 s): (status, body); (0, "") when nothing answers.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
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
}

/// Polls until `f` is true (at most `secs`).
fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

fn config(listen: u16, admin: u16, dir: &Path, rule: &str, filter: &str) -> String {
    format!(
        "[server]\nsummary_interval_secs = 0\nlog_format = \"json\"\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n\
         [[listen]]\naddress = \"127.0.0.1:{listen}\"\n\
         [[output]]\nname = \"all\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 20\n\
         [[output]]\nname = \"picked\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 20\n\
         filter = {{ category = [{filter}] }}\n\
         [[classify.rule]]\ncategory = \"{rule}\"\ncontains = [\"magic-text\"]\n",
        dir.join("all.jsonl").display().to_string(),
        dir.join("picked.jsonl").display().to_string(),
    )
}

fn event(text: &str) -> Vec<u8> {
    oc(&format!(
        "<14>1 2024-03-11T08:00:00+00:00 h k8s.event/ns/pod-1/ - - [kubernetes@47450 \
         namespace_name=\"ns\" object_name=\"pod-1\" container_name=\"\"] {text}"
    ))
}

fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = get(admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn sighup_reloads_rules_and_filters_and_refuses_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin_port) = (free_port(), free_port());
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        config(
            listen,
            admin_port,
            dir.path(),
            "custom_a",
            "\"custom_a\", \"back_off\"",
        ),
    )
    .expect("write config");
    let log_path = dir.path().join("stderr.log");
    let mut child = Reaper(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("start server"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let pid = child.0.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success())
    };
    assert!(
        wait_until(20, || get(admin, "/readyz").0 == 200),
        "not ready:\n{}",
        log()
    );
    let all = dir.path().join("all.jsonl");
    let picked = dir.path().join("picked.jsonl");

    // Generation 0: magic-text is custom_a; `picked` takes custom_a and back_off.
    let mut c1 = TcpStream::connect(("127.0.0.1", listen)).expect("connect");
    c1.write_all(&event("magic-text one")).expect("send");
    c1.write_all(&event("Back-off restarting failed container"))
        .expect("send");
    assert!(
        wait_until(10, || read_records(&all).len() == 2),
        "{}",
        log()
    );

    // Generation 1: magic-text is custom_b; `picked` takes custom_b only.
    std::fs::write(
        &cfg,
        config(listen, admin_port, dir.path(), "custom_b", "\"custom_b\""),
    )
    .expect("rewrite config");
    hup();
    assert!(
        wait_until(10, || metric(admin, "syslog_sink_rules_generation")
            == Some(1.0)),
        "not reloaded:\n{}",
        log()
    );
    c1.write_all(&event("magic-text two"))
        .expect("send on the old connection");
    c1.write_all(&event("Back-off restarting failed container"))
        .expect("send");
    assert!(
        wait_until(10, || read_records(&all).len() == 4),
        "{}",
        log()
    );
    let mut c2 = TcpStream::connect(("127.0.0.1", listen)).expect("connect");
    c2.write_all(&event("magic-text three")).expect("send");
    drop(c2);
    assert!(
        wait_until(10, || read_records(&all).len() == 5),
        "{}",
        log()
    );

    // A config that does not validate: refused with the reason, generation 1 stays.
    std::fs::write(
        &cfg,
        config(
            listen,
            admin_port,
            dir.path(),
            "custom_c",
            "\"no_such_category\"",
        ),
    )
    .expect("rewrite config");
    hup();
    assert!(
        wait_until(10, || {
            let (_, body) = get(admin, "/api/status");
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v["reload"]["ok"] == false)
        }),
        "bad config not reported:\n{}",
        log()
    );
    let (_, body) = get(admin, "/api/status");
    let status: Value = serde_json::from_str(&body).expect("status");
    let why = status["reload"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("no_such_category"), "{why}");
    assert_eq!(status["rules_generation"], 1);
    c1.write_all(&event("magic-text four"))
        .expect("send after the refused reload");
    assert!(
        wait_until(10, || read_records(&all).len() == 6),
        "{}",
        log()
    );

    // The first connection stayed open across both reloads: two connections in all.
    let l = format!("{{listener=\"127.0.0.1:{listen}\"}}");
    assert_eq!(
        metric(admin, &format!("syslog_sink_connections_accepted_total{l}")),
        Some(2.0)
    );
    assert_eq!(
        metric(admin, "syslog_sink_events_total{category=\"custom_a\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(admin, "syslog_sink_events_total{category=\"custom_b\"}"),
        Some(3.0)
    );
    drop(c1);

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop:\n{}", log());
        std::thread::sleep(Duration::from_millis(25));
    };
    let log = log();
    assert_eq!(status.code(), Some(0), "{log}");

    let category = |r: &Value| {
        r["k8s"]["category"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let message = |r: &Value| r["message"].as_str().unwrap_or_default().to_string();
    let all = read_records(&all);
    let cats: Vec<String> = all.iter().map(category).collect();
    assert_eq!(
        cats,
        ["custom_a", "back_off", "custom_b", "back_off", "custom_b", "custom_b"]
    );
    let picked: Vec<String> = read_records(&picked).iter().map(message).collect();
    assert_eq!(
        picked,
        [
            "magic-text one",
            "Back-off restarting failed container",
            "magic-text two",
            "magic-text three",
            "magic-text four"
        ]
    );
    // JSON log lines (log_format = "json"), including the refusal with its reason.
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let msg = |v: &Value| {
        v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(lines.iter().any(|v| msg(v).starts_with("config reloaded")));
    assert!(lines.iter().any(|v| v["level"] == "ERROR"
        && msg(v).contains("config reload refused")
        && msg(v).contains("no_such_category")));
}

#[test]
fn admin_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[admin]\naddress = \"127.0.0.1:{port}\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[output]]\nname = \"o\"\ntype = \"stdout\"\n"
        ),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("admin.address: cannot listen on 127.0.0.1:")
            && err.contains("[admin] address"),
        "{err}"
    );
}
