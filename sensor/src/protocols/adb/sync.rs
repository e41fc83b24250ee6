//! The file sync protocol inside a `sync:` stream (`adb push`, `adb pull`, `adb ls`): an
//! incremental parser over the stream's bytes, however the client cut them into `WRTE`s.
//!
//! Requests are `id[4], len u32 LE` then, for `STAT`/`LIST`/`RECV`/`SEND`, a path of `len`
//! bytes (at most [`MAX_PATH`]); `SEND` is followed by `DATA` chunks (each at most
//! [`MAX_CHUNK`]) and a `DONE` carrying the mtime. File bytes are never buffered: a `DATA`
//! chunk comes out as ranges of the input the caller hands to its sample capture.

/// Longest path a request may carry (adb's own limit is 1024).
pub const MAX_PATH: usize = 1024;
/// Largest `DATA` chunk (adb's `SYNC_DATA_MAX`).
pub const MAX_CHUNK: u32 = 64 * 1024;
/// Events returned per [`SyncParser::feed`] call (the caller calls again for the rest).
pub const MAX_EVENTS: usize = 64;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// `STAT path` (v1 lstat).
    Stat(String),
    /// `LIST path`.
    List(String),
    /// `RECV path` (a pull).
    Recv(String),
    /// `SEND path,mode`: a file follows.
    Send(String),
    /// File bytes: `input[start..end]` of the current `feed`.
    Data { start: usize, end: usize },
    /// `DONE mtime`: the file is complete.
    Done(u32),
    /// `QUIT`.
    Quit,
    /// Anything else; the stream fails.
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Path { id: [u8; 4], len: usize },
    Data { remaining: u32 },
    Failed,
}

/// The parser of one `sync:` stream.
#[derive(Debug)]
pub struct SyncParser {
    state: State,
    head: [u8; 8],
    head_len: usize,
    path: Vec<u8>,
}

impl Default for SyncParser {
    fn default() -> Self {
        SyncParser { state: State::Header, head: [0; 8], head_len: 0, path: Vec::new() }
    }
}

impl SyncParser {
    /// Parses from `input`, appending at most [`MAX_EVENTS`] events; returns how many bytes it
    /// used (call again with the rest). After an `Error` every byte is used and ignored.
    pub fn feed(&mut self, input: &[u8], events: &mut Vec<SyncEvent>) -> usize {
        let mut i = 0;
        let mut produced = 0;
        while i < input.len() && produced < MAX_EVENTS {
            match self.state {
                State::Failed => return input.len(),
                State::Header => {
                    let take = (8 - self.head_len).min(input.len() - i);
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&input[i..i + take]);
                    self.head_len += take;
                    i += take;
                    if self.head_len < 8 {
                        continue;
                    }
                    self.head_len = 0;
                    let id = [self.head[0], self.head[1], self.head[2], self.head[3]];
                    let len = u32::from_le_bytes([self.head[4], self.head[5], self.head[6], self.head[7]]);
                    produced += 1;
                    match &id {
                        b"STAT" | b"LIST" | b"RECV" | b"SEND" => {
                            if len as usize > MAX_PATH {
                                self.fail(events, "path too long");
                                return input.len();
                            }
                            self.path.clear();
                            self.state = State::Path { id, len: len as usize };
                            produced -= 1;
                            if len == 0 {
                                self.finish_path(id, events);
                                produced += 1;
                            }
                        }
                        b"DATA" => {
                            if len > MAX_CHUNK {
                                self.fail(events, "data chunk too large");
                                return input.len();
                            }
                            self.state = State::Data { remaining: len };
                            produced -= 1;
                        }
                        b"DONE" => events.push(SyncEvent::Done(len)),
                        b"QUIT" => events.push(SyncEvent::Quit),
                        _ => {
                            let name = String::from_utf8_lossy(&id).into_owned();
                            self.fail(events, &format!("unknown sync request {name:?}"));
                            return input.len();
                        }
                    }
                }
                State::Path { id, len } => {
                    let take = (len - self.path.len()).min(input.len() - i);
                    self.path.extend_from_slice(&input[i..i + take]);
                    i += take;
                    if self.path.len() == len {
                        self.finish_path(id, events);
                        produced += 1;
                    }
                }
                State::Data { remaining } => {
                    let take = (remaining as usize).min(input.len() - i);
                    if take > 0 {
                        events.push(SyncEvent::Data { start: i, end: i + take });
                        produced += 1;
                    }
                    i += take;
                    let left = remaining - take as u32;
                    self.state = if left == 0 { State::Header } else { State::Data { remaining: left } };
                }
            }
        }
        i
    }

    fn finish_path(&mut self, id: [u8; 4], events: &mut Vec<SyncEvent>) {
        let path = String::from_utf8_lossy(&self.path).into_owned();
        self.path = Vec::new();
        self.state = State::Header;
        events.push(match &id {
            b"STAT" => SyncEvent::Stat(path),
            b"LIST" => SyncEvent::List(path),
            b"RECV" => SyncEvent::Recv(path),
            _ => SyncEvent::Send(path),
        });
    }

    fn fail(&mut self, events: &mut Vec<SyncEvent>, why: &str) {
        self.state = State::Failed;
        events.push(SyncEvent::Error(why.to_string()));
    }
}

/// A sync request as a client sends it (tests, the flood tool).
pub fn request(id: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = id.to_vec();
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// The v1 `STAT` answer.
pub fn stat_reply(mode: u32, size: u32, mtime: u32) -> Vec<u8> {
    let mut v = b"STAT".to_vec();
    for x in [mode, size, mtime] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// `OKAY` (a file was stored) or `FAIL` with a message.
pub fn status(ok: bool, message: &str) -> Vec<u8> {
    let mut v = if ok { b"OKAY".to_vec() } else { b"FAIL".to_vec() };
    v.extend_from_slice(&(message.len() as u32).to_le_bytes());
    v.extend_from_slice(message.as_bytes());
    v
}

/// The end of a `LIST` answer (an empty directory).
pub fn list_done() -> Vec<u8> {
    let mut v = b"DONE".to_vec();
    v.extend_from_slice(&[0; 16]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes; returns the events, with data gathered.
    fn run(input: &[u8], piece: usize) -> (Vec<SyncEvent>, Vec<u8>) {
        let mut p = SyncParser::default();
        let mut all = Vec::new();
        let mut data = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            let mut at = 0;
            while at < chunk.len() {
                let mut ev = Vec::new();
                let used = p.feed(&chunk[at..], &mut ev);
                for e in ev {
                    if let SyncEvent::Data { start, end } = e {
                        data.extend_from_slice(&chunk[at + start..at + end]);
                    } else {
                        all.push(e);
                    }
                }
                at += used;
            }
        }
        (all, data)
    }

    #[test]
    fn a_push_in_any_cut_gives_the_same_file() {
        let file: Vec<u8> = (0..150_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut wire = request(b"STAT", b"/data/local/tmp/x");
        wire.extend(request(b"SEND", b"/data/local/tmp/x,33261"));
        for c in file.chunks(MAX_CHUNK as usize) {
            wire.extend(request(b"DATA", c));
        }
        wire.extend(b"DONE\x10\x00\x00\x00");
        wire.extend(b"QUIT\0\0\0\0");
        for piece in [1, 7, 4096, 65_536, 1 << 20] {
            let (events, data) = run(&wire, piece);
            assert_eq!(
                events,
                vec![
                    SyncEvent::Stat("/data/local/tmp/x".into()),
                    SyncEvent::Send("/data/local/tmp/x,33261".into()),
                    SyncEvent::Done(16),
                    SyncEvent::Quit
                ],
                "piece {piece}"
            );
            assert_eq!(data, file, "piece {piece}");
        }
    }

    #[test]
    fn oversized_and_unknown_requests_fail_the_stream() {
        let (e, _) = run(&request(b"SEND", &vec![b'a'; MAX_PATH + 1]), 100);
        assert_eq!(e, vec![SyncEvent::Error("path too long".into())]);
        let mut big = b"DATA".to_vec();
        big.extend_from_slice(&(MAX_CHUNK + 1).to_le_bytes());
        assert_eq!(run(&big, 3).0, vec![SyncEvent::Error("data chunk too large".into())]);
        assert!(matches!(run(b"STA2\0\0\0\0", 8).0[0], SyncEvent::Error(_)));
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0xadb0_5555_0000_0002, 20_000, 200, false) {
            let mut p = SyncParser::default();
            let mut at = 0;
            while at < b.len() {
                let mut ev = Vec::new();
                let used = p.feed(&b[at..], &mut ev);
                assert!(used > 0 && ev.len() <= MAX_EVENTS);
                for e in ev {
                    if let SyncEvent::Data { start, end } = e {
                        assert!(start < end && end <= b.len() - at);
                    }
                }
                at += used;
            }
        }
    }
}
