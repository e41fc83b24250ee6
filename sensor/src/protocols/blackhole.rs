//! Blackhole: accept, listen, never answer.
//!
//! Scanners and worms that hit an unexpected port usually send their probe or payload first.
//! The blackhole records up to `blackhole.record_bytes` of it (the session's first-bytes buffer,
//! hashed into a payload event) and says nothing, so it fingerprints as a silent open port.

use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, MAX_PAYLOAD_PREFIX};
use sha2::{Digest, Sha256};

pub(crate) async fn handle(session: &mut Session) -> SessionResult<()> {
    let want = session.limits.first_bytes;
    let end = loop {
        if session.first_bytes().len() >= want {
            break CloseReason::ServerClosed;
        }
        // The session keeps the first bytes itself; the input is only drained here.
        match session.peek_some(usize::MAX).await {
            Ok(chunk) => {
                let n = chunk.len();
                session.consume(n);
            }
            Err(reason) => break reason,
        }
    };
    let data = session.first_bytes();
    if !data.is_empty() {
        let sha256: [u8; 32] = Sha256::digest(data).into();
        let detail = Detail::Payload {
            sha256,
            size: data.len() as u64,
            name: String::new(),
            prefix: data[..data.len().min(MAX_PAYLOAD_PREFIX)].to_vec(),
            truncated: session.bytes_in() > data.len() as u64,
        };
        session.emit(detail);
    }
    match end {
        CloseReason::ServerClosed => Ok(()),
        other => Err(other),
    }
}
