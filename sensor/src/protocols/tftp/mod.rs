//! TFTP (69/udp): read and write requests recorded with their file name and mode; reads are
//! answered `File not found` (as a TFTP server with an empty root does); uploads (WRQ) are
//! received block by block, acknowledged, and kept as samples (`tftp-wrq`).
//!
//! WHY: bots on routers and cameras fetch their next stage with `tftp -g` and push loot or
//! probes with `tftp -p`; what they ask for is the URL of the campaign, what they upload is the
//! sample. Replies go out of port 69 itself (tftp-hpa's and BusyBox's clients take the first
//! reply's port as the transfer ID), so no extra port is bound and the firewall opens one.
//!
//! Bounded: an upload is one [`Flow`] of the UDP framework (at most `udp.max_flows` per port,
//! ended after `udp.flow_timeout_s` idle); its bytes go to the sample area up to its per-sample
//! cap, past which the upload is refused with `Disk full` and recorded as too large. Every reply
//! (an ACK is 4 bytes, an error fits the request) is no larger than the datagram it answers.

pub mod parse;

use crate::capture::PayloadCapture;
use crate::udp::{Exchange, Flow};
use drosera_uplink::event::{CloseReason, Detail};
use parse::{Packet, Request, BLOCK};

/// Handles a datagram that belongs to no upload.
pub(crate) fn datagram(x: &mut Exchange, data: &[u8]) -> Option<Vec<u8>> {
    match parse::parse(data) {
        Ok(Packet::Rrq(r)) => {
            record(x, "RRQ", &r);
            parse::error(parse::ERR_NOT_FOUND, "File not found", data.len())
        }
        Ok(Packet::Wrq(r)) => {
            record(x, "WRQ", &r);
            if !x.flow_room() {
                return parse::error(parse::ERR_DISK_FULL, "Disk full or allocation exceeded", data.len());
            }
            let name = String::from_utf8_lossy(r.file).into_owned();
            let cap = x.max_sample_bytes().unwrap_or(1 << 20);
            x.start_flow(Box::new(Upload { capture: x.capture("tftp-wrq"), name, next: 1, cap, complete: false }));
            Some(parse::ack(0))
        }
        // A transfer packet with no transfer behind it (another server's client, a scanner).
        Ok(Packet::Data { .. } | Packet::Ack { .. } | Packet::Oack) => {
            parse::error(parse::ERR_UNKNOWN_TID, "Unknown transfer ID", data.len())
        }
        Ok(Packet::Error { .. }) => None,
        Err(e) => {
            tracing::debug!(peer = %x.peer, error = %e, "not a TFTP packet");
            parse::error(parse::ERR_ILLEGAL, "Illegal TFTP operation", data.len())
        }
    }
}

/// Records a request: `RRQ file mode [option=value ...]`.
fn record(x: &Exchange, op: &str, r: &Request<'_>) {
    let mut line = format!("{op} {} {}", String::from_utf8_lossy(r.file), String::from_utf8_lossy(r.mode));
    for (k, v) in &r.options {
        line.push_str(&format!(" {}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)));
    }
    x.emit(Detail::Command { line });
}

/// One upload in progress.
struct Upload {
    capture: PayloadCapture,
    name: String,
    /// The block expected next.
    next: u16,
    /// Most bytes kept (the sample cap); past it the upload is refused.
    cap: u64,
    complete: bool,
}

impl Flow for Upload {
    fn datagram(&mut self, _x: &Exchange, data: &[u8]) -> (Option<Vec<u8>>, bool) {
        match parse::parse(data) {
            Ok(Packet::Data { block, data: bytes }) if block == self.next => {
                if self.capture.size() + bytes.len() as u64 > self.cap {
                    // Up to one byte past the cap: the sample area then knows the file was too large.
                    let room = (self.cap + 1).saturating_sub(self.capture.size());
                    self.capture.update(&bytes[..bytes.len().min(room as usize)]);
                    self.capture.mark_truncated();
                    return (parse::error(parse::ERR_DISK_FULL, "Disk full or allocation exceeded", data.len()), true);
                }
                self.capture.update(bytes);
                self.next = self.next.wrapping_add(1);
                let last = bytes.len() < BLOCK;
                self.complete = last;
                (Some(parse::ack(block)), last)
            }
            // Our ACK was lost: acknowledge the block again.
            Ok(Packet::Data { block, .. }) if block == self.next.wrapping_sub(1) => (Some(parse::ack(block)), false),
            Ok(Packet::Error { .. }) => (None, true),
            _ => (None, false),
        }
    }

    fn end(self: Box<Self>, x: &Exchange, reason: CloseReason) {
        let mut capture = self.capture;
        if !self.complete {
            // Idle, shut down, the client's error or our refusal: not the whole file.
            tracing::debug!(peer = %x.peer, reason = reason.as_str(), "TFTP upload ended early");
            capture.mark_incomplete();
        }
        x.emit_capture(capture, &self.name);
    }
}
