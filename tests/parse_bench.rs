//! Rough speed check of the hot path (ignored by default; meaningful only when optimised):
//! `CARGO_PROFILE_TEST_OPT_LEVEL=3 cargo test --test parse_bench -- --ignored --nocapture`.

use std::time::Instant;

use syslog_sink::parse::{parse, Format};

fn octet_frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&c| c == b' ')
            .expect("SP after MSG-LEN");
        let len: usize = std::str::from_utf8(&data[..sp])
            .expect("ASCII MSG-LEN")
            .parse()
            .expect("decimal MSG-LEN");
        frames.push(&data[sp + 1..sp + 1 + len]);
        data = &data[sp + 1 + len..];
    }
    frames
}

#[test]
#[ignore = "timing; run optimised"]
fn parse_speed_pks() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("read sample");
    let frames = octet_frames(&data);
    let bytes: usize = frames.iter().map(|f| f.len()).sum();
    let rounds = 50;
    let mut sink = 0usize;
    let start = Instant::now();
    for _ in 0..rounds {
        for f in &frames {
            let m = parse(std::hint::black_box(f), Format::Auto).expect("parse");
            sink += m.msg.map_or(0, <[u8]>::len);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64;
    println!("parse only: {ns:.0} ns/msg");

    let start = Instant::now();
    for _ in 0..rounds {
        for f in &frames {
            let m = parse(std::hint::black_box(f), Format::Auto).expect("parse");
            sink += m.timestamp_parsed().map_or(0, |t| t.timestamp() as usize);
            if let Some(sd) = m.structured_data {
                for el in sd.elements() {
                    for (_, v) in el.params() {
                        sink += v.chunks().map(str::len).sum::<usize>();
                    }
                }
            }
        }
    }
    let n = rounds * frames.len();
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "parse+walk: {ns:.0} ns/msg (avg {} bytes/msg), sink {sink}",
        bytes / frames.len()
    );
}
