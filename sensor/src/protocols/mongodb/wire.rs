//! The MongoDB wire protocol's framing: the 16-byte message header, `OP_MSG` and the legacy
//! `OP_QUERY` requests, `OP_MSG` and `OP_REPLY` replies. Pure and bounded (see the module
//! docs of [`super`]).

use super::bson::{self, Doc};

/// Legacy reply.
pub const OP_REPLY: i32 = 1;
/// Legacy query (commands on `db.$cmd`).
pub const OP_QUERY: i32 = 2004;
/// The message every driver since 3.6 sends.
pub const OP_MSG: i32 = 2013;

/// The message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: i32,
    pub request_id: i32,
    pub response_to: i32,
    pub op_code: i32,
}

/// Parses the header; `None` when its length is outside 16..=`max`.
pub fn parse_header(b: &[u8], max: usize) -> Option<Header> {
    let i = |at: usize| -> Option<i32> { Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?)) };
    let h = Header { length: i(0)?, request_id: i(4)?, response_to: i(8)?, op_code: i(12)? };
    let len = usize::try_from(h.length).ok()?;
    (16..=max).contains(&len).then_some(h)
}

/// A command: its document and database.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub doc: Doc,
    pub db: String,
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad document: {0}")]
    Bson(#[from] bson::BsonError),
    #[error("no body section")]
    NoBody,
    #[error("truncated message")]
    Truncated,
}

/// Parses an `OP_MSG` body (after the header): the kind-0 section's document; its `$db` is the
/// database.
pub fn parse_op_msg(b: &[u8]) -> Result<Command, WireError> {
    let flags =
        u32::from_le_bytes(b.get(..4).ok_or(WireError::Truncated)?.try_into().map_err(|_| WireError::Truncated)?);
    let end = if flags & 1 != 0 { b.len().checked_sub(4).ok_or(WireError::Truncated)? } else { b.len() };
    let mut at = 4;
    let mut body = None;
    // Sections: kind 0 (one document) or kind 1 (size, identifier, documents).
    while at < end {
        let kind = b[at];
        at += 1;
        match kind {
            0 => {
                let (d, n) = bson::read_document(&b[at..end])?;
                at += n;
                if body.is_none() {
                    body = Some(d);
                }
            }
            1 => {
                let size = i32::from_le_bytes(
                    b.get(at..at + 4).ok_or(WireError::Truncated)?.try_into().map_err(|_| WireError::Truncated)?,
                );
                let size = usize::try_from(size).map_err(|_| WireError::Truncated)?;
                if size < 4 || at + size > end {
                    return Err(WireError::Truncated);
                }
                at += size;
            }
            _ => return Err(WireError::Truncated),
        }
    }
    let doc = body.ok_or(WireError::NoBody)?;
    let db = doc.get_str("$db").unwrap_or("").to_string();
    Ok(Command { doc, db })
}

/// Parses an `OP_QUERY` body: the query document (unwrapped from `$query`/`query` when a
/// driver wrapped it) and the database of its `db.$cmd` collection.
pub fn parse_op_query(b: &[u8]) -> Result<Command, WireError> {
    if b.len() < 4 {
        return Err(WireError::Truncated);
    }
    let (coll, n) = bson::cstring(b, 4)?;
    let at = 4 + n + 8;
    let (doc, _) = bson::read_document(b.get(at..).ok_or(WireError::Truncated)?)?;
    let doc = match doc.get_doc("$query").or_else(|| doc.get_doc("query")) {
        Some(q) => q.clone(),
        None => doc,
    };
    let db = coll.split_once('.').map_or(coll.as_str(), |(d, _)| d).to_string();
    Ok(Command { doc, db })
}

fn header(len: usize, request_id: i32, response_to: i32, op: i32) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as i32).to_le_bytes());
    m.extend_from_slice(&request_id.to_le_bytes());
    m.extend_from_slice(&response_to.to_le_bytes());
    m.extend_from_slice(&op.to_le_bytes());
    m
}

/// An `OP_MSG` reply carrying `doc`.
pub fn op_msg_reply(request_id: i32, response_to: i32, doc: &[u8]) -> Vec<u8> {
    let mut m = header(16 + 5 + doc.len(), request_id, response_to, OP_MSG);
    m.extend_from_slice(&0u32.to_le_bytes());
    m.push(0);
    m.extend_from_slice(doc);
    m
}

/// An `OP_REPLY` carrying `doc`.
pub fn op_reply(request_id: i32, response_to: i32, doc: &[u8]) -> Vec<u8> {
    let mut m = header(16 + 20 + doc.len(), request_id, response_to, OP_REPLY);
    m.extend_from_slice(&8u32.to_le_bytes()); // AwaitCapable
    m.extend_from_slice(&0i64.to_le_bytes());
    m.extend_from_slice(&0i32.to_le_bytes());
    m.extend_from_slice(&1i32.to_le_bytes());
    m.extend_from_slice(doc);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::mongodb::bson::Writer;

    #[test]
    fn nmaps_probe_is_a_server_status_query_on_test() {
        let probe = b"\x41\0\0\0\x3a\x30\0\0\xff\xff\xff\xff\xd4\x07\0\0\0\0\0\0test.$cmd\0\0\0\0\0\xff\xff\xff\xff\x1b\0\0\0\x01serverStatus\0\0\0\0\0\0\0\xf0\x3f\0";
        let h = parse_header(probe, 1 << 20).unwrap();
        assert_eq!((h.length as usize, h.op_code), (probe.len(), OP_QUERY));
        let c = parse_op_query(&probe[16..]).unwrap();
        assert_eq!((c.doc.first_key(), c.db.as_str()), (Some("serverStatus"), "test"));
        let r = op_reply(1, h.request_id, &Writer::new().double("ok", 1.0).finish());
        assert_eq!(parse_header(&r, 1 << 20).unwrap().length as usize, r.len());
    }

    #[test]
    fn op_msg_with_a_document_sequence() {
        let body = Writer::new().str("insert", "c").str("$db", "x").finish();
        let mut m = 0u32.to_le_bytes().to_vec();
        m.push(0);
        m.extend_from_slice(&body);
        let seq = Writer::new().i32("a", 1).finish();
        m.push(1);
        m.extend_from_slice(&((4 + 10 + seq.len()) as i32).to_le_bytes());
        m.extend_from_slice(b"documents\0");
        m.extend_from_slice(&seq);
        let c = parse_op_msg(&m).unwrap();
        assert_eq!((c.doc.first_key(), c.db.as_str()), (Some("insert"), "x"));
        assert!(parse_op_msg(&m[..m.len() - 3]).is_err());
        assert!(parse_header(&(-5i32).to_le_bytes().repeat(4), 1 << 20).is_none());
    }
}
