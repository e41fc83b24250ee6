//! FTP (21): logins through the login policy, commands, and uploads kept as samples.
//!
//! FTP attackers log in with stolen or default credentials and upload malware (or probe for
//! anonymous write access). A server that lets everyone in is spotted at once (hydra reports
//! every password valid, scanners list "anonymous FTP allowed"), so logins go through the one
//! login policy (`Session::check_login`): a refused pair gets vsftpd's `530 Login incorrect.`
//! after vsftpd's one-second delay, and the third refusal on a connection closes it, as vsftpd's
//! `max_login_fails = 3` does; an accepted pair gets `230`. Anonymous is an ordinary pair, so it
//! is refused unless the policy lists it. Every pair is recorded with `success` as answered.
//!
//! Uploads (STOR, APPE, STOU) arrive over a passive data connection and are streamed into the
//! sample area through `Session::capture`. Only passive mode exists — PORT/EPRT would make the
//! sensor connect out, which it never does. The data port comes from a configured range
//! (`passive_ports`, default [`DEFAULT_PASSIVE_PORTS`]) so that a firewall can open exactly
//! that range, and PASV announces `passive_address` (the public address behind NAT) or else the
//! address the client connected to. One data connection at a time, from the control
//! connection's address only, bounded in time and bytes (`Session::file_cap`). Downloads always
//! fail (`550`): we never serve files.
//!
//! The wording is vsftpd's, or Microsoft FTP Service's for the `windows-server` persona.

pub use crate::config::DEFAULT_PASSIVE_PORTS;
use crate::config::{Persona, ServiceSection};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{Detail, Secret};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Default greeting (vsftpd, the `mixed` and `linux-server` personas).
pub const DEFAULT_BANNER: &str = "220 (vsFTPd 3.0.3)";
/// Commands accepted per session.
const MAX_COMMANDS: usize = 200;
/// How long a passive data port waits for the client.
const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// vsftpd's `delay_failed_login`: the pause before a refused login is answered.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// vsftpd's `max_login_fails`: refused logins on one connection before it is closed.
pub const MAX_LOGIN_FAILS: u32 = 3;
/// Bytes read from a data connection per system call.
const DATA_CHUNK: usize = 16 * 1024;

/// What a server says, per product (the persona picks one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub banner: &'static str,
    pub syst: &'static str,
    pub need_password: &'static str,
    pub logged_in: &'static str,
    pub login_incorrect: &'static str,
    pub please_login: &'static str,
}

/// vsftpd 3.0.3 (Debian's).
pub const VSFTPD: Dialect = Dialect {
    banner: DEFAULT_BANNER,
    syst: "215 UNIX Type: L8",
    need_password: "331 Please specify the password.",
    logged_in: "230 Login successful.",
    login_incorrect: "530 Login incorrect.",
    please_login: "530 Please login with USER and PASS.",
};

/// Microsoft FTP Service (IIS 10).
pub const IIS: Dialect = Dialect {
    banner: "220 Microsoft FTP Service",
    syst: "215 Windows_NT",
    need_password: "331 Password required",
    logged_in: "230 User logged in.",
    login_incorrect: "530 User cannot log in.",
    please_login: "530 Please login with USER and PASS.",
};

/// The dialect of a persona.
pub fn dialect(persona: Persona) -> Dialect {
    match persona {
        Persona::WindowsServer => IIS,
        Persona::Mixed | Persona::LinuxServer | Persona::IotRouter => VSFTPD,
    }
}

/// A parsed command line: upper-cased verb and argument.
pub fn parse_command(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
    (verb.chars().take(8).collect::<String>().to_ascii_uppercase(), arg.trim().to_string())
}

/// The argument of USER or PASS exactly as sent: everything after the first space (the line end
/// is already gone), not trimmed, so a password with spaces at either end is recorded as it was
/// typed. vsftpd does the same (it splits at the first space and keeps the rest).
pub fn raw_argument(line: &[u8]) -> String {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => String::from_utf8_lossy(&line[i + 1..]).into_owned(),
        None => String::new(),
    }
}

/// The PASV reply for `ip:port` (IPv4 only).
pub fn pasv_reply(ip: Ipv4Addr, port: u16) -> String {
    let o = ip.octets();
    format!("227 Entering Passive Mode ({},{},{},{},{},{}).\r\n", o[0], o[1], o[2], o[3], port >> 8, port & 0xff)
}

/// The EPSV reply for `port`.
pub fn epsv_reply(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
}

/// The IPv4 address a PASV reply announces: the configured one, else the address the client
/// connected to (an IPv4-mapped IPv6 address counts as IPv4). `None`: an IPv6-only control
/// connection without a configured address (only EPSV works there).
pub fn pasv_address(configured: Option<IpAddr>, local: IpAddr) -> Option<Ipv4Addr> {
    match configured.unwrap_or(local) {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// The order in which the ports of `[first, last]` are tried when `turn` is this PASV's turn:
/// every port once, starting one further each time (so a port still in TIME_WAIT or taken by
/// another program is skipped, and consecutive sessions spread over the range).
pub fn passive_order(first: u16, last: u16, turn: usize) -> impl Iterator<Item = u16> {
    let (first, last) = (first.min(last), first.max(last));
    let n = usize::from(last - first) + 1;
    (0..n).map(move |k| first + ((turn % n + k) % n) as u16)
}

/// Whose turn it is in the passive range (shared by every FTP session of the sensor).
static PASSIVE_TURN: AtomicUsize = AtomicUsize::new(0);

/// Listens on the first free port of the passive range on `ip`, or `None` when every port of
/// the range is in use.
fn open_passive(ip: IpAddr, (first, last): (u16, u16)) -> Option<TcpListener> {
    let turn = PASSIVE_TURN.fetch_add(1, Ordering::Relaxed);
    for port in passive_order(first, last, turn) {
        let socket = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let Ok(socket) = socket else { return None };
        // Reuse a port whose earlier data connection is in TIME_WAIT; two listeners on one port
        // are still refused (by bind or by listen), which moves us to the next port.
        if socket.set_reuseaddr(true).is_err() || socket.bind(SocketAddr::new(ip, port)).is_err() {
            continue;
        }
        if let Ok(listener) = socket.listen(4) {
            return Some(listener);
        }
    }
    None
}

/// Waits for the data connection from the control connection's address (others are dropped).
async fn accept_data(listener: TcpListener, from: IpAddr) -> Option<TcpStream> {
    let end = tokio::time::Instant::now() + DATA_ACCEPT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(end, listener.accept()).await {
            Ok(Ok((stream, peer))) if peer.ip() == from => return Some(stream),
            // Someone else: dropped, keep waiting for the client.
            Ok(Ok(_)) => continue,
            // Out of descriptors and the like: no data connection (never a busy loop).
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// How an upload ended, for the reply on the control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadEnd {
    /// The client closed the data connection: the file is whole.
    Complete,
    /// No data connection arrived.
    NoConnection,
    /// The file reached the upload cap; the rest was not read.
    TooLarge,
    /// The data connection failed or went idle before the end.
    Cut,
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let d = dialect(session.persona());
    let banner = svc.banner_or(d.banner);
    session.write_all(format!("{banner}\r\n").as_bytes()).await?;
    let mut user: Option<String> = None;
    let mut logged_in = false;
    let mut fails = 0u32;
    let mut passive: Option<TcpListener> = None;
    for _ in 0..MAX_COMMANDS {
        let line = session.read_line().await?;
        let (verb, arg) = parse_command(&line);
        if verb != "PASS" {
            session.emit(Detail::Command { line: String::from_utf8_lossy(&line).into_owned() });
        }
        let reply: String = match verb.as_str() {
            "USER" if logged_in => "530 Can't change to another user.".into(),
            "USER" => {
                user = Some(raw_argument(&line));
                d.need_password.into()
            }
            "PASS" if logged_in => "230 Already logged in.".into(),
            "PASS" => {
                let Some(name) = user.take() else {
                    session.write_all(b"503 Login with USER first.\r\n").await?;
                    continue;
                };
                let password = raw_argument(&line);
                let success = session.check_login(&name, &password);
                session.emit(Detail::Login {
                    username: name,
                    secret: Secret::Password(password),
                    success,
                    extra: vec![("method".into(), "ftp".into())],
                });
                if success {
                    logged_in = true;
                    d.logged_in.into()
                } else {
                    tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                    fails += 1;
                    if fails >= MAX_LOGIN_FAILS {
                        session.write_all(format!("{}\r\n", d.login_incorrect).as_bytes()).await?;
                        return Ok(());
                    }
                    d.login_incorrect.into()
                }
            }
            "QUIT" => {
                session.write_all(b"221 Goodbye.\r\n").await?;
                return Ok(());
            }
            "FEAT" => "211-Features:\r\n EPSV\r\n PASV\r\n SIZE\r\n UTF8\r\n211 End".into(),
            "OPTS" => "200 Always in UTF8 mode.".into(),
            _ if !logged_in => d.please_login.into(),
            "SYST" => d.syst.into(),
            "PWD" | "XPWD" => "257 \"/\" is the current directory".into(),
            "CWD" | "CDUP" => "250 Directory successfully changed.".into(),
            "TYPE" => "200 Switching to Binary mode.".into(),
            "NOOP" => "200 NOOP ok.".into(),
            "PORT" | "EPRT" => "500 Illegal PORT command.".into(),
            "PASV" | "EPSV" => {
                passive = None;
                let announce = pasv_address(svc.passive_address, session.local.ip());
                match (verb.as_str(), announce) {
                    ("PASV", None) => "500 Illegal PASV command.".into(),
                    _ => match open_passive(session.local.ip(), svc.passive_range()) {
                        Some(l) => {
                            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                            passive = Some(l);
                            match announce {
                                Some(v4) if verb == "PASV" => pasv_reply(v4, port).trim_end().to_string(),
                                _ => epsv_reply(port).trim_end().to_string(),
                            }
                        }
                        None => "425 Could not open a passive port.".into(),
                    },
                }
            }
            "LIST" | "NLST" | "MLSD" => match passive.take() {
                Some(l) => {
                    session.write_all(b"150 Here comes the directory listing.\r\n").await?;
                    session.flush().await?;
                    match accept_data(l, session.peer.ip()).await {
                        // An empty listing: the data connection closes at once.
                        Some(data) => {
                            drop(data);
                            "226 Directory send OK.".into()
                        }
                        None => "425 Failed to establish connection.".into(),
                    }
                }
                None => "425 Use PORT or PASV first.".into(),
            },
            "RETR" | "SIZE" | "MDTM" => "550 Failed to open file.".into(),
            "STOR" | "APPE" | "STOU" => match passive.take() {
                Some(l) => {
                    session.write_all(b"150 Ok to send data.\r\n").await?;
                    // The client waits for this before it sends on the data connection.
                    session.flush().await?;
                    match receive_upload(session, l, &arg).await {
                        UploadEnd::Complete => "226 Transfer complete.".into(),
                        UploadEnd::NoConnection => "425 Failed to establish connection.".into(),
                        UploadEnd::TooLarge => "451 Failure writing to local file.".into(),
                        UploadEnd::Cut => "426 Failure reading network stream.".into(),
                    }
                }
                None => "425 Use PORT or PASV first.".into(),
            },
            "DELE" | "MKD" | "RMD" | "RNFR" | "RNTO" | "SITE" | "CHMOD" => "550 Permission denied.".into(),
            _ => "500 Unknown command.".into(),
        };
        session.write_all(reply.as_bytes()).await?;
        session.write_all(b"\r\n").await?;
    }
    Ok(())
}

/// Accepts one data connection and streams what it carries into a sample capture, which ends
/// in its Payload and Sample events however the transfer ends.
async fn receive_upload(session: &mut Session, listener: TcpListener, name: &str) -> UploadEnd {
    let Some(mut data) = accept_data(listener, session.peer.ip()).await else {
        return UploadEnd::NoConnection;
    };
    // An upload may be as large as the largest sample kept (plus one byte to see that it was
    // larger), even where that is more than the control connection's byte cap.
    let cap = session.file_cap();
    let idle = session.limits.idle_timeout;
    let deadline = session.deadline();
    let mut upload = session.capture("ftp-stor");
    let mut buf = vec![0u8; DATA_CHUNK];
    let end = loop {
        let wait = deadline.min(tokio::time::Instant::now() + idle);
        let n = match tokio::time::timeout_at(wait, data.read(&mut buf)).await {
            Ok(Ok(0)) => break UploadEnd::Complete,
            Ok(Ok(n)) => n,
            // Reset, idle, or the session's time is up: the file is not whole.
            Ok(Err(_)) | Err(_) => break UploadEnd::Cut,
        };
        let n = n.min((cap - upload.size().min(cap)) as usize);
        upload.update(&buf[..n]);
        if upload.size() >= cap {
            break UploadEnd::TooLarge;
        }
    };
    if end != UploadEnd::Complete {
        // Too large: the sample's outcome already says so; cut: it says incomplete.
        upload.mark_incomplete();
    }
    session.emit_capture(upload, name);
    end
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
        assert_eq!(epsv_reply(50001), "229 Entering Extended Passive Mode (|||50001|)\r\n");
    }

    #[test]
    fn credentials_are_taken_as_sent() {
        assert_eq!(raw_argument(b"PASS  two  spaces "), " two  spaces ");
        assert_eq!(raw_argument(b"USER o'brien \"x\""), "o'brien \"x\"");
        assert_eq!(raw_argument("PASS pässwörd".as_bytes()), "pässwörd");
        assert_eq!(raw_argument(b"PASS"), "");
        assert_eq!(raw_argument(b"PASS "), "");
    }

    #[test]
    fn the_passive_range_is_tried_in_turn_and_wraps() {
        assert_eq!(passive_order(50000, 50003, 0).collect::<Vec<_>>(), [50000, 50001, 50002, 50003]);
        assert_eq!(passive_order(50000, 50003, 6).collect::<Vec<_>>(), [50002, 50003, 50000, 50001]);
        assert_eq!(passive_order(7, 7, usize::MAX).collect::<Vec<_>>(), [7]);
        assert_eq!(passive_order(65535, 65535, 3).collect::<Vec<_>>(), [65535]);
        assert_eq!(passive_order(1, 65535, 0).count(), 65535);
    }

    #[test]
    fn pasv_announces_the_configured_or_the_connected_address() {
        let local: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(pasv_address(None, local), Some("192.168.1.20".parse().unwrap()));
        assert_eq!(pasv_address(Some("203.0.113.7".parse().unwrap()), local), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(pasv_address(None, "::ffff:10.0.0.1".parse().unwrap()), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(pasv_address(None, "2001:db8::1".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn a_port_in_use_moves_to_the_next_and_none_free_is_none() {
        // Find two adjacent free ports, hold the first, and ask for the pair.
        let (a, b) = loop {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = probe.local_addr().unwrap().port();
            if a < 65535 && std::net::TcpListener::bind(("127.0.0.1", a + 1)).is_ok() {
                break (probe, a);
            }
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            // Whatever the turn, the held port is skipped.
            let l = open_passive(ip, (b, b + 1)).unwrap();
            got.push(l.local_addr().unwrap().port());
            drop(l);
        }
        assert_eq!(got, [b + 1, b + 1]);
        let taken = open_passive(ip, (b, b + 1)).unwrap();
        assert!(open_passive(ip, (b, b + 1)).is_none(), "both ports are in use");
        drop((a, taken));
    }

    #[test]
    fn personas_pick_one_product() {
        assert_eq!(dialect(Persona::Mixed), VSFTPD);
        assert_eq!(dialect(Persona::LinuxServer), VSFTPD);
        assert_eq!(dialect(Persona::IotRouter), VSFTPD);
        assert_eq!(dialect(Persona::WindowsServer).banner, "220 Microsoft FTP Service");
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x1111_2222_3333_4444, 20_000, 100, false) {
            let _ = parse_command(&b);
            let _ = raw_argument(&b);
            let first = u16::from_le_bytes([b.first().copied().unwrap_or(0), b.get(1).copied().unwrap_or(0)]);
            let last = u16::from_le_bytes([b.get(2).copied().unwrap_or(0), b.get(3).copied().unwrap_or(0)]);
            let _ = passive_order(first, last, b.len() * 7919).take(3).count();
        }
    }
}
