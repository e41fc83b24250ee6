//! http and https: one HTTP/1.1 GET per hop over a connection to a checked address; redirects
//! are followed by hand so each hop is resolved and checked again.

use super::{append_capped, protocol_error, FetchError, Fetched, Fetcher};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

pub(super) async fn get(f: &Fetcher, mut url: Url) -> Result<Fetched, FetchError> {
    let cap = f.cfg.max_bytes;
    let mut hops = 0u32;
    loop {
        let addr = f.resolve(&url).await?;
        let tcp = f.connect(addr).await?;
        let response = if url.scheme() == "https" {
            let name = match url.host() {
                Some(url::Host::Domain(d)) => {
                    ServerName::try_from(d.to_string()).map_err(|e| protocol_error("tls", e))?
                }
                _ => ServerName::IpAddress(addr.ip().into()),
            };
            let tls = tokio_rustls::TlsConnector::from(f.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| protocol_error("tls", e))?;
            request(f, tls, &url).await?
        } else {
            request(f, tcp, &url).await?
        };
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| protocol_error("http", format!("{status} without a Location")))?;
            let next = url.join(location).map_err(|e| FetchError::BadUrl(format!("redirect to {location:?}: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(FetchError::BadUrl(format!("redirect to scheme {:?}", next.scheme())));
            }
            hops += 1;
            if hops > f.cfg.max_redirects {
                return Err(FetchError::TooManyRedirects { cap: f.cfg.max_redirects });
            }
            tracing::debug!(from = %url, to = %next, "redirect");
            url = next;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::HttpStatus { status: status.as_u16(), url: url.to_string() });
        }
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap) {
            return Err(FetchError::TooLarge { cap });
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| protocol_error("http", e))?;
            if let Some(data) = frame.data_ref() {
                append_capped(&mut bytes, data, cap)?;
            }
        }
        return Ok(Fetched {
            url: String::new(),
            final_url: url.to_string(),
            peer: addr,
            status: status.as_u16(),
            bytes,
        });
    }
}

async fn request<S>(f: &Fetcher, io: S, url: &Url) -> Result<hyper::Response<hyper::body::Incoming>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Header names as wget and curl write them (some droppers' servers compare them exactly).
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| protocol_error("http", e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "fetch connection ended");
        }
    });
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return Err(FetchError::BadUrl("no host".into())),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let req = hyper::Request::get(target)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, f.cfg.user_agent.as_str())
        .header(hyper::header::ACCEPT, "*/*")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| protocol_error("http", e))?;
    sender.send_request(req).await.map_err(|e| protocol_error("http", e))
}
