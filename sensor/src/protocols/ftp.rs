//! FTP (21): logins, commands, and uploads kept as payloads.
//!
//! FTP attackers log in with stolen or default credentials and upload malware (or probe for
//! anonymous write access). We record the login and then let everyone in (`success = true`), so
//! uploads arrive: STOR over a passive data connection is hashed in full and kept up to the
//! payload cap. Only passive mode exists — PORT/EPRT would make the sensor connect out, which it
//! never does. One data connection at a time, from the control connection's address only,
//! bounded in time and bytes. Downloads always fail (`550`): we never serve files.

use crate::capture::PayloadCapture;
use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Default greeting.
pub const DEFAULT_BANNER: &str = "220 (vsFTPd 3.0.3)";
/// Commands accepted per session.
const MAX_COMMANDS: usize = 200;
/// How long a passive data port waits for the client.
const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed command line: upper-cased verb and argument.
pub fn parse_command(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
    (verb.chars().take(8).collect::<String>().to_ascii_uppercase(), arg.trim().to_string())
}

/// The PASV reply for `ip:port` (IPv4 only).
pub fn pasv_reply(ip: std::net::Ipv4Addr, port: u16) -> String {
    let o = ip.octets();
    format!("227 Entering Passive Mode ({},{},{},{},{},{}).\r\n", o[0], o[1], o[2], o[3], port >> 8, port & 0xff)
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let banner = svc.banner_or(DEFAULT_BANNER);
    session.write_all(format!("{banner}\r\n").as_bytes()).await?;
    let mut user = String::new();
    let mut logged_in = false;
    let mut passive: Option<TcpListener> = None;
    for _ in 0..MAX_COMMANDS {
        let line = session.read_line().await?;
        let (verb, arg) = parse_command(&line);
        if verb != "PASS" {
            session.emit(Detail::Command { line: String::from_utf8_lossy(&line).into_owned() });
        }
        let reply: String = match verb.as_str() {
            "USER" => {
                user = arg;
                logged_in = false;
                "331 Please specify the password.\r\n".into()
            }
            "PASS" => {
                session.emit(Detail::Login {
                    username: user.clone(),
                    secret: Secret::Password(arg),
                    success: true,
                    extra: vec![("method".into(), "ftp".into())],
                });
                logged_in = true;
                "230 Login successful.\r\n".into()
            }
            "QUIT" => {
                session.write_all(b"221 Goodbye.\r\n").await?;
                return Ok(());
            }
            _ if !logged_in => "530 Please login with USER and PASS.\r\n".into(),
            "SYST" => "215 UNIX Type: L8\r\n".into(),
            "FEAT" => "211-Features:\r\n EPSV\r\n PASV\r\n SIZE\r\n UTF8\r\n211 End\r\n".into(),
            "PWD" | "XPWD" => "257 \"/\" is the current directory\r\n".into(),
            "CWD" | "CDUP" => "250 Directory successfully changed.\r\n".into(),
            "TYPE" => "200 Switching to Binary mode.\r\n".into(),
            "NOOP" => "200 NOOP ok.\r\n".into(),
            "OPTS" => "200 Always in UTF8 mode.\r\n".into(),
            "PORT" | "EPRT" => "500 Illegal PORT command.\r\n".into(),
            "PASV" | "EPSV" => {
                let local = session.local.ip();
                match TcpListener::bind((local, 0)).await {
                    Ok(l) => {
                        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                        passive = Some(l);
                        match (verb.as_str(), local) {
                            ("PASV", std::net::IpAddr::V4(v4)) => pasv_reply(v4, port),
                            _ => format!("229 Entering Extended Passive Mode (|||{port}|)\r\n"),
                        }
                    }
                    Err(_) => "425 Can't open passive connection.\r\n".into(),
                }
            }
            "LIST" | "NLST" | "MLSD" => match passive.take() {
                Some(l) => {
                    session.write_all(b"150 Here comes the directory listing.\r\n").await?;
                    session.flush().await?;
                    if let Ok(Ok((s, peer))) = tokio::time::timeout(DATA_ACCEPT_TIMEOUT, l.accept()).await {
                        if peer.ip() == session.peer.ip() {
                            drop(s);
                        }
                    }
                    "226 Directory send OK.\r\n".into()
                }
                None => "425 Use PORT or PASV first.\r\n".into(),
            },
            "RETR" | "SIZE" | "MDTM" => "550 Failed to open file.\r\n".into(),
            "STOR" | "APPE" | "STOU" => match passive.take() {
                Some(l) => {
                    session.write_all(b"150 Ok to send data.\r\n").await?;
                    // The client waits for this before it sends on the data connection.
                    session.flush().await?;
                    receive_upload(session, l, &arg).await?;
                    "226 Transfer complete.\r\n".into()
                }
                None => "425 Use PORT or PASV first.\r\n".into(),
            },
            "DELE" | "MKD" | "RMD" | "RNFR" | "RNTO" | "SITE" | "CHMOD" => "550 Permission denied.\r\n".into(),
            _ => "500 Unknown command.\r\n".into(),
        };
        session.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

/// Accepts one data connection and records what it carries as a payload.
async fn receive_upload(session: &mut Session, listener: TcpListener, name: &str) -> SessionResult<()> {
    let accepted = tokio::time::timeout(DATA_ACCEPT_TIMEOUT, listener.accept()).await;
    drop(listener);
    let Ok(Ok((mut data, peer))) = accepted else { return Err(CloseReason::IdleTimeout) };
    if peer.ip() != session.peer.ip() {
        return Err(CloseReason::ProtocolError);
    }
    let cap = session.limits.max_bytes_in;
    let idle = session.limits.idle_timeout;
    let deadline = session.deadline();
    let mut upload = PayloadCapture::new(session.limits.max_payload);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + idle), data.read(&mut buf)).await;
        let n = match read {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            _ => {
                upload.mark_truncated();
                break;
            }
        };
        let n = n.min((cap - upload.size().min(cap)) as usize);
        upload.update(&buf[..n]);
        if upload.size() >= cap {
            upload.mark_truncated();
            break;
        }
    }
    session.emit(upload.finish(name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command(b"user bob"), ("USER".into(), "bob".into()));
        assert_eq!(parse_command(b"STOR  x y.bin "), ("STOR".into(), "x y.bin".into()));
        assert_eq!(parse_command(b""), ("".into(), "".into()));
        assert_eq!(
            pasv_reply("127.0.0.1".parse().unwrap(), 0x1234),
            "227 Entering Passive Mode (127,0,0,1,18,52).\r\n"
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x1111_2222_3333_4444, 20_000, 100, false) {
            let _ = parse_command(&b);
        }
    }
}
