//! Parsing does not allocate: all 2,000 PKS frames parsed under `Format::Auto`, every SD param
//! walked through `chunks()`, every timestamp through `timestamp_parsed()`, with a counting global
//! allocator watching.

mod common;

use common::alloc::{allocations, ThreadCounting};
use common::octet_frames;
use syslog_sink::parse::{parse, Format};

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

/// Parses and walks every frame; returns (params, chunk bytes, timestamps, errors) so the work
/// cannot be optimised away.
fn walk(frames: &[&[u8]]) -> (usize, usize, usize, usize) {
    let (mut params, mut bytes, mut stamps, mut errors) = (0, 0, 0, 0);
    for frame in frames {
        match parse(frame, Format::Auto) {
            Ok(m) => {
                if let Some(ts) = m.timestamp_parsed() {
                    stamps += 1;
                    bytes += ts.timestamp_subsec_nanos() as usize % 2;
                }
                if let Some(sd) = m.structured_data {
                    for el in sd.elements() {
                        bytes += el.id.len();
                        for (name, value) in el.params() {
                            params += 1;
                            bytes += name.len() + value.chunks().map(str::len).sum::<usize>();
                        }
                    }
                }
                bytes += m.msg.map_or(0, <[u8]>::len);
            }
            Err(_) => errors += 1,
        }
    }
    (params, bytes, stamps, errors)
}

#[test]
fn parsing_pks_sample_does_not_allocate() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pks-sink-2k.octet"
    ))
    .expect("read sample");
    let frames = octet_frames(&data);
    assert_eq!(frames.len(), 2000);
    let ((params, bytes, stamps, errors), allocs) = allocations(|| walk(&frames));

    println!("alloc: {allocs} allocations for 2000 frames, {params} params, {stamps} timestamps");
    assert_eq!(errors, 0);
    // 11 frames of the sample have a NILVALUE TIMESTAMP.
    assert_eq!(stamps, 1989);
    assert!(params > 2000 && bytes > 0);
    assert_eq!(allocs, 0, "parsing allocated");

    // The counter works: an escaped value's `unescaped()` allocates.
    let frame = br#"<13>1 - h a - - [id v="a\"b"]"#;
    let (owned, n) = allocations(|| {
        parse(frame, Format::Auto)
            .ok()
            .and_then(|m| m.structured_data)
            .and_then(|sd| sd.element("id"))
            .and_then(|el| el.param("v"))
            .map(|v| v.unescaped().into_owned())
    });
    assert_eq!(owned.as_deref(), Some("a\"b"));
    assert!(n > 0, "allocation counter does not count");
}
