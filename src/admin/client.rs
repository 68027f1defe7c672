//! A small HTTP/1.1 client for another edge's admin API: what the `name`
//! commands and a registry follower use. One request per connection (the
//! admin API is low-rate), a timeout on the whole exchange, and a cap on
//! the response body so a wrong or hostile peer cannot exhaust memory.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// The longest one admin exchange may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response body read: a batch of 256 full blocks fits.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT`.
    #[error("`{url}` is not an admin URL like http://127.0.0.1:9100: {reason}")]
    BadUrl { url: String, reason: &'static str },
    /// The host did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    /// The connection failed.
    #[error("cannot reach the admin API at {addr}: {source} (is `gridedge run` running?)")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin API at {addr}: {message}")]
    Http { addr: String, message: String },
    /// No answer in time.
    #[error("admin API at {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// A file to send could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Response {
    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_owned()
    }
}

/// A client for one admin listener.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `host:port`, as given.
    authority: String,
}

impl AdminClient {
    /// A client for `http://HOST:PORT` (a trailing `/` is allowed).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let bad = |reason| ClientError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("it must start with http://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("it must be http://HOST:PORT with no path"));
        }
        let (_, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("it needs a port"))?;
        port.parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?;
        Ok(Self {
            authority: authority.to_owned(),
        })
    }

    /// A client for a listener address.
    pub fn for_addr(addr: SocketAddr) -> Self {
        Self {
            authority: addr.to_string(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a binary body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `POST path` with the file at `file` as the body, streamed from disk,
    /// allowing `timeout` for the whole exchange (a large upload needs more
    /// than the usual bound).
    pub async fn post_file(
        &self,
        path: &str,
        file: &std::path::Path,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let addr = self.authority.clone();
        let file_err = |source| ClientError::File {
            path: file.to_owned(),
            source,
        };
        let opened = tokio::fs::File::open(file).await.map_err(file_err)?;
        let len = opened.metadata().await.map_err(file_err)?.len();
        let frames = tokio_util::io::ReaderStream::new(opened)
            .map(|chunk| chunk.map(hyper::body::Frame::data));
        let body = http_body_util::StreamBody::new(frames);
        tokio::time::timeout(timeout, self.exchange(Method::POST, path, body, Some(len)))
            .await
            .map_err(|_| ClientError::Timeout { addr, timeout })?
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let addr = self.authority.clone();
        let len = body.as_ref().map(|b| b.len() as u64);
        let body = Full::new(Bytes::from(body.unwrap_or_default()));
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, body, len))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: TIMEOUT,
            })?
    }

    /// One request on a new connection; `len` is the body's length when
    /// there is a body to send.
    async fn exchange<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
        len: Option<u64>,
    ) -> Result<Response, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let http = |e: &dyn std::fmt::Display| ClientError::Http {
            addr: self.authority.clone(),
            message: e.to_string(),
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|source| ClientError::Resolve {
                host: self.authority.clone(),
                source,
            })?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| ClientError::Connect {
            addr: self.authority.clone(),
            source: last.unwrap_or_else(|| std::io::Error::other("no address")),
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        let driver = tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(len) = len {
            builder = builder
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .header(hyper::header::CONTENT_LENGTH, len);
        }
        let request = builder.body(body).map_err(|e| http(&e))?;
        let response = sender.send_request(request).await.map_err(|e| http(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        driver.abort();
        Ok(Response { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(AdminClient::new("http://127.0.0.1:9100").is_ok());
        assert!(AdminClient::new("http://localhost:9100/").is_ok());
        for bad in [
            "127.0.0.1:9100",
            "https://127.0.0.1:9100",
            "http://127.0.0.1",
            "http://127.0.0.1:x",
            "http://127.0.0.1:9100/registry",
        ] {
            assert!(AdminClient::new(bad).is_err(), "{bad} accepted");
        }
    }
}
