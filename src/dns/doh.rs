//! DNS over HTTPS (RFC 8484): GET with `?dns=` (base64url) and POST with an
//! `application/dns-message` body on `/dns-query`, over HTTP/2 or HTTP/1.1
//! on rustls. hickory-server 0.26 answers POST only, and RFC 8484 section
//! 4.1 makes GET a must for servers, so this listener is ours; it feeds the
//! same handler as every other transport.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hickory_server::net::xfer::Protocol;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::dns::handler::DnsHandler;
use crate::dns::listen;

/// The RFC 8484 media type.
const DNS_MESSAGE: &str = "application/dns-message";
/// The path served.
pub const PATH: &str = "/dns-query";
/// A DNS message is at most 64 KiB; nothing bigger is read.
const MAX_BODY_BYTES: usize = 65_535;

/// Serves DoH on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<DnsHandler>,
    max_connections: usize,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(max_connections));
    while let Some((tcp, src, permit)) = listen::accept_bounded(&listener, &slots, &shutdown).await
    {
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %src, "doh handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(&handler, req, src).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, %src, "doh connection ended");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn respond(
    handler: &DnsHandler,
    req: Request<Incoming>,
    src: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return error(
            StatusCode::NOT_FOUND,
            "not found; DNS queries go to /dns-query",
        );
    }
    let query = match *req.method() {
        Method::GET => {
            let param = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("dns="));
            let Some(param) = param else {
                return error(StatusCode::BAD_REQUEST, "missing dns= parameter");
            };
            match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(param) {
                Ok(q) => q,
                Err(_) => return error(StatusCode::BAD_REQUEST, "dns= is not base64url"),
            }
        }
        Method::POST => {
            let content_type = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if content_type != Some(DNS_MESSAGE) {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type must be application/dns-message",
                );
            }
            match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes().to_vec(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body over 65535 bytes"),
            }
        }
        _ => return error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
    };
    let Some(answer) = listen::answer(handler, query, src, Protocol::Https).await else {
        return error(StatusCode::BAD_REQUEST, "not a DNS query");
    };
    // RFC 8484 section 5.1: HTTP freshness no longer than the smallest TTL.
    let max_age = hickory_proto::op::Message::from_vec(&answer)
        .ok()
        .and_then(|m| m.answers.iter().chain(&m.authorities).map(|r| r.ttl).min())
        .unwrap_or(0);
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, DNS_MESSAGE)
        .header(CACHE_CONTROL, format!("max-age={max_age}"))
        .body(Full::new(Bytes::from(answer)))
        .expect("valid response")
}

fn error(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(message.as_bytes())))
        .expect("valid response")
}
