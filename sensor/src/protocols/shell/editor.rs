//! Turns a terminal's keystrokes into lines, as a tty in cooked mode would: the line ends at
//! `\r\n`, `\r\0`, `\n` or a bare `\r`, backspace erases, Ctrl-U kills the line, Ctrl-C cancels
//! it and Ctrl-D on an empty line means end of input. It also produces the echo a pty sends
//! back when echo is on.
//!
//! WHY one editor for Telnet and SSH: NVT clients end lines with `\r\0` (hydra's telnet module),
//! line-mode clients with `\r\n`, scripts with `\n`, and an SSH client with a pty sends single
//! keystrokes ending in `\r`. A reader that waits for `\n` hangs on the first two. Pure and
//! incremental: [`LineEditor::feed`] stops right after the first finished line, so a caller can
//! switch echo off before the next one (a password) and leave the rest unread.

/// What the editor finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A whole line, without its line end.
    Line(Vec<u8>),
    /// Ctrl-C: the partial line was discarded.
    Interrupt,
    /// Ctrl-D on an empty line.
    Eof,
    /// The line grew past the editor's cap (the session should end).
    TooLong,
}

/// A line being typed.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: Vec<u8>,
    max: usize,
    /// The last line ended at a `\r`: a `\n` or `\0` right after it belongs to that line end.
    after_cr: bool,
}

impl LineEditor {
    /// An editor whose lines may hold at most `max` bytes.
    pub fn new(max: usize) -> LineEditor {
        LineEditor { line: Vec::new(), max, after_cr: false }
    }

    /// Bytes of the line typed so far.
    pub fn pending(&self) -> usize {
        self.line.len()
    }

    /// Reads `data` up to and including the first finished line (or control event). Returns how
    /// many bytes it used and what it finished, if anything; with `echo`, appends to `echo_out`
    /// what a pty would send back for those bytes.
    pub fn feed(&mut self, data: &[u8], echo: bool, echo_out: &mut Vec<u8>) -> (usize, Option<Input>) {
        for (i, &b) in data.iter().enumerate() {
            if std::mem::take(&mut self.after_cr) && (b == b'\n' || b == 0) {
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if echo {
                        echo_out.extend_from_slice(b"\r\n");
                    }
                    return (i + 1, Some(Input::Line(std::mem::take(&mut self.line))));
                }
                0x7f | 0x08 => {
                    if self.line.pop().is_some() && echo {
                        echo_out.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x15 => {
                    if echo {
                        for _ in 0..self.line.len().min(4096) {
                            echo_out.extend_from_slice(b"\x08 \x08");
                        }
                    }
                    self.line.clear();
                }
                0x03 => {
                    self.line.clear();
                    if echo {
                        echo_out.extend_from_slice(b"^C\r\n");
                    }
                    return (i + 1, Some(Input::Interrupt));
                }
                0x04 => {
                    if self.line.is_empty() {
                        return (i + 1, Some(Input::Eof));
                    }
                }
                0 => {}
                _ => {
                    if self.line.len() >= self.max {
                        return (i + 1, Some(Input::TooLong));
                    }
                    self.line.push(b);
                    if echo {
                        echo_out.push(b);
                    }
                }
            }
        }
        (data.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finished input of `data` fed in pieces of `piece` bytes.
    fn all(data: &[u8], piece: usize) -> Vec<Input> {
        let mut ed = LineEditor::new(64);
        let mut out = Vec::new();
        let mut echo = Vec::new();
        for chunk in data.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (n, got) = ed.feed(rest, false, &mut echo);
                out.extend(got);
                rest = &rest[n..];
            }
        }
        out
    }

    fn line(s: &str) -> Input {
        Input::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn every_line_end_in_any_split() {
        let data = b"root\r\0hunter2\r\nls -l\nid\rwhoami\r\r\n";
        let want = vec![line("root"), line("hunter2"), line("ls -l"), line("id"), line("whoami"), line("")];
        for piece in 1..=data.len() {
            assert_eq!(all(data, piece), want, "pieces of {piece}");
        }
    }

    #[test]
    fn editing_keys_and_echo() {
        let mut ed = LineEditor::new(64);
        let mut echo = Vec::new();
        let (n, got) = ed.feed(b"lx\x7fs\rnext", true, &mut echo);
        assert_eq!((n, got), (5, Some(line("ls"))));
        assert_eq!(echo, b"lx\x08 \x08s\r\n");
        echo.clear();
        assert_eq!(ed.feed(b"\x00abc\x15id\x03", true, &mut echo).1, Some(Input::Interrupt));
        assert_eq!(ed.feed(b"\x04", false, &mut echo), (1, Some(Input::Eof)));
        assert_eq!(ed.feed(b"x\x04", false, &mut echo), (2, None), "Ctrl-D only ends an empty line");
    }

    #[test]
    fn long_lines_are_refused() {
        let mut ed = LineEditor::new(4);
        let mut echo = Vec::new();
        assert_eq!(ed.feed(b"abcde", false, &mut echo), (5, Some(Input::TooLong)));
    }

    #[test]
    fn hostile_input_never_panics() {
        for s in crate::protocols::hostile::random_inputs(0xed17_0a11_c0ff_ee00, 20_000, 200, false) {
            let mut ed = LineEditor::new(50);
            let mut echo = Vec::new();
            let mut rest = &s[..];
            while !rest.is_empty() {
                let (n, _) = ed.feed(rest, true, &mut echo);
                assert!(n >= 1 && n <= rest.len());
                rest = &rest[n..];
            }
            assert!(ed.pending() <= 50);
        }
    }
}
