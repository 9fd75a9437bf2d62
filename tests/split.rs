//! The same stream, split at every byte boundary, gives the same records (library level, no
//! sockets: the `parse` path uses the same decoder and encoder as the server), and any byte
//! stream split at any points gives the same records (proptest).

mod common;

use std::io::Read;

use common::*;
use proptest::prelude::*;
use serde_json::Value;
use syslog_sink::framing::FramingMode;

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
    records_max(data, cuts, framing, 65536)
}

fn records_max(
    data: &[u8],
    cuts: Vec<usize>,
    framing: FramingMode,
    max_frame_bytes: usize,
) -> Vec<Value> {
    let reader = Pieces {
        data: data.to_vec(),
        cuts,
        pos: 0,
    };
    offline_records(reader, framing, max_frame_bytes)
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

/// Pieces of a hostile stream: syslog-ish frames, bad MSG-LENs, digits, line ends, NULs, noise.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let msg = prop_oneof![
        Just(&b"<14>1 2024-03-11T08:00:18Z h k8s.event/ns/pod/ - - [kubernetes@47450 namespace_name=\"ns\"] Started container"[..]),
        Just(&b"<13>Nov 26 10:00:00 host sshd[1]: hi"[..]),
        Just(&b"<14>1 - - - - - -"[..]),
        Just(&b"\xef\xbb\xbf\xff\xfe"[..]),
    ];
    prop_oneof![
        3 => msg.clone().prop_map(|m| [format!("{} ", m.len()).as_bytes(), m].concat()),
        2 => msg.prop_map(|m| [m, b"\n"].concat()),
        1 => (0u64..u64::MAX).prop_map(|n| format!("{n} ").into_bytes()),
        1 => prop_oneof![Just(b"0 ".to_vec()), Just(b"007 ".to_vec()), Just(b"12x".to_vec()),
            Just(b"\n".to_vec()), Just(b"\r\n".to_vec()), Just(vec![0u8; 3])],
        2 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any stream, cut at any points into reads, in any framing and with a small frame limit,
    /// gives the records of the same stream read at once.
    #[test]
    fn any_split_gives_the_same_records(
        data in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        framing in prop_oneof![Just(FramingMode::Auto), Just(FramingMode::Octet), Just(FramingMode::Lf)],
        max in prop_oneof![Just(8usize), Just(64), Just(65536)],
    ) {
        let whole = records_max(&data, vec![], framing, max);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len().max(1))).collect();
        cuts.sort_unstable();
        prop_assert_eq!(records_max(&data, cuts, framing, max), whole.clone());
        // And one byte per read.
        prop_assert_eq!(records_max(&data, (1..data.len()).collect(), framing, max), whole);
    }
}
