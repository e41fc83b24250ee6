//! tftp: a minimal RRQ client (RFC 1350, octet mode), the way IoT loaders (`tftp -g`) fetch.
//!
//! Only DATA from the checked server address is accepted; the first DATA fixes the server's
//! transfer port (TID) and later packets from any other port are ignored. Lost packets are
//! retried a bounded number of times; the size cap is enforced as blocks arrive.

use super::{append_capped, decoded_path, protocol_error, FetchError, Fetched, Fetcher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use url::Url;

const BLOCK: usize = 512;
const RETRIES: u32 = 5;
const PACKET_WAIT: Duration = Duration::from_secs(1);

fn err(reason: impl std::fmt::Display) -> FetchError {
    protocol_error("tftp", reason)
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

pub(super) async fn get(f: &Fetcher, url: &Url) -> Result<Fetched, FetchError> {
    // `tftp://host/file;mode=octet` (RFC 3617): the mode suffix is not part of the name.
    let path = decoded_path(url, "tftp")?;
    let name = path.split(";mode=").next().unwrap_or(&path).to_string();
    let server = f.resolve(url).await?;
    let local: SocketAddr =
        if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).await.map_err(err)?;
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(name.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");

    let cap = f.cfg.max_bytes;
    let mut bytes = Vec::new();
    let mut peer: Option<SocketAddr> = None;
    let mut expected: u16 = 1;
    let mut last_sent: Vec<u8> = rrq.clone();
    let mut buf = vec![0u8; 4 + BLOCK + 64];
    sock.send_to(&rrq, server).await.map_err(err)?;
    let mut tries = 0;
    loop {
        let got = tokio::time::timeout(PACKET_WAIT, sock.recv_from(&mut buf)).await;
        let (n, from) = match got {
            Ok(r) => r.map_err(err)?,
            Err(_) => {
                tries += 1;
                if tries > RETRIES {
                    return Err(err(format!("no answer after {RETRIES} retries")));
                }
                sock.send_to(&last_sent, peer.unwrap_or(server)).await.map_err(err)?;
                continue;
            }
        };
        // Only the checked address, and after the first DATA only its transfer port.
        if from.ip() != server.ip() || peer.is_some_and(|p| p != from) {
            continue;
        }
        let pkt = &buf[..n];
        match pkt {
            [0, 5, _, _, msg @ ..] => {
                let text = String::from_utf8_lossy(msg.split(|&c| c == 0).next().unwrap_or(&[]));
                return Err(err(format!("server error: {}", text.chars().take(200).collect::<String>())));
            }
            [0, 3, hi, lo, data @ ..] => {
                let block = u16::from_be_bytes([*hi, *lo]);
                peer.get_or_insert(from);
                if block == expected {
                    if let Err(e) = append_capped(&mut bytes, data, cap) {
                        let mut stop = vec![0, 5, 0, 3];
                        stop.extend_from_slice(b"file too large\0");
                        let _ = sock.send_to(&stop, from).await;
                        return Err(e);
                    }
                    last_sent = ack(block).to_vec();
                    sock.send_to(&last_sent, from).await.map_err(err)?;
                    tries = 0;
                    if data.len() < BLOCK {
                        return Ok(Fetched {
                            url: String::new(),
                            final_url: url.to_string(),
                            peer: from,
                            status: 0,
                            bytes,
                        });
                    }
                    expected = expected.wrapping_add(1);
                } else if block == expected.wrapping_sub(1) {
                    // Our ACK was lost: the server sent the block again.
                    sock.send_to(&ack(block), from).await.map_err(err)?;
                }
            }
            _ => continue,
        }
    }
}
