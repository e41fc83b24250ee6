//! ftp: a minimal passive-mode RETR client (RFC 959, EPSV from RFC 2428).
//!
//! Only what fetching one file needs. The data connection goes to the control connection's
//! (checked) address with the port the server gave: a PASV answer naming another host is
//! ignored, so a malicious server cannot point us at the admin's own network (FTP bounce).
//! Reply lines and reply length are bounded.

use super::{append_capped, decoded_path, protocol_error, FetchError, Fetched, Fetcher};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use url::Url;

const MAX_LINE: u64 = 1024;
const MAX_REPLY_LINES: usize = 64;

fn err(reason: impl std::fmt::Display) -> FetchError {
    protocol_error("ftp", reason)
}

/// One reply: its code and its last line.
async fn reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<(u16, String), FetchError> {
    let mut code = None;
    for _ in 0..MAX_REPLY_LINES {
        let mut line = Vec::new();
        let n = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut line).await.map_err(err)?;
        if n == 0 {
            return Err(err("connection closed"));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let this: Option<u16> = text.get(..3).and_then(|c| c.parse().ok());
        let first = match (code, this) {
            (Some(c), _) => c,
            (None, Some(c)) => *code.insert(c),
            (None, None) => return Err(err(format!("not a reply: {text:?}"))),
        };
        // A multi-line reply ends with a line that starts with the code and a space.
        if this == Some(first) && text.as_bytes().get(3) != Some(&b'-') {
            return Ok((first, text));
        }
    }
    Err(err("reply too long"))
}

async fn command<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    cmd: &str,
) -> Result<(u16, String), FetchError> {
    w.write_all(format!("{cmd}\r\n").as_bytes()).await.map_err(err)?;
    reply(r).await
}

fn expect(got: (u16, String), ok: &[u16], what: &str) -> Result<(u16, String), FetchError> {
    if ok.contains(&got.0) {
        Ok(got)
    } else {
        Err(err(format!("{what}: {}", got.1.chars().take(200).collect::<String>())))
    }
}

/// The port of a `229 ... (|||port|)` reply.
fn epsv_port(text: &str) -> Option<u16> {
    let inner = text.split("(|||").nth(1)?;
    inner.split('|').next()?.parse().ok()
}

/// The port of a `227 ... (h1,h2,h3,h4,p1,p2)` reply (the host part is ignored on purpose).
fn pasv_port(text: &str) -> Option<u16> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    let nums: Vec<u16> = inner.split(',').map(|n| n.trim().parse().ok()).collect::<Option<_>>()?;
    match nums.as_slice() {
        [_, _, _, _, p1, p2] if *p1 < 256 && *p2 < 256 => Some(p1 * 256 + p2),
        _ => None,
    }
}

pub(super) async fn get(f: &Fetcher, url: &Url) -> Result<Fetched, FetchError> {
    let path = decoded_path(url, "ftp")?;
    let user = if url.username().is_empty() { "anonymous".to_string() } else { url.username().to_string() };
    let pass = url.password().unwrap_or("anonymous@").to_string();
    if [&user, &pass].iter().any(|s| s.contains(['\r', '\n'])) {
        return Err(err("CR/LF in the credentials"));
    }
    let addr = f.resolve(url).await?;
    let (rd, mut w) = f.connect(addr).await?.into_split();
    let mut r = BufReader::new(rd);
    expect(reply(&mut r).await?, &[220], "greeting")?;
    let (code, _) = expect(command(&mut r, &mut w, &format!("USER {user}")).await?, &[230, 331], "USER")?;
    if code == 331 {
        expect(command(&mut r, &mut w, &format!("PASS {pass}")).await?, &[230, 202], "PASS")?;
    }
    expect(command(&mut r, &mut w, "TYPE I").await?, &[200], "TYPE I")?;
    let port = match command(&mut r, &mut w, "EPSV").await? {
        (229, text) => epsv_port(&text).ok_or_else(|| err(format!("bad EPSV reply {text:?}")))?,
        _ => {
            let (_, text) = expect(command(&mut r, &mut w, "PASV").await?, &[227], "PASV")?;
            pasv_port(&text).ok_or_else(|| err(format!("bad PASV reply {text:?}")))?
        }
    };
    let data_addr = SocketAddr::new(addr.ip(), port);
    let mut data: TcpStream = f.connect(data_addr).await?;
    expect(command(&mut r, &mut w, &format!("RETR {path}")).await?, &[125, 150], "RETR")?;
    let cap = f.cfg.max_bytes;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = data.read(&mut chunk).await.map_err(err)?;
        if n == 0 {
            break;
        }
        append_capped(&mut bytes, &chunk[..n], cap)?;
    }
    drop(data);
    let (status, _) = expect(reply(&mut r).await?, &[226, 250], "transfer")?;
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(Fetched { url: String::new(), final_url: url.to_string(), peer: addr, status, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_replies() {
        assert_eq!(epsv_port("229 Entering Extended Passive Mode (|||40123|)"), Some(40123));
        assert_eq!(pasv_port("227 Entering Passive Mode (10,0,0,1,156,155)."), Some(156 * 256 + 155));
        assert_eq!(pasv_port("227 Entering Passive Mode (10,0,0,1,999,1)"), None);
        assert_eq!(epsv_port("229 nonsense"), None);
    }
}
