//! The parser's byte scans, 16 octets at a time: runs of PRINTUSASCII (header fields), runs of
//! SD-NAME octets, and the next octet that ends or interrupts a PARAM-VALUE.
//!
//! Each scan classifies a block of 16 octets into a bit mask (bit k: octet k stops the scan) and
//! takes the lowest set bit. On x86_64 the mask is three to six SSE2 instructions (SSE2 is part
//! of the x86_64 baseline, so there is no run-time detection); elsewhere the same mask is built
//! octet by octet ([`portable`]). The last, partial block of the input is copied into a padded
//! buffer, so no scan reads past its slice.

/// Which octets stop a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Anything outside PRINTUSASCII (33–126).
    NonPrint,
    /// Anything outside PRINTUSASCII, and `=`, `]`, `"` (the end of an SD-NAME).
    SdName,
    /// `"`, `\`, `]` and every octet ≥ 0x80 (a PARAM-VALUE that is still ASCII so far).
    ValueAscii,
    /// `"`, `\`, `]` (a PARAM-VALUE already known to hold non-ASCII octets).
    Value,
}

/// Bit k set when octet k of `b` stops a scan of kind `stop`.
#[inline(always)]
fn mask(b: &[u8; 16], stop: Stop) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        sse2::mask(b, stop)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        portable::mask(b, stop)
    }
}

/// Length of the run at the start of `hay` with no octet that stops a scan of kind `stop`
/// (the index of the first such octet, or `hay.len()`).
#[inline(always)]
pub(crate) fn run(hay: &[u8], stop: Stop) -> usize {
    // Most tokens end in their first block.
    if let Some(b) = hay.first_chunk::<16>() {
        let m = mask(b, stop);
        if m != 0 {
            return m.trailing_zeros() as usize;
        }
    }
    run_from(hay, 16, stop)
}

/// [`run`] from offset `i` (past a first block without a stop, or past the end).
#[inline(always)]
fn run_from(hay: &[u8], mut i: usize, stop: Stop) -> usize {
    if hay.len() < i {
        return tail(hay, 0, stop);
    }
    while let Some(b) = hay.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        let m = mask(b, stop);
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    tail(hay, i, stop)
}

/// [`run`] for the last `< 16` octets of `hay` (from `i`), through a padded copy.
#[inline(never)]
#[cold]
fn tail(hay: &[u8], i: usize, stop: Stop) -> usize {
    let rest = hay.get(i..).unwrap_or_default();
    let n = rest.len().min(16);
    let mut buf = [0u8; 16];
    buf[..n].copy_from_slice(&rest[..n]);
    // The padding stops every scan.
    let m = mask(&buf, stop) | (u32::MAX << n);
    i + m.trailing_zeros() as usize
}

/// Length of the run of PRINTUSASCII (33–126) at the start of `hay`.
#[inline]
pub(crate) fn printusascii_run(hay: &[u8]) -> usize {
    run(hay, Stop::NonPrint)
}

/// Length of the run of SD-NAME octets (PRINTUSASCII except `=`, `]`, `"`; SP is not
/// PRINTUSASCII) at the start of `hay`.
#[inline]
pub(crate) fn sd_name_run(hay: &[u8]) -> usize {
    run(hay, Stop::SdName)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use super::Stop;
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// See [`super::mask`].
    #[inline(always)]
    pub(super) fn mask(b: &[u8; 16], stop: Stop) -> u32 {
        // SAFETY: SSE2 is enabled (cfg above); the load reads exactly the 16 octets of `b`
        // (unaligned loads are allowed); the other intrinsics only compute on registers.
        unsafe {
            let x = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
            let eq = |c: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8));
            let bits = |v: __m128i| _mm_movemask_epi8(v) as u32;
            match stop {
                Stop::NonPrint | Stop::SdName => {
                    // Signed compares: octets >= 0x80 are negative, so not > 32.
                    let printable = bits(_mm_cmpgt_epi8(x, _mm_set1_epi8(32)))
                        & bits(_mm_cmplt_epi8(x, _mm_set1_epi8(127)));
                    let mut m = !printable & 0xFFFF;
                    if stop == Stop::SdName {
                        m |= bits(_mm_or_si128(_mm_or_si128(eq(b'='), eq(b']')), eq(b'"')));
                    }
                    m
                }
                Stop::Value | Stop::ValueAscii => {
                    let mut v = _mm_or_si128(_mm_or_si128(eq(b'"'), eq(b'\\')), eq(b']'));
                    if stop == Stop::ValueAscii {
                        // The high bit of each octet is the movemask bit.
                        v = _mm_or_si128(v, x);
                    }
                    bits(v)
                }
            }
        }
    }
}

/// The masks of [`mask`] octet by octet: used where SSE2 is not available, and by the tests as
/// the reference.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(crate) mod portable {
    use super::Stop;

    /// Whether `c` stops a scan of kind `stop`.
    pub(crate) fn stops(c: u8, stop: Stop) -> bool {
        match stop {
            Stop::NonPrint => !(33..=126).contains(&c),
            Stop::SdName => !(33..=126).contains(&c) || matches!(c, b'=' | b']' | b'"'),
            Stop::ValueAscii => matches!(c, b'"' | b'\\' | b']') || c >= 0x80,
            Stop::Value => matches!(c, b'"' | b'\\' | b']'),
        }
    }

    /// See [`super::mask`].
    pub(crate) fn mask(b: &[u8; 16], stop: Stop) -> u32 {
        b.iter()
            .enumerate()
            .fold(0, |m, (k, &c)| m | (u32::from(stops(c, stop)) << k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Stop; 4] = [Stop::NonPrint, Stop::SdName, Stop::ValueAscii, Stop::Value];

    #[test]
    fn mask_matches_the_octet_rules_for_every_octet_and_position() {
        for stop in ALL {
            for c in 0..=255u8 {
                for pos in 0..16 {
                    let mut b = [b'a'; 16];
                    b[pos] = c;
                    let want = if portable::stops(c, stop) {
                        1 << pos
                    } else {
                        0
                    };
                    assert_eq!(mask(&b, stop), want, "{stop:?} octet {c} at {pos}");
                    assert_eq!(
                        portable::mask(&b, stop),
                        want,
                        "{stop:?} octet {c} at {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn run_finds_the_first_stop_at_any_length_and_offset() {
        for stop in ALL {
            for len in 0..50 {
                for at in 0..=len {
                    let mut h = vec![b'x'; len];
                    if at < len {
                        h[at] = b'"';
                        if stop == Stop::NonPrint {
                            h[at] = b' ';
                        }
                    }
                    // Stops after the first one must not matter.
                    if at + 1 < len {
                        h[at + 1] = 0;
                    }
                    assert_eq!(run(&h, stop), at, "{stop:?} len {len} at {at}");
                }
            }
        }
    }
}
