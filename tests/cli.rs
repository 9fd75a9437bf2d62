//! The binary: `parse` (records, `--frames`), conformance vectors through it, `check-config`,
//! and `serve` stopped by SIGTERM.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_syslog-sink");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Runs the binary with `args`, feeding `stdin`; returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines(out: &[u8]) -> Vec<Value> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn parse_pks_capture_gives_the_server_records() {
    for (file, framing) in [("pks-sink-2k.octet", "octet"), ("pks-sink-2k.lf", "lf")] {
        let path = format!("{DATA}/{file}");
        let (code, out, err) = run(&["parse", "--framing", framing, &path], b"");
        assert_eq!(code, 0, "{err}");
        let recs = lines(&out);
        check_pks_records(&recs);
        assert!(recs.iter().all(|r| r.get("peer").is_none()));
        assert!(
            err.contains("2000 records (721 events, 1224 pod logs)"),
            "{err}"
        );
    }
    // stdin works too.
    let data = std::fs::read(PKS_OCTET).unwrap();
    let (code, out, _) = run(&["parse"], &data);
    assert_eq!(code, 0);
    check_pks_records(&lines(&out));
}

/// The expected `structured_data` object of a conformance case.
fn sd_object(sd: &Value) -> Value {
    let Some(elements) = sd.as_array() else {
        return Value::Null;
    };
    let mut obj = Map::new();
    for el in elements {
        let id = el["id"].as_str().unwrap().to_string();
        let entry = obj.entry(id).or_insert_with(|| json!({}));
        for p in el["params"].as_array().unwrap() {
            let (name, value) = (p[0].as_str().unwrap(), p[1].clone());
            let params = entry.as_object_mut().unwrap();
            match params.get_mut(name) {
                None => {
                    params.insert(name.to_string(), value);
                }
                Some(Value::Array(a)) => a.push(value),
                Some(old) => *old = json!([old.clone(), value]),
            }
        }
    }
    Value::Object(obj)
}

fn strip_line_end(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r\n")
        .or_else(|| b.strip_suffix(b"\n"))
        .unwrap_or(b)
}

#[test]
fn rfc5424_conformance_vectors_through_parse() {
    let cases: Vec<Value> = std::fs::read_to_string(format!("{DATA}/rfc5424.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // All cases as one octet-counted stream.
    let mut stream = Vec::new();
    for c in &cases {
        let input = match c["input"].as_str() {
            Some(s) => s.as_bytes().to_vec(),
            None => b64(c["input_b64"].as_str().unwrap()),
        };
        stream.extend_from_slice(format!("{} ", input.len()).as_bytes());
        stream.extend_from_slice(&input);
    }
    let (code, out, err) = run(
        &["parse", "--framing", "octet", "--format", "rfc5424"],
        &stream,
    );
    assert_eq!(code, 0, "{err}");
    let recs = lines(&out);
    assert_eq!(recs.len(), cases.len());
    let (mut valid, mut invalid) = (0, 0);
    for (c, r) in cases.iter().zip(&recs) {
        let id = c["id"].as_str().unwrap();
        if c["valid"] != true {
            assert!(r.get("parse_error").is_some(), "{id} must be rejected: {r}");
            assert!(r["raw"].is_string(), "{id}: raw kept");
            invalid += 1;
            continue;
        }
        let e = &c["expect"];
        assert!(r.get("parse_error").is_none(), "{id}: {r}");
        for key in [
            "facility",
            "severity",
            "version",
            "timestamp",
            "hostname",
            "app_name",
            "procid",
            "msgid",
        ] {
            assert_eq!(r[key], e[key], "{id}: {key}");
        }
        assert_eq!(r["structured_data"], sd_object(&e["sd"]), "{id}: sd");
        match (e.get("msg"), e.get("msg_b64")) {
            (Some(Value::Null), _) => assert_eq!(r["message"], Value::Null, "{id}"),
            (Some(m), _) => {
                let m = m.as_str().unwrap();
                let m = m.strip_prefix('\u{feff}').unwrap_or(m);
                let want = std::str::from_utf8(strip_line_end(m.as_bytes())).unwrap();
                assert_eq!(r["message"], want, "{id}: message");
                assert!(r.get("message_base64").is_none());
            }
            (None, Some(b)) => {
                let raw = b64(b.as_str().unwrap());
                let got = b64(r["message_base64"].as_str().unwrap());
                assert_eq!(got, strip_line_end(&raw), "{id}: message_base64");
            }
            _ => panic!("{id}: no msg in expect"),
        }
        valid += 1;
    }
    println!("rfc5424 conformance via parse: {valid} valid ok, {invalid} invalid rejected");
    assert_eq!((valid, invalid), (121, 144));
}

/// check-config creates the disk-buffer folders, and names `server.data_dir` when one cannot
/// be created.
#[test]
fn check_config_creates_buffer_folders_and_names_an_unusable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let config = |data: &std::path::Path| {
        format!(
            "[server]\ndata_dir = {:?}\n[[listen]]\naddress = \"127.0.0.1:1514\"\n\
             [[output]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:7514\"\n",
            data.display().to_string()
        )
    };
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&dir.path().join("data"))).unwrap();
    let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("data/siem").is_dir());
    std::fs::write(&path, config(&blocker.join("data"))).unwrap();
    let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], b"");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("server.data_dir")
            && err.contains("\"siem\"")
            && err.contains("cannot create"),
        "{err}"
    );
}

/// `${NAME}` in the file is the environment's value: a broker address from the environment is
/// checked as the config's own, an unset name is an error naming it and its line.
#[test]
fn check_config_takes_values_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"bus\"\ntype = \"kafka\"\n\
         brokers = [\"${SINK_TEST_BROKER}\"]\ntopic = \"t\"\nbuffer = false\n",
    )
    .unwrap();
    let check = |broker: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["check-config", "--config", path.to_str().unwrap()]);
        match broker {
            Some(b) => c.env("SINK_TEST_BROKER", b),
            None => c.env_remove("SINK_TEST_BROKER"),
        };
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(Some("kafka-1.example:9092"));
    assert_eq!(code, 0, "{err}");
    let (code, err) = check(Some("kafka-1"));
    assert_eq!(code, 1);
    assert!(err.contains("\"kafka-1\" is not host:port"), "{err}");
    let (code, err) = check(None);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 6") && err.contains("SINK_TEST_BROKER is not set"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_shipped_config_and_names_bad_keys() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/syslog-sink.toml");
    let (code, out, err) = run(&["check-config", "--config", shipped], b"");
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    let base =
        "[[listen]]\naddress = \"127.0.0.1:1514\"\n[[output]]\nname = \"o\"\ntype = \"stdout\"\n";
    for (text, needle) in [
        (
            format!("{base}[server]\nsumary_interval_secs = 1\n"),
            "sumary_interval_secs",
        ),
        (
            base.replace("127.0.0.1:1514", "localhost"),
            "listen[0].address",
        ),
        (
            format!("{base}filter = {{ category = [\"err_image_pul\"] }}\n"),
            "err_image_pul",
        ),
        (base.replace("\"stdout\"", "\"file\""), "path"),
        (base.replace("\"stdout\"", "\"kafka\""), "kafka"),
        (
            format!("{base}[[listen]]\naddress = \"127.0.0.1:1514\"\n"),
            "listen[1].address",
        ),
        (
            format!("{base}[[classify.rule]]\ncategory = \"Bad Name\"\ncontains = [\"x\"]\n"),
            "classify.rule",
        ),
        (
            base.replace("[[listen]]\naddress = \"127.0.0.1:1514\"\n", ""),
            "listen",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], b"");
        assert_eq!(code, 1, "{text}");
        assert!(
            err.contains(needle),
            "error for {text:?} should name {needle:?}: {err}"
        );
    }
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent.toml"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[test]
fn serve_writes_records_and_exits_0_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsummary_interval_secs = 1\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n\
             [[output]]\nname = \"events\"\ntype = \"file\"\npath = {:?}\nflush_interval_ms = 60000\n",
            out.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("server did not start: {e}"),
        }
    };
    conn.write_all(&std::fs::read(PKS_OCTET).unwrap()).unwrap();
    drop(conn);
    std::thread::sleep(Duration::from_millis(1500));
    // flush_interval is 60 s: what is in the file now was written by the shutdown flush.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out_status = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out_status.stderr);
    assert_eq!(out_status.status.code(), Some(0), "{err}");
    assert!(
        err.contains("records=2000"),
        "summary line on stderr: {err}"
    );
    check_pks_records(&read_records(&out));
}

#[test]
fn framing_conformance_vectors_through_parse_frames() {
    let text = std::fs::read_to_string(format!("{DATA}/framing.jsonl")).unwrap();
    let (mut exact, mut alt) = (0, 0);
    for line in text.lines() {
        let c: Value = serde_json::from_str(line).unwrap();
        let id = c["id"].as_str().unwrap();
        let framing = match c["mode"].as_str().unwrap() {
            "nontransparent" => "lf",
            m => m,
        };
        let trailer = match c["trailer"].as_str() {
            Some("LF") => "lf",
            Some("NUL") => "nul",
            Some("LF|NUL") => "lf-or-nul",
            _ => "crlf",
        };
        let max = c["max_frame_len"].to_string();
        let (code, out, err) = run(
            &[
                "parse",
                "--frames",
                "--framing",
                framing,
                "--trailer",
                trailer,
                "--max-frame-bytes",
                &max,
            ],
            &b64(c["stream_b64"].as_str().unwrap()),
        );
        assert_eq!(code, 0, "{id}: {err}");
        let cut = lines(&out);
        // Frames up to the first error, and that error.
        let first_error = cut.iter().position(|f| f.get("error").is_some());
        let frames: Vec<Vec<u8>> = cut[..first_error.unwrap_or(cut.len())]
            .iter()
            .map(|f| b64(f["frame_base64"].as_str().unwrap()))
            .collect();
        let decode = |v: &Value| -> Vec<Vec<u8>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| b64(s.as_str().unwrap()))
                .collect()
        };
        if frames == decode(&c["expect_frames"]) {
            exact += 1;
        } else if c
            .get("alt_expect_frames")
            .is_some_and(|a| frames == decode(a))
        {
            alt += 1;
        } else {
            panic!("{id}: frames {cut:?}");
        }
        match c.get("expect_error") {
            Some(e) => {
                let i = first_error.unwrap_or_else(|| panic!("{id}: expected error {e}"));
                assert_eq!(&cut[i]["error"], e, "{id}");
            }
            None => assert!(
                first_error.is_none() || c.get("alt_expect_frames").is_some(),
                "{id}: unexpected error {cut:?}"
            ),
        }
    }
    println!("framing conformance via parse --frames: {exact} exact, {alt} via alt_expect_frames");
    assert_eq!(exact + alt, 47);
}
