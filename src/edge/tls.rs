//! The HTTPS front: TLS for registry names and configured sites, with
//! certificates the local development CA (`gridedge cert dev`) issues on
//! demand, one per name a client's SNI asks for, kept in a bounded cache.
//! Behind TLS the connection is the proxy's: each one is relayed to the
//! proxy's listener, which serves it as it serves plain HTTP (the way
//! hitch fronts Varnish). Only `edge.proxy_allow` clients are served, and
//! only names this edge serves get a certificate, so a client cannot make
//! it mint certificates for arbitrary names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use lru::LruCache;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::cert::NameIssuer;
use crate::registry::model::Zone;

/// Certificates kept issued; the least recently used are issued again.
const MAX_CERTS: usize = 1024;

/// A client must finish its handshake in this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections relayed at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Issues a certificate for each name it may serve, on first use.
struct NameCerts {
    issuer: NameIssuer,
    zone: Option<Zone>,
    sites: Vec<String>,
    certs: Mutex<LruCache<String, Arc<CertifiedKey>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for NameCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameCerts")
    }
}

impl NameCerts {
    /// Whether this edge serves `name`: a registry name (at any depth
    /// under the zone) or a configured site.
    fn serves(&self, name: &str) -> bool {
        self.sites.iter().any(|s| s == name)
            || self
                .zone
                .as_ref()
                .is_some_and(|z| z.split(&format!("{name}.")).is_ok())
    }
}

impl ResolvesServerCert for NameCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        if !self.serves(&name) {
            tracing::debug!(
                name,
                "HTTPS: no certificate for a name this edge does not serve"
            );
            return None;
        }
        if let Some(cert) = self.certs.lock().get(&name) {
            return Some(cert.clone());
        }
        let issued = self
            .issuer
            .issue(&name)
            .map_err(|e| e.to_string())
            .and_then(|(chain, key)| {
                CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| e.to_string())
            });
        match issued {
            Ok(cert) => {
                let cert = Arc::new(cert);
                self.certs.lock().put(name.clone(), cert.clone());
                tracing::info!(name, "HTTPS: issued a certificate");
                Some(cert)
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "HTTPS: cannot issue a certificate");
                None
            }
        }
    }
}

/// Binds `addr` and relays each allowed client's TLS connection, once
/// decrypted, to the proxy at `proxy`, until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    issuer: NameIssuer,
    zone: Option<Zone>,
    sites: Vec<String>,
    allow: Vec<IpNet>,
    proxy: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = NameCerts {
        issuer,
        zone,
        sites,
        certs: Mutex::new(LruCache::new(
            std::num::NonZeroUsize::new(MAX_CERTS).expect("not zero"),
        )),
        provider: provider.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // The proxy behind speaks both (HTTP/2 by its preface).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "HTTPS listening");
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = permits.clone().acquire_owned() => p.expect("never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if !crate::config::allows(&allow, peer.ip()) {
                tracing::debug!(%peer, "HTTPS: a client outside edge.proxy_allow");
                continue;
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTPS: handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let mut tls = tls;
                match tokio::net::TcpStream::connect(proxy).await {
                    Ok(mut upstream) => {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "HTTPS: cannot reach the proxy"),
                }
            });
        }
    }))
}
