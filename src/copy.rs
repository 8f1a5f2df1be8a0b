//! Short copies (record keys and values) without a `memcpy` call.
//!
//! A copy of run-time length compiles to a call to the C library's
//! `memcpy`. glibc's picks a vector routine for the machine and is cheap at
//! any size; musl's (the static builds) starts a `rep movsq` and was a third
//! of the static producer's CPU time for its two copies per record (key and
//! value, about 100 bytes). Here a short slice is copied in 16-byte pieces
//! of fixed size, which the compiler keeps inline as vector moves.

use bytes::BufMut;

/// Longer slices go to `put_slice` (and `memcpy`), where the call is
/// amortised over the bytes.
const INLINE_UP_TO: usize = 256;

/// Appends `s` to `buf`, as `buf.put_slice(s)` does.
#[inline]
pub(crate) fn put_short(buf: &mut impl BufMut, s: &[u8]) {
    if s.len() > INLINE_UP_TO {
        buf.put_slice(s);
        return;
    }
    let mut pieces = s.chunks_exact(16);
    for piece in &mut pieces {
        let piece: [u8; 16] = piece.try_into().expect("chunks of 16");
        buf.put_slice(&piece);
    }
    let mut rest = pieces.remainder();
    if rest.len() >= 8 {
        let piece: [u8; 8] = rest[..8].try_into().expect("8 bytes");
        buf.put_slice(&piece);
        rest = &rest[8..];
    }
    for &b in rest {
        buf.put_u8(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn appends_exactly_the_slice(
            before in prop::collection::vec(any::<u8>(), 0..40),
            s in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut buf = before.clone();
            put_short(&mut buf, &s);
            let mut want = before;
            want.extend_from_slice(&s);
            prop_assert_eq!(buf, want);
        }
    }

    #[test]
    fn every_length_up_to_the_limit_and_past_it() {
        for n in 0..=INLINE_UP_TO + 20 {
            let s: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut buf = bytes::BytesMut::new();
            put_short(&mut buf, &s);
            assert_eq!(&buf[..], &s[..], "length {n}");
        }
    }
}
