//! What `echo`, `printf` and `base64 -d` would write: the pure half of rebuilding the files
//! that echo-loaders drop.
//!
//! WHY: Mirai and its descendants drop a binary on devices without wget or tftp by pasting it
//! as `echo -ne '\x7f\x45\x4c\x46…' >> .d` lines (about 128 bytes a line), or as base64 through
//! `base64 -d`, then run it. Decoding those lines exactly as BusyBox and bash would gives back
//! the attacker's file byte for byte, so the sensor keeps a sample even though it never fetched
//! anything. Every function here is total (no panic on any input) and its output is never
//! larger than a fixed multiple of its input: escapes only shrink text, `printf` repeats its
//! format at most [`MAX_PRINTF_ROUNDS`] times and its output is capped at [`MAX_OUTPUT`].

use base64::Engine;

/// Most bytes one `echo`/`printf` produces (longer output is cut).
pub const MAX_OUTPUT: usize = 1 << 20;
/// Most times `printf` reuses its format for leftover arguments.
pub const MAX_PRINTF_ROUNDS: usize = 256;

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn octal_run(s: &[u8], max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut n = 0;
    while n < max {
        match s.get(n) {
            Some(&d @ b'0'..=b'7') => {
                v = v * 8 + u32::from(d - b'0');
                n += 1;
            }
            _ => break,
        }
    }
    (v, n)
}

/// Which escape dialect: `echo -e` (`\0nnn` octal) or `printf` (`\nnn` octal).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Echo,
    Printf,
}

/// Interprets backslash escapes in `s`, appending to `out`. Returns false when `\c` asked to
/// stop all further output.
fn unescape_into(s: &[u8], dialect: Dialect, out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < s.len() {
        if out.len() >= MAX_OUTPUT {
            return true;
        }
        let c = s[i];
        if c != b'\\' || i + 1 >= s.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = s[i + 1];
        i += 2;
        match e {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'e' | b'E' => out.push(0x1b),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' => out.push(b'\\'),
            b'c' => return false,
            b'x' => {
                let mut v = 0u8;
                let mut n = 0;
                while n < 2 {
                    match s.get(i + n).and_then(|&h| hex_val(h)) {
                        Some(h) => {
                            v = v.wrapping_mul(16).wrapping_add(h);
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    out.extend_from_slice(b"\\x");
                } else {
                    out.push(v);
                    i += n;
                }
            }
            b'0' if dialect == Dialect::Echo => {
                let (v, n) = octal_run(&s[i..], 3);
                out.push(v as u8);
                i += n;
            }
            b'0'..=b'7' => {
                // printf's `\nnn`; BusyBox's echo also reads `\nnn` without the leading 0.
                let (v, n) = octal_run(&s[i - 1..], 3);
                out.push(v as u8);
                i += n - 1;
            }
            b'"' | b'\'' if dialect == Dialect::Printf => out.push(e),
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    true
}

/// What `echo ARGS` prints (BusyBox and bash semantics: leading `-n`, `-e`, `-E` option words,
/// escapes only with `-e`, a newline unless `-n`).
pub fn echo(args: &[Vec<u8>]) -> Vec<u8> {
    let mut newline = true;
    let mut escapes = false;
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        let opts = match first.strip_prefix(b"-") {
            Some(o) if !o.is_empty() && o.iter().all(|c| matches!(c, b'n' | b'e' | b'E')) => o,
            _ => break,
        };
        for o in opts {
            match o {
                b'n' => newline = false,
                b'e' => escapes = true,
                _ => escapes = false,
            }
        }
        rest = tail;
    }
    let mut out = Vec::new();
    for (n, a) in rest.iter().enumerate() {
        if n > 0 {
            out.push(b' ');
        }
        if escapes {
            if !unescape_into(a, Dialect::Echo, &mut out) {
                return out;
            }
        } else {
            out.extend_from_slice(&a[..a.len().min(MAX_OUTPUT.saturating_sub(out.len()))]);
        }
        if out.len() >= MAX_OUTPUT {
            out.truncate(MAX_OUTPUT);
            return out;
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

/// What `printf FORMAT ARGS` prints: escapes in the format, `%%`, and `%s`, `%b`, `%c`, `%d`,
/// `%i`, `%u`, `%x`, `%o` conversions (flags and widths are skipped); the format is reused
/// while arguments remain, as POSIX says.
pub fn printf(args: &[Vec<u8>]) -> Vec<u8> {
    let Some((fmt, mut rest)) = args.split_first() else { return Vec::new() };
    let mut out = Vec::new();
    for _ in 0..MAX_PRINTF_ROUNDS {
        let before = rest.len();
        let mut i = 0;
        let mut lit = Vec::new();
        while i < fmt.len() {
            let c = fmt[i];
            if c != b'%' {
                // Copy literal text through the escape decoder in runs.
                let end = fmt[i..].iter().position(|&b| b == b'%').map_or(fmt.len(), |p| i + p);
                lit.clear();
                lit.extend_from_slice(&fmt[i..end]);
                if !unescape_into(&lit, Dialect::Printf, &mut out) {
                    return out;
                }
                i = end;
                continue;
            }
            i += 1;
            // Flags, width, precision.
            while matches!(fmt.get(i), Some(b'-' | b'+' | b' ' | b'#' | b'0'..=b'9' | b'.')) {
                i += 1;
            }
            let conv = fmt.get(i).copied();
            i += 1;
            let mut take = || {
                let (a, r) = rest.split_first().map_or((&[][..], rest), |(a, r)| (a.as_slice(), r));
                rest = r;
                a
            };
            match conv {
                Some(b'%') => out.push(b'%'),
                Some(b's') => out.extend_from_slice(take()),
                Some(b'b') => {
                    if !unescape_into(take(), Dialect::Echo, &mut out) {
                        return out;
                    }
                }
                Some(b'c') => out.extend(take().first()),
                Some(b'd' | b'i' | b'u' | b'x' | b'X' | b'o') => {
                    let a = take();
                    let n: i64 = std::str::from_utf8(a).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                    let s = match conv {
                        Some(b'x') => format!("{n:x}"),
                        Some(b'X') => format!("{n:X}"),
                        Some(b'o') => format!("{n:o}"),
                        _ => n.to_string(),
                    };
                    out.extend_from_slice(s.as_bytes());
                }
                Some(other) => {
                    out.push(b'%');
                    out.push(other);
                }
                None => out.push(b'%'),
            }
            if out.len() >= MAX_OUTPUT {
                out.truncate(MAX_OUTPUT);
                return out;
            }
        }
        if rest.is_empty() || rest.len() == before {
            break;
        }
    }
    out.truncate(MAX_OUTPUT);
    out
}

/// What `base64 -d` writes for `text`, as leniently as GNU and BusyBox do in practice: line
/// breaks and spaces are ignored, decoding stops at the first `=` padding or at anything outside
/// the alphabet, and a trailing partial group yields the bytes it fully encodes.
pub fn base64_decode(text: &[u8]) -> Vec<u8> {
    let mut clean = Vec::with_capacity(text.len());
    for &b in text {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => clean.push(b),
            b'\n' | b'\r' | b' ' | b'\t' => {}
            _ => break,
        }
    }
    // A single leftover character encodes no whole byte.
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(&clean).unwrap_or_else(|_| {
        // Non-canonical trailing bits: decode the whole groups only.
        let whole = clean.len() / 4 * 4;
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(&clean[..whole]).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn echo_like_busybox_and_bash() {
        assert_eq!(echo(&a(&["-ne", r"\x7f\x45\x4c\x46\x01"])), b"\x7fELF\x01");
        assert_eq!(echo(&a(&["-e", r"a\tb\0101\101\\"])), b"a\tbAA\\\n");
        assert_eq!(echo(&a(&["-n", r"\x41"])), br"\x41", "no escapes without -e");
        assert_eq!(echo(&a(&["-n", "-e", r"x\cy"])), b"x");
        assert_eq!(echo(&a(&["-nx", "y"])), b"-nx y\n", "not an option word");
        assert_eq!(echo(&a(&["-e", r"\x", r"\x4"])), b"\\x \x04\n");
        assert_eq!(echo(&[]), b"\n");
    }

    #[test]
    fn printf_escapes_conversions_and_reuse() {
        assert_eq!(printf(&a(&[r"\x7f\105\114F"])), b"\x7fELF");
        assert_eq!(printf(&a(&["%s-%d%%\\n", "a", "7", "b", "x"])), b"a-7%\nb-0%\n");
        assert_eq!(printf(&a(&["%b", r"\x41\0102"])), b"AB");
        assert_eq!(printf(&a(&["%5.2s|%c", "xyz", "qr"])), b"xyz|q");
        assert!(printf(&[]).is_empty());
    }

    #[test]
    fn base64_is_lenient() {
        assert_eq!(base64_decode(b"f0VMRgE=\n"), b"\x7fELF\x01");
        assert_eq!(base64_decode(b"f0VM\r\nRgE"), b"\x7fELF\x01");
        assert_eq!(base64_decode(b"aGk=garbage"), b"hi");
        assert_eq!(base64_decode(b"aGk*aGk="), b"hi");
        assert_eq!(base64_decode(b"a"), b"");
    }

    #[test]
    fn hostile_input_never_panics() {
        for s in crate::protocols::hostile::random_inputs(0x5eed_0ec4_0b1a_5e64, 20_000, 120, false) {
            let words: Vec<Vec<u8>> = s.split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
            assert!(echo(&words).len() <= MAX_OUTPUT + 1);
            assert!(printf(&words).len() <= MAX_OUTPUT);
            assert!(base64_decode(&s).len() <= s.len());
        }
        // A printf format that would loop forever without its round cap.
        let big = printf(&[b"%s%s%s".to_vec(), b"x".repeat(10_000), b"y".to_vec()]);
        assert!(big.len() <= MAX_OUTPUT);
    }
}
