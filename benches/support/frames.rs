//! The PKS sample's octet-counted frames repeated to a message count, for the end-to-end
//! benches (included with `#[path]`).

/// The first `n` frames of the octet-counted `sample`, repeated as needed.
pub fn repeat_frames(sample: &[u8], n: usize) -> Vec<u8> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < sample.len() {
        let sp = pos
            + sample[pos..]
                .iter()
                .position(|&b| b == b' ')
                .expect("MSG-LEN");
        let len: usize = std::str::from_utf8(&sample[pos..sp])
            .expect("digits")
            .parse()
            .expect("MSG-LEN");
        frames.push(&sample[pos..sp + 1 + len]);
        pos = sp + 1 + len;
    }
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(frames[i % frames.len()]);
    }
    out
}
