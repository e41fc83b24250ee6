//! Blackhole: accept, listen, never answer.
//!
//! Scanners and worms that hit an unexpected port usually send their probe or payload first.
//! The blackhole records up to `blackhole.record_bytes` of it (the session's first-bytes buffer,
//! hashed into a payload event) and says nothing, so it fingerprints as a silent open port.

use crate::capture::PayloadCapture;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::CloseReason;

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
        let mut bytes = PayloadCapture::new(data.len());
        bytes.update(data);
        // The client sent more than `record_bytes`: the hash covers the recorded part.
        if session.bytes_in() > data.len() as u64 {
            bytes.mark_truncated();
        }
        session.emit(bytes.finish(String::new()));
    }
    match end {
        CloseReason::ServerClosed => Ok(()),
        other => Err(other),
    }
}
