//! A minimal BSON reader and writer, with caps, for the MongoDB emulation.
//!
//! Why not the `bson` crate: it builds a whole tree (with recursion as deep as the input nests
//! and allocations sized from the input's own length fields) and is made for trusted data;
//! here every document comes from an attacker. This reader checks each length against the bytes
//! actually present before reading, stops at [`MAX_DEPTH`] nesting levels and
//! [`MAX_ELEMENTS`] elements per document (an error, not a panic), and never allocates more than
//! the input it was given. The writer builds only the replies the emulation sends.

/// Deepest nesting of documents/arrays read.
pub const MAX_DEPTH: usize = 8;
/// Most elements read from one document.
pub const MAX_ELEMENTS: usize = 256;

/// A BSON value (the kinds a client's command carries; the rest are kept as `Other`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Double(f64),
    String(String),
    Document(Doc),
    Array(Doc),
    Binary(u8, Vec<u8>),
    ObjectId([u8; 12]),
    Bool(bool),
    DateTime(i64),
    Null,
    Int32(i32),
    Timestamp(u64),
    Int64(i64),
    /// Any other element type (regex, code, decimal128, ...): its type byte.
    Other(u8),
}

/// A document: its elements in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Doc(pub Vec<(String, Value)>);

impl Doc {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The first key (a command's name).
    pub fn first_key(&self) -> Option<&str> {
        self.0.first().map(|(k, _)| k.as_str())
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn get_doc(&self, key: &str) -> Option<&Doc> {
        match self.get(key)? {
            Value::Document(d) => Some(d),
            _ => None,
        }
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BsonError {
    #[error("document truncated or its length is wrong")]
    Truncated,
    #[error("document nested deeper than the cap")]
    TooDeep,
    #[error("document has more elements than the cap")]
    TooManyElements,
    #[error("malformed element")]
    Malformed,
}

fn i32_at(b: &[u8], at: usize) -> Result<i32, BsonError> {
    let s = b.get(at..at + 4).ok_or(BsonError::Truncated)?;
    Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn i64_at(b: &[u8], at: usize) -> Result<i64, BsonError> {
    let s = b.get(at..at + 8).ok_or(BsonError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(i64::from_le_bytes(a))
}

/// A NUL-terminated string at `at`: (text, bytes used including the NUL).
pub fn cstring(b: &[u8], at: usize) -> Result<(String, usize), BsonError> {
    let rest = b.get(at..).ok_or(BsonError::Truncated)?;
    let end = rest.iter().position(|&c| c == 0).ok_or(BsonError::Truncated)?;
    Ok((String::from_utf8_lossy(&rest[..end]).into_owned(), end + 1))
}

/// Reads one document at the start of `b`: (document, its length).
pub fn read_document(b: &[u8]) -> Result<(Doc, usize), BsonError> {
    read_doc(b, 0)
}

fn read_doc(b: &[u8], depth: usize) -> Result<(Doc, usize), BsonError> {
    if depth >= MAX_DEPTH {
        return Err(BsonError::TooDeep);
    }
    let len = i32_at(b, 0)?;
    let len = usize::try_from(len).map_err(|_| BsonError::Truncated)?;
    if len < 5 || len > b.len() || b[len - 1] != 0 {
        return Err(BsonError::Truncated);
    }
    let body = &b[..len - 1];
    let mut at = 4;
    let mut out = Vec::new();
    while at < body.len() {
        if out.len() >= MAX_ELEMENTS {
            return Err(BsonError::TooManyElements);
        }
        let t = body[at];
        at += 1;
        let (key, used) = cstring(body, at)?;
        at += used;
        let (v, used) = read_value(t, body, at, depth)?;
        at += used;
        out.push((key, v));
    }
    Ok((Doc(out), len))
}

fn read_value(t: u8, b: &[u8], at: usize, depth: usize) -> Result<(Value, usize), BsonError> {
    let fixed = |n: usize| -> Result<&[u8], BsonError> { b.get(at..at + n).ok_or(BsonError::Truncated) };
    Ok(match t {
        0x01 => (Value::Double(f64::from_bits(i64_at(b, at)? as u64)), 8),
        0x02 | 0x0d | 0x0e => {
            let n = usize::try_from(i32_at(b, at)?).map_err(|_| BsonError::Malformed)?;
            if n == 0 {
                return Err(BsonError::Malformed);
            }
            let s = b.get(at + 4..at + 4 + n).ok_or(BsonError::Truncated)?;
            let text = String::from_utf8_lossy(&s[..n - 1]).into_owned();
            (if t == 0x02 { Value::String(text) } else { Value::Other(t) }, 4 + n)
        }
        0x03 | 0x04 => {
            let (d, n) = read_doc(b.get(at..).ok_or(BsonError::Truncated)?, depth + 1)?;
            (if t == 0x03 { Value::Document(d) } else { Value::Array(d) }, n)
        }
        0x05 => {
            let n = usize::try_from(i32_at(b, at)?).map_err(|_| BsonError::Malformed)?;
            let sub = *b.get(at + 4).ok_or(BsonError::Truncated)?;
            let data = b.get(at + 5..at + 5 + n).ok_or(BsonError::Truncated)?;
            (Value::Binary(sub, data.to_vec()), 5 + n)
        }
        0x06 | 0x0a | 0x7f | 0xff => (if t == 0x0a { Value::Null } else { Value::Other(t) }, 0),
        0x07 => {
            let mut id = [0u8; 12];
            id.copy_from_slice(fixed(12)?);
            (Value::ObjectId(id), 12)
        }
        0x08 => (Value::Bool(fixed(1)?[0] != 0), 1),
        0x09 => (Value::DateTime(i64_at(b, at)?), 8),
        0x0b => {
            let (_, a) = cstring(b, at)?;
            let (_, c) = cstring(b, at + a)?;
            (Value::Other(t), a + c)
        }
        0x0c => {
            let n = usize::try_from(i32_at(b, at)?).map_err(|_| BsonError::Malformed)?;
            fixed(4 + n + 12)?;
            (Value::Other(t), 4 + n + 12)
        }
        0x0f => {
            let n = usize::try_from(i32_at(b, at)?).map_err(|_| BsonError::Malformed)?;
            if n < 4 {
                return Err(BsonError::Malformed);
            }
            fixed(n)?;
            (Value::Other(t), n)
        }
        0x10 => (Value::Int32(i32_at(b, at)?), 4),
        0x11 => (Value::Timestamp(i64_at(b, at)? as u64), 8),
        0x12 => (Value::Int64(i64_at(b, at)?), 8),
        0x13 => {
            fixed(16)?;
            (Value::Other(t), 16)
        }
        _ => return Err(BsonError::Malformed),
    })
}

/// Builds a document for a reply.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { buf: vec![0, 0, 0, 0] }
    }

    fn key(&mut self, t: u8, k: &str) -> &mut Self {
        self.buf.push(t);
        self.buf.extend(k.bytes().filter(|&b| b != 0));
        self.buf.push(0);
        self
    }

    pub fn double(mut self, k: &str, v: f64) -> Self {
        self.key(0x01, k).buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(0x02, k);
        let clean: Vec<u8> = v.bytes().filter(|&b| b != 0).collect();
        self.buf.extend_from_slice(&((clean.len() + 1) as i32).to_le_bytes());
        self.buf.extend_from_slice(&clean);
        self.buf.push(0);
        self
    }

    pub fn doc(mut self, k: &str, d: Writer) -> Self {
        self.key(0x03, k).buf.extend_from_slice(&d.finish());
        self
    }

    /// An array of the documents/values `d` holds (its keys should be "0", "1", ...).
    pub fn array(mut self, k: &str, d: Writer) -> Self {
        self.key(0x04, k).buf.extend_from_slice(&d.finish());
        self
    }

    pub fn binary(mut self, k: &str, sub: u8, v: &[u8]) -> Self {
        self.key(0x05, k);
        self.buf.extend_from_slice(&(v.len() as i32).to_le_bytes());
        self.buf.push(sub);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn object_id(mut self, k: &str, v: [u8; 12]) -> Self {
        self.key(0x07, k).buf.extend_from_slice(&v);
        self
    }

    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(0x08, k).buf.push(u8::from(v));
        self
    }

    pub fn datetime(mut self, k: &str, ms: i64) -> Self {
        self.key(0x09, k).buf.extend_from_slice(&ms.to_le_bytes());
        self
    }

    pub fn i32(mut self, k: &str, v: i32) -> Self {
        self.key(0x10, k).buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(mut self, k: &str, v: i64) -> Self {
        self.key(0x12, k).buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// The encoded document.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(0);
        let n = self.buf.len() as i32;
        self.buf[..4].copy_from_slice(&n.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_documents_read_back() {
        let inner = Writer::new().i32("a", 1).str("b", "x");
        let d = Writer::new()
            .i32("hello", 1)
            .str("$db", "admin")
            .doc("inner", inner)
            .binary("payload", 0, b"n,,n=user,r=abc")
            .bool("t", true)
            .double("ok", 1.0)
            .i64("big", -5)
            .finish();
        let (doc, n) = read_document(&d).unwrap();
        assert_eq!(n, d.len());
        assert_eq!(doc.first_key(), Some("hello"));
        assert_eq!(doc.get_str("$db"), Some("admin"));
        assert_eq!(doc.get_doc("inner").and_then(|i| i.get_str("b")), Some("x"));
        assert_eq!(doc.get("payload"), Some(&Value::Binary(0, b"n,,n=user,r=abc".to_vec())));
        assert_eq!(doc.get("ok"), Some(&Value::Double(1.0)));
    }

    #[test]
    fn lies_and_depth_are_refused() {
        let d = Writer::new().i32("a", 1).finish();
        let mut lie = d.clone();
        lie[0] = 200;
        assert_eq!(read_document(&lie), Err(BsonError::Truncated));
        let mut neg = d.clone();
        neg[..4].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(read_document(&neg).is_err());
        let mut w = Writer::new().i32("x", 1);
        for _ in 0..MAX_DEPTH + 2 {
            w = Writer::new().doc("d", w);
        }
        assert_eq!(read_document(&w.finish()), Err(BsonError::TooDeep));
        // A string whose length runs past the document.
        let mut s = Writer::new().str("s", "hello").finish();
        s[7..11].copy_from_slice(&1000i32.to_le_bytes());
        assert!(read_document(&s).is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x2701_7000_0001, 30_000, 96, false) {
            let _ = read_document(&b);
            let mut d = ((b.len() + 5) as i32).to_le_bytes().to_vec();
            d.extend_from_slice(&b);
            d.push(0);
            let _ = read_document(&d);
        }
        let good = Writer::new().doc("a", Writer::new().str("b", "c")).i32("x", 2).finish();
        for t in crate::protocols::hostile::truncations(&good) {
            let _ = read_document(t);
        }
    }
}
