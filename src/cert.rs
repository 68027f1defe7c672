//! Certificates: a local development CA under the data directory
//! (`gridedge cert dev`), server certificates it signs, and loading PEM files
//! into rustls configs for DoT, DoH and TLS upstreams.
//!
//! The CA is made once and reused, so a CA a user has trusted stays
//! trusted when the server certificate is issued again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    /// Certificate generation failed.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The files `gridedge cert dev` writes.
#[derive(Debug, Clone)]
pub struct DevCertPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevCertPaths {
    /// The paths under `data_dir/certs`.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("certs");
        Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A CA's validity: ten years, as a development root is installed once.
const CA_DAYS: i64 = 3650;
/// A server certificate's: 397 days, the most browsers accept.
const SERVER_DAYS: i64 = 397;

/// Makes the development CA if there is none, then a server certificate
/// for `localhost`, 127.0.0.1, ::1 and `names`, signed by it.
pub fn dev(data_dir: &Path, names: &[String]) -> Result<DevCertPaths, CertError> {
    let paths = DevCertPaths::new(data_dir);
    let dir = paths.ca_cert.parent().expect("under certs/");
    std::fs::create_dir_all(dir).map_err(|source| io_err(dir, source))?;
    let issuer = if paths.ca_cert.exists() && paths.ca_key.exists() {
        let key_pem = read_to_string(&paths.ca_key)?;
        let key = KeyPair::from_pem(&key_pem)?;
        Issuer::from_ca_cert_pem(&read_to_string(&paths.ca_cert)?, key)?
    } else {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "gridedge local development CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&paths.ca_key, key.serialize_pem().as_bytes())?;
        write_file(&paths.ca_cert, cert.pem().as_bytes())?;
        Issuer::new(params, key)
    };
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    sans.extend(names.iter().cloned());
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("localhost", |n| n));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, SERVER_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_private(&paths.server_key, key.serialize_pem().as_bytes())?;
    write_file(&paths.server_cert, cert.pem().as_bytes())?;
    Ok(paths)
}

/// Issues server certificates for single names from the development CA,
/// on demand (the HTTPS front asks for each name a client's SNI names).
pub struct NameIssuer {
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for NameIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameIssuer")
    }
}

impl NameIssuer {
    /// The CA under `data_dir/certs`; `None` when there is none yet.
    pub fn load(data_dir: &Path) -> Result<Option<NameIssuer>, CertError> {
        let paths = DevCertPaths::new(data_dir);
        if !(paths.ca_cert.exists() && paths.ca_key.exists()) {
            return Ok(None);
        }
        let key = KeyPair::from_pem(&read_to_string(&paths.ca_key)?)?;
        let issuer = Issuer::from_ca_cert_pem(&read_to_string(&paths.ca_cert)?, key)?;
        Ok(Some(NameIssuer { issuer }))
    }

    /// A certificate for `name` alone, and its key.
    pub fn issue(
        &self,
        name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, SERVER_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((vec![cert.der().clone()], key))
    }
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks that run behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// Every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            path: path.to_owned(),
            reason: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_err(path, e))
}

/// A rustls server config on ring for `cert` and `key`, offering `alpn`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert)?, read_key(key)?)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> CertError {
    CertError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    crate::fsutil::write_atomic(path, bytes, false).map_err(|e| io_err(path, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    crate::fsutil::write_atomic(path, bytes, true).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_ca_is_reused_and_server_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dev(dir.path(), &["edge.test".into()]).unwrap();
        let ca = std::fs::read(&p.ca_cert).unwrap();
        dev(dir.path(), &[]).unwrap();
        assert_eq!(ca, std::fs::read(&p.ca_cert).unwrap(), "CA kept");
        server_config(&p.server_cert, &p.server_key, &[b"dot"]).unwrap();
        let err = read_certs(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
