//! The same stream, split at every byte boundary, gives the same records (library level, no
//! sockets: the `parse` path uses the same decoder and encoder as the server).

mod common;

use std::io::Read;

use common::*;
use serde_json::Value;
use syslog_sink::classify::Classifier;
use syslog_sink::cli::{parse_stream, ParseOptions};
use syslog_sink::framing::{FramingMode, Trailer};
use syslog_sink::parse::Format;

/// A reader that returns its data in the given pieces, one per `read` call.
struct Pieces {
    data: Vec<u8>,
    cuts: Vec<usize>,
    pos: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > self.pos)
            .unwrap_or(self.data.len());
        let n = (end - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn records(data: &[u8], cuts: Vec<usize>, framing: FramingMode) -> Vec<Value> {
    let classifier = Classifier::builtin();
    let opts = ParseOptions {
        framing,
        trailer: Trailer::CrLf,
        format: Format::Auto,
        max_frame_bytes: 65536,
        frames: false,
    };
    let mut out = Vec::new();
    let reader = Pieces {
        data: data.to_vec(),
        cuts,
        pos: 0,
    };
    parse_stream(reader, &mut out, &opts, &classifier).unwrap();
    std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("received_at");
            v
        })
        .collect()
}

#[test]
fn every_byte_boundary_gives_the_same_records() {
    for (file, framing, n) in [
        (PKS_OCTET, FramingMode::Octet, 12),
        (PKS_OCTET, FramingMode::Auto, 12),
        (PKS_LF, FramingMode::Lf, 12),
    ] {
        let data = std::fs::read(file).unwrap();
        // The first n messages, ending at a frame boundary.
        let prefix_len = match framing {
            FramingMode::Lf => {
                let mut end = 0;
                for _ in 0..n {
                    end += data[end..].iter().position(|&b| b == b'\n').unwrap() + 1;
                }
                end
            }
            _ => octet_frame_ends(&data)[n - 1],
        };
        let data = &data[..prefix_len];
        let whole = records(data, vec![], framing);
        assert_eq!(whole.len(), n);
        for k in 1..data.len() {
            assert_eq!(records(data, vec![k], framing), whole, "split at byte {k}");
        }
        // And every byte in its own read.
        assert_eq!(records(data, (1..data.len()).collect(), framing), whole);
    }
}
