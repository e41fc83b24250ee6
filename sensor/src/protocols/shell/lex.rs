//! Splits one shell line into simple commands: words (quotes and backslashes removed),
//! the stdout redirection, a here-document and whether the command reads a pipe.
//!
//! WHY a small lexer of our own: the fake shell must understand exactly the shapes loaders use
//! (`echo -ne '\x7f…' >> f`, `echo … | base64 -d > f`, `cat > f << EOF`), and nothing more.
//! A full POSIX parser would be a large attack surface for no gain; this one is a single pass
//! over bytes with fixed caps on commands and words, never expands anything (`$x`, `$(…)` and
//! backticks stay literal text) and never fails: whatever it cannot read becomes a word.
//! Bytes, not `str`, because `echo -ne` lines may carry raw bytes.

/// Most simple commands taken from one line.
pub const MAX_COMMANDS: usize = 64;
/// Most words kept per simple command.
pub const MAX_WORDS: usize = 256;

/// Where a command's standard output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `>>` (append) rather than `>` (truncate).
    pub append: bool,
    pub target: Vec<u8>,
}

/// A here-document the command reads (`<< EOF`, `<<- 'EOF'`): the body follows on the next lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub delimiter: Vec<u8>,
    /// `<<-`: leading tabs are removed from body lines and the delimiter line.
    pub strip_tabs: bool,
}

/// One simple command of a line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub words: Vec<Vec<u8>>,
    /// The last stdout redirection (`>`, `>>`, `1>`, `&>`), if any.
    pub stdout: Option<Redirect>,
    pub heredoc: Option<Heredoc>,
    /// Reads the previous command's output (`a | b`).
    pub pipe_in: bool,
}

impl Command {
    /// The command name without its directory (`/bin/busybox` → `busybox`).
    pub fn name(&self) -> &[u8] {
        let w = self.words.first().map(Vec::as_slice).unwrap_or(b"");
        w.rsplit(|&b| b == b'/').next().unwrap_or(w)
    }
}

/// Lexer state between bytes.
struct Lexer<'a> {
    src: &'a [u8],
    at: usize,
}

enum Tok {
    Word(Vec<u8>),
    /// `;`, `&&`, `||`, `&`, newline: ends a command.
    End,
    Pipe,
    Out {
        append: bool,
    },
    /// `N>` / `N>>` for a descriptor other than 1, `<`, `N>&M`: the next word is not an argument.
    OtherRedirect {
        takes_word: bool,
    },
    Heredoc {
        strip_tabs: bool,
    },
}

impl<'a> Lexer<'a> {
    fn peek(&self, off: usize) -> Option<u8> {
        self.src.get(self.at + off).copied()
    }

    /// The next token, or `None` at the end of the line (or a comment).
    fn next(&mut self) -> Option<Tok> {
        while matches!(self.peek(0), Some(b' ' | b'\t' | b'\r')) {
            self.at += 1;
        }
        let c = self.peek(0)?;
        match c {
            b'#' => {
                self.at = self.src.len();
                None
            }
            b'\n' | b';' => {
                self.at += 1;
                Some(Tok::End)
            }
            b'&' => {
                if self.peek(1) == Some(b'&') {
                    self.at += 2;
                    Some(Tok::End)
                } else if self.peek(1) == Some(b'>') {
                    // `&>` and `&>>`: stdout and stderr.
                    let append = self.peek(2) == Some(b'>');
                    self.at += if append { 3 } else { 2 };
                    Some(Tok::Out { append })
                } else {
                    self.at += 1;
                    Some(Tok::End)
                }
            }
            b'|' => {
                if self.peek(1) == Some(b'|') {
                    self.at += 2;
                    Some(Tok::End)
                } else {
                    self.at += 1;
                    Some(Tok::Pipe)
                }
            }
            b'>' => Some(self.redirect_out(1)),
            b'<' => {
                if self.peek(1) == Some(b'<') {
                    if self.peek(2) == Some(b'<') {
                        // `<<<` here-string: its word is input, not an argument.
                        self.at += 3;
                        return Some(Tok::OtherRedirect { takes_word: true });
                    }
                    let strip_tabs = self.peek(2) == Some(b'-');
                    self.at += if strip_tabs { 3 } else { 2 };
                    Some(Tok::Heredoc { strip_tabs })
                } else {
                    self.at += 1;
                    Some(Tok::OtherRedirect { takes_word: true })
                }
            }
            b'0'..=b'9' if self.is_fd_redirect() => {
                let fd = c - b'0';
                self.at += 1;
                Some(self.redirect_out(fd))
            }
            _ => Some(Tok::Word(self.word())),
        }
    }

    /// A single digit directly followed by `>` (`2>`, `1>>`).
    fn is_fd_redirect(&self) -> bool {
        self.peek(1) == Some(b'>')
    }

    /// At a `>`: `>`, `>>`, `>&N`, `>|`, for descriptor `fd`.
    fn redirect_out(&mut self, fd: u8) -> Tok {
        self.at += 1;
        let append = self.peek(0) == Some(b'>');
        if append {
            self.at += 1;
        }
        if self.peek(0) == Some(b'|') {
            self.at += 1;
        }
        if self.peek(0) == Some(b'&') {
            // `>&2`, `2>&1`: a duplication, no file.
            self.at += 1;
            while matches!(self.peek(0), Some(b'0'..=b'9' | b'-')) {
                self.at += 1;
            }
            return Tok::OtherRedirect { takes_word: false };
        }
        if fd == 1 {
            Tok::Out { append }
        } else {
            Tok::OtherRedirect { takes_word: true }
        }
    }

    /// One word: quotes removed, backslash escapes applied, up to an unquoted separator.
    fn word(&mut self) -> Vec<u8> {
        let mut w = Vec::new();
        while let Some(c) = self.peek(0) {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' => break,
                b'\'' => {
                    self.at += 1;
                    while let Some(q) = self.peek(0) {
                        self.at += 1;
                        if q == b'\'' {
                            break;
                        }
                        w.push(q);
                    }
                }
                b'"' => {
                    self.at += 1;
                    while let Some(q) = self.peek(0) {
                        self.at += 1;
                        match q {
                            b'"' => break,
                            b'\\' => match self.peek(0) {
                                Some(e @ (b'"' | b'\\' | b'$' | b'`')) => {
                                    w.push(e);
                                    self.at += 1;
                                }
                                Some(b'\n') => self.at += 1,
                                _ => w.push(b'\\'),
                            },
                            _ => w.push(q),
                        }
                    }
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek(0) {
                        Some(b'\n') => self.at += 1,
                        Some(e) => {
                            w.push(e);
                            self.at += 1;
                        }
                        None => {}
                    }
                }
                _ => {
                    w.push(c);
                    self.at += 1;
                }
            }
        }
        w
    }
}

/// Splits `line` into its simple commands (at most [`MAX_COMMANDS`], each with at most
/// [`MAX_WORDS`] words). Empty commands (`;;`) are dropped. Never fails.
pub fn split(line: &[u8]) -> Vec<Command> {
    let mut lx = Lexer { src: line, at: 0 };
    let mut out = Vec::new();
    let mut cur = Command::default();
    let mut pipe_next = false;
    let push = |out: &mut Vec<Command>, cur: &mut Command| {
        let c = std::mem::take(cur);
        if !c.words.is_empty() || c.stdout.is_some() || c.heredoc.is_some() {
            out.push(c);
        }
    };
    while out.len() < MAX_COMMANDS {
        let Some(tok) = lx.next() else { break };
        match tok {
            Tok::Word(w) => {
                if cur.words.is_empty() && cur.stdout.is_none() && cur.heredoc.is_none() {
                    cur.pipe_in = pipe_next;
                    pipe_next = false;
                }
                if cur.words.len() < MAX_WORDS {
                    cur.words.push(w);
                }
            }
            Tok::End => {
                push(&mut out, &mut cur);
                pipe_next = false;
            }
            Tok::Pipe => {
                push(&mut out, &mut cur);
                pipe_next = true;
            }
            Tok::Out { append } => {
                if cur.words.is_empty() && cur.stdout.is_none() && cur.heredoc.is_none() {
                    cur.pipe_in = pipe_next;
                    pipe_next = false;
                }
                if let Some(Tok::Word(target)) = lx.next() {
                    cur.stdout = Some(Redirect { append, target });
                }
            }
            Tok::OtherRedirect { takes_word } => {
                if takes_word {
                    let _ = lx.next();
                }
            }
            Tok::Heredoc { strip_tabs } => {
                if let Some(Tok::Word(delimiter)) = lx.next() {
                    cur.heredoc = Some(Heredoc { delimiter, strip_tabs });
                }
            }
        }
    }
    push(&mut out, &mut cur);
    out.truncate(MAX_COMMANDS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(c: &Command) -> Vec<String> {
        c.words.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect()
    }

    #[test]
    fn quotes_escapes_and_separators() {
        let cs = split(br#"cd /tmp; echo -ne '\x7f\x45' >> .d && echo "a \"b\" \x" c\ d || true"#);
        assert_eq!(cs.len(), 4);
        assert_eq!(words(&cs[0]), ["cd", "/tmp"]);
        assert_eq!(words(&cs[1]), ["echo", "-ne", r"\x7f\x45"]);
        assert_eq!(cs[1].stdout, Some(Redirect { append: true, target: b".d".to_vec() }));
        assert_eq!(words(&cs[2]), ["echo", r#"a "b" \x"#, "c d"]);
        assert_eq!(cs[2].stdout, None);
        assert_eq!(words(&cs[3]), ["true"]);
    }

    #[test]
    fn pipes_redirections_and_heredocs() {
        let cs = split(b"echo aGk= | base64 -d > /tmp/x 2>/dev/null");
        assert_eq!(cs.len(), 2);
        assert!(!cs[0].pipe_in && cs[1].pipe_in);
        assert_eq!(words(&cs[1]), ["base64", "-d"]);
        assert_eq!(cs[1].stdout, Some(Redirect { append: false, target: b"/tmp/x".to_vec() }));
        let cs = split(b"base64 -d > f <<'EOF'");
        assert_eq!(cs[0].heredoc, Some(Heredoc { delimiter: b"EOF".to_vec(), strip_tabs: false }));
        assert_eq!(cs[0].stdout.as_ref().map(|r| r.target.as_slice()), Some(&b"f"[..]));
        let cs = split(b"cat <<-END >>g");
        assert_eq!(cs[0].heredoc, Some(Heredoc { delimiter: b"END".to_vec(), strip_tabs: true }));
        assert_eq!(cs[0].stdout, Some(Redirect { append: true, target: b"g".to_vec() }));
        // `>f` alone truncates (creates) a file; `2>&1` is no file; a comment ends the line.
        let cs = split(b">dvrHelper; ls 2>&1 >/dev/null # > not-a-file");
        assert_eq!(cs[0].words.len(), 0);
        assert_eq!(cs[0].stdout.as_ref().map(|r| r.target.as_slice()), Some(&b"dvrHelper"[..]));
        assert_eq!(words(&cs[1]), ["ls"]);
        assert_eq!(cs[1].stdout.as_ref().map(|r| r.target.as_slice()), Some(&b"/dev/null"[..]));
        assert_eq!(cs.len(), 2);
        assert_eq!(split(b"/bin/busybox ECCHI")[0].name(), b"busybox");
    }

    #[test]
    fn caps_hold() {
        let many = b"a;".repeat(1000);
        assert_eq!(split(&many).len(), MAX_COMMANDS);
        let wide = b"w ".repeat(1000);
        assert_eq!(split(&wide)[0].words.len(), MAX_WORDS);
        assert!(split(b"").is_empty() && split(b" ;; ; ").is_empty());
    }

    #[test]
    fn hostile_input_never_panics() {
        use crate::protocols::hostile::{random_inputs, truncations};
        let good = br#"cd /tmp; echo -ne '\x7f' >> .d && printf "%s\n" a\ b | base64 -d > f 2>&1 <<-'EOF' # c"#;
        for t in truncations(good) {
            let _ = split(t);
        }
        // Random bytes, and random strings over the lexer's own syntax.
        let alphabet: &[u8] = b" ;|&<>'\"\\$`#\t-=ab<<>>2>&1EOF";
        for (n, raw) in random_inputs(0x1e8e_5eed_0bad_cafe, 20_000, 400, false).enumerate() {
            let line: Vec<u8> =
                if n % 2 == 0 { raw.iter().map(|b| alphabet[*b as usize % alphabet.len()]).collect() } else { raw };
            let cs = split(&line);
            assert!(cs.len() <= MAX_COMMANDS);
            for c in &cs {
                assert!(c.words.len() <= MAX_WORDS);
                assert!(c.words.iter().map(Vec::len).sum::<usize>() <= line.len());
            }
        }
    }
}
