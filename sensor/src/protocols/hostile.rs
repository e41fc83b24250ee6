//! Hostile inputs for the parsers' unit tests: deterministic, so a failure reproduces, and cheap,
//! so every `cargo test` feeds each parser tens of thousands of them (libFuzzer in `fuzz/` goes
//! further, but does not run in CI).

/// `count` byte strings, each `0..max_len` bytes long, from an xorshift generator seeded with
/// `seed`. With `ascii`, bytes are 7-bit (text protocols reach deeper into their parsers then).
pub fn random_inputs(seed: u64, count: usize, max_len: usize, ascii: bool) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed.max(1);
    (0..count).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % max_len.max(1) as u64) as usize;
        let s = x;
        (0..n)
            .map(|i| {
                let b = (s.rotate_left((i % 64) as u32) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u8;
                if ascii {
                    b & 0x7f
                } else {
                    b
                }
            })
            .collect()
    })
}

/// Every prefix of a well-formed message (a parser must treat each as truncated, not panic).
pub fn truncations(good: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..good.len()).map(move |cut| &good[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_deterministic_varied_and_bounded() {
        let a: Vec<_> = random_inputs(7, 500, 64, false).collect();
        let b: Vec<_> = random_inputs(7, 500, 64, false).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.len() < 64));
        assert!(a.iter().any(|v| v.iter().any(|&c| c >= 0x80)));
        assert!(random_inputs(7, 500, 64, true).all(|v| v.iter().all(|&c| c < 0x80)));
        let lens: std::collections::HashSet<usize> = a.iter().map(Vec::len).collect();
        assert!(lens.len() > 30, "lengths should vary: {lens:?}");
        assert_eq!(truncations(b"abc").collect::<Vec<_>>(), vec![&b""[..], b"a", b"ab"]);
    }
}
