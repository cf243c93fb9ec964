//! The per-cluster certificate authority and per-process identities.
//!
//! Every process in a cluster (driver, executors) holds a certificate signed by the cluster's CA
//! and accepts only peers presenting one too: a process without a certificate, or with one from
//! another cluster's CA, fails the TLS handshake. Certificates name the fixed DNS name
//! [`CLUSTER_SERVER_NAME`], so a peer is verified by the CA that signed it, not by its address
//! (executors and drivers move between hosts and ports).
//!
//! On disk, a cluster directory holds `ca.crt` and `ca.key`; a process may also find its own
//! `NAME.crt`/`NAME.key` there (local mode writes one per executor). Private keys are written
//! with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{NetError, Result};

/// DNS name written into every node certificate and used as the TLS server name.
pub const CLUSTER_SERVER_NAME: &str = "sluice-cluster";
/// ALPN protocol id; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"sluice/1";

const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";

/// A cluster's certificate authority: the trust root every process checks its peers against.
#[derive(Clone)]
pub struct ClusterCa {
    cert_pem: String,
    /// Present when this process may issue identities (it holds the CA key).
    key_pem: Option<String>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("can_issue", &self.key_pem.is_some())
            .finish()
    }
}

impl ClusterCa {
    /// Generates a fresh CA with a random key.
    pub fn generate(cluster_name: &str) -> Result<Self> {
        let key = KeyPair::generate().map_err(|e| cert_err("generating the CA key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| cert_err("building CA parameters", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("Sluice cluster CA {cluster_name}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|e| cert_err("self-signing the CA", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
        })
    }

    /// Writes `ca.crt` and (if held) `ca.key` (mode 0600) into `dir`, creating it; fsynced
    /// when `durable` (a cluster directory, not a run's temporary one).
    pub fn write_to_dir(&self, dir: &Path, durable: bool) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        write_file(
            &dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            0o644,
            durable,
        )?;
        if let Some(key) = &self.key_pem {
            write_file(&dir.join(CA_KEY_FILE), key.as_bytes(), 0o600, durable)?;
        }
        Ok(())
    }

    /// Loads the CA from a cluster directory. `ca.key` is optional: without it the process can
    /// verify peers but not issue identities, so it needs its own `NAME.crt`/`NAME.key`.
    pub fn load_from_dir(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT_FILE);
        let cert_pem = fs::read_to_string(&cert_path).map_err(|e| io_err("read", &cert_path, e))?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| cert_err(&format!("parsing {}", cert_path.display()), e))?;
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem = match fs::read_to_string(&key_path) {
            Ok(k) => Some(k),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &key_path, e)),
        };
        Ok(Self { cert_pem, key_pem })
    }

    /// The same CA without its private key: enough to verify peers, not to issue identities.
    pub fn without_key(&self) -> Self {
        Self {
            cert_pem: self.cert_pem.clone(),
            key_pem: None,
        }
    }

    /// The CA certificate in DER form.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| cert_err("parsing the CA certificate", e))
    }

    /// Issues a new identity named `name` (the certificate's common name), valid for both the
    /// server and the client side of a connection.
    pub fn issue(&self, name: &str) -> Result<NodeIdentity> {
        let ca_key_pem = self.key_pem.as_ref().ok_or_else(|| NetError::Certificate {
            context: format!("issuing a certificate for {name}"),
            message: "this cluster directory has no ca.key".into(),
        })?;
        let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| cert_err("parsing ca.key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)
            .map_err(|e| cert_err("loading the CA certificate", e))?;
        let key = KeyPair::generate().map_err(|e| cert_err("generating a node key", e))?;
        let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()])
            .map_err(|e| cert_err("building node parameters", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| cert_err(&format!("signing the certificate for {name}"), e))?;
        Ok(NodeIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// One process's certificate and private key.
#[derive(Clone)]
pub struct NodeIdentity {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeIdentity(..)")
    }
}

impl NodeIdentity {
    /// Writes `NAME.crt` and `NAME.key` (mode 0600) into `dir`; fsynced when `durable`.
    pub fn write_to_dir(&self, dir: &Path, name: &str, durable: bool) -> Result<()> {
        write_file(
            &dir.join(format!("{name}.crt")),
            self.cert_pem.as_bytes(),
            0o644,
            durable,
        )?;
        write_file(
            &dir.join(format!("{name}.key")),
            self.key_pem.as_bytes(),
            0o600,
            durable,
        )
    }

    /// Loads `NAME.crt`/`NAME.key` from `dir`; `Ok(None)` when they do not exist.
    pub fn load_from_dir(dir: &Path, name: &str) -> Result<Option<Self>> {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        let cert_pem = match fs::read_to_string(&cert_path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &cert_path, e)),
        };
        let key_pem = fs::read_to_string(&key_path).map_err(|e| io_err("read", &key_path, e))?;
        Ok(Some(Self { cert_pem, key_pem }))
    }

    /// Loads `NAME.crt`/`NAME.key` from the cluster directory, or issues a fresh identity from
    /// the CA when the directory holds `ca.key` instead.
    pub fn load_or_issue(dir: &Path, ca: &ClusterCa, name: &str) -> Result<Self> {
        match Self::load_from_dir(dir, name)? {
            Some(id) => Ok(id),
            None => ca.issue(name),
        }
    }

    /// The certificate chain, DER-encoded.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| cert_err("parsing the node certificate", e))
    }

    /// The private key, DER-encoded.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivatePkcs8KeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map(PrivateKeyDer::Pkcs8)
            .map_err(|e| cert_err("parsing the node key", e))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &ClusterCa) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der()?)
        .map_err(|e| NetError::Tls(format!("adding the cluster CA as trust root: {e}")))?;
    Ok(Arc::new(roots))
}

/// TLS 1.3 server configuration that requires a client certificate signed by `ca`.
pub fn server_config(ca: &ClusterCa, identity: &NodeIdentity) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
            .build()
            .map_err(|e| NetError::Tls(format!("building the client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain()?, identity.private_key()?)
        .map_err(|e| NetError::Tls(format!("loading the node certificate: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// TLS 1.3 client configuration presenting `identity` and trusting only `ca`.
pub fn client_config(ca: &ClusterCa, identity: &NodeIdentity) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(identity.cert_chain()?, identity.private_key()?)
        .map_err(|e| NetError::Tls(format!("loading the node certificate: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

fn write_file(path: &Path, contents: &[u8], mode: u32, durable: bool) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    file.write_all(contents)
        .and_then(|_| if durable { file.sync_all() } else { Ok(()) })
        .map_err(|e| io_err("write", path, e))
}

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> NetError {
    NetError::Io {
        action,
        path: PathBuf::from(path),
        source,
    }
}

fn cert_err(context: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Certificate {
        context: context.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_and_identity_round_trip_through_a_directory_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("test").unwrap();
        ca.write_to_dir(dir.path(), true).unwrap();
        let loaded = ClusterCa::load_from_dir(dir.path()).unwrap();
        let id = loaded.issue("executor-1").unwrap();
        id.write_to_dir(dir.path(), "executor-1", true).unwrap();
        for key in ["ca.key", "executor-1.key"] {
            let mode = fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let id = NodeIdentity::load_from_dir(dir.path(), "executor-1")
            .unwrap()
            .expect("written above");
        server_config(&loaded, &id).unwrap();
        client_config(&loaded, &id).unwrap();
    }

    #[test]
    fn a_ca_without_its_key_cannot_issue() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::generate("x")
            .unwrap()
            .write_to_dir(dir.path(), true)
            .unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        let ca = ClusterCa::load_from_dir(dir.path()).unwrap();
        let err = ca.issue("n").unwrap_err().to_string();
        assert!(err.contains("no ca.key"), "{err}");
    }
}
