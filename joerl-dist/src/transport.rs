//! How bytes travel between nodes: plain TCP, or TLS with mutual
//! authentication (rustls with the `ring` provider). The cookie handshake runs
//! inside either.
//!
//! With TLS every node has a certificate and key, and trusts one CA: a node
//! accepts a connection only from a client whose certificate the CA signed,
//! and dials only a server whose certificate the CA signed for the host part
//! of its node name (`name@host`: a DNS name or an IP address). A node with TLS
//! refuses plain TCP and a plain node refuses TLS, each with an error that says
//! so. [`generate_certs`] makes a CA and node certificates for tests and
//! development clusters.
//!
//! After the handshake a TCP connection is split into halves that the reader,
//! the writer and senders writing directly share (see `outqueue.rs`); a TLS
//! connection's write half belongs to its writer task alone.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::HandshakeError;

/// Why TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A PEM file holds no certificate (or no key) of the expected kind.
    #[error("{what}: {detail}")]
    Pem {
        /// Which file or input.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the certificates or key (for example a key that does
    /// not match the certificate).
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificates cannot verify clients.
    #[error("the CA cannot verify clients: {0}")]
    Verifier(String),
    /// Certificates could not be generated.
    #[error("cannot generate certificates: {0}")]
    Generate(String),
}

/// A node's TLS settings: its certificate chain and key, and the CA it trusts
/// for peers in both directions. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig { .. }")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// From PEM files: `cert` (the node's certificate, then any
    /// intermediates), `key` (its private key: PKCS#8, PKCS#1 or SEC1) and
    /// `ca` (the certificates of the CA that signs every node's certificate).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        Self::from_pem(
            &read(cert)?,
            &read(key)?,
            &read(ca)?,
            [cert, key, ca].map(|p| p.display().to_string()),
        )
    }

    /// From PEM text (see [`from_pem_files`](Self::from_pem_files)).
    pub fn from_pem_bytes(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem(
            cert,
            key,
            ca,
            ["the certificate", "the key", "the CA"].map(String::from),
        )
    }

    fn from_pem(cert: &[u8], key: &[u8], ca: &[u8], names: [String; 3]) -> Result<Self, TlsError> {
        let [cert_name, key_name, ca_name] = names;
        let pem_error = |what: &str, detail: String| TlsError::Pem {
            what: what.to_string(),
            detail,
        };
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&cert_name, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(&cert_name, "no CERTIFICATE in it".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| pem_error(&key_name, format!("no private key in it ({e})")))?;
        let mut roots = rustls::RootCertStore::empty();
        let mut cas = 0;
        for c in CertificateDer::pem_slice_iter(ca) {
            let c = c.map_err(|e| pem_error(&ca_name, e.to_string()))?;
            roots
                .add(c)
                .map_err(|e| pem_error(&ca_name, e.to_string()))?;
            cas += 1;
        }
        if cas == 0 {
            return Err(pem_error(&ca_name, "no CERTIFICATE in it".into()));
        }
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// Certificates made by [`generate_certs`], as PEM text.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    /// The CA's certificate (every node trusts it).
    pub ca: String,
    /// For each name asked for: (name, certificate, private key).
    pub nodes: Vec<(String, String, String)>,
}

/// Makes a CA and, for each of `names`, a certificate it signs, valid as a
/// server and as a client for the hosts `localhost`, `127.0.0.1`, `::1`, the
/// name itself and each of `extra_hosts`. For tests and development
/// clusters; production clusters use their own CA.
pub fn generate_certs(names: &[&str], extra_hosts: &[&str]) -> Result<GeneratedCerts, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let fail = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "joerl cluster CA");
    ca_params.distinguished_name = dn;
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let mut nodes = Vec::new();
    for name in names {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .chain(extra_hosts)
            .map(|h| h.to_string())
            .collect();
        if !hosts.iter().any(|h| h == name) {
            hosts.push(name.to_string());
        }
        let mut params = CertificateParams::new(hosts).map_err(fail)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, *name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(fail)?;
        nodes.push((name.to_string(), cert.pem(), key.serialize_pem()));
    }
    Ok(GeneratedCerts {
        ca: ca.pem(),
        nodes,
    })
}

/// How this node's connections travel.
#[derive(Clone, Debug, Default)]
pub(crate) enum Transport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// TLS inside TCP.
    Tls(TlsConfig),
}

/// Bytes of encrypted records rustls may hold before the socket takes them
/// (its default is 64 KiB): a writer's large batch is encrypted in one go
/// and leaves in large writes.
const TLS_BUFFER: usize = 4 * 1024 * 1024;

/// The socket under TLS, read through a buffer: rustls asks for at most 4 KiB
/// a read, which would be a system call each.
type TlsIo = tokio::io::BufReader<TcpStream>;

fn buffered(tcp: TcpStream) -> TlsIo {
    tokio::io::BufReader::with_capacity(256 * 1024, tcp)
}

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The first byte of a TLS alert record.
const TLS_ALERT_RECORD: u8 = 0x15;

impl Transport {
    /// True for plain TCP (where Erlang nodes can connect too).
    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// Secures a TCP connection this node dialed to `peer` (`name@host`).
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        peer: &str,
    ) -> Result<Stream, HandshakeError> {
        let tls = match self {
            Transport::Tcp => return Ok(Stream::Tcp(tcp)),
            Transport::Tls(tls) => tls,
        };
        let host = peer.split_once('@').map_or(peer, |(_, h)| h);
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
            HandshakeError::Tls(format!("{host} is not a host name TLS can verify: {e}"))
        })?;
        tokio_rustls::TlsConnector::from(tls.client.clone())
            .connect(server_name, buffered(tcp))
            .await
            .map(|mut s| {
                s.get_mut().1.set_buffer_limit(Some(TLS_BUFFER));
                Stream::TlsClient(Box::new(s))
            })
            .map_err(|e| {
                HandshakeError::Tls(format!(
                    "{e} (does the peer run with TLS, with a certificate of the same CA for {host}?)"
                ))
            })
    }

    /// Secures a TCP connection this node accepted. A plain node refuses a
    /// TLS client here, with an error that says so.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<Stream, HandshakeError> {
        match self {
            Transport::Tcp => {
                let mut first = [0u8; 1];
                if matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE_RECORD) {
                    return Err(HandshakeError::Tls(
                        "the peer speaks TLS and this node does not: start every node with TLS, or none".into(),
                    ));
                }
                Ok(Stream::Tcp(tcp))
            }
            Transport::Tls(tls) => tokio_rustls::TlsAcceptor::from(tls.server.clone())
                .accept(buffered(tcp))
                .await
                .map(|mut s| {
                    s.get_mut().1.set_buffer_limit(Some(TLS_BUFFER));
                    Stream::TlsServer(Box::new(s))
                })
                .map_err(|e| {
                    let hint = match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                        Some(rustls::Error::InvalidMessage(_)) => {
                            " (the peer does not speak TLS: start every node with TLS, or none)"
                        }
                        Some(rustls::Error::NoCertificatesPresented) => {
                            " (the peer sent no client certificate)"
                        }
                        _ => "",
                    };
                    HandshakeError::Tls(format!("{e}{hint}"))
                }),
        }
    }
}

/// Whether the bytes a plain dialer received look like a TLS alert: the
/// acceptor wants TLS.
pub(crate) fn looks_like_tls(first: u8) -> bool {
    first == TLS_ALERT_RECORD || first == TLS_HANDSHAKE_RECORD
}

/// One connection's byte stream, before it is split.
pub(crate) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, this node dialed.
    TlsClient(Box<tokio_rustls::client::TlsStream<TlsIo>>),
    /// TLS, this node accepted.
    TlsServer(Box<tokio_rustls::server::TlsStream<TlsIo>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsClient(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsClient(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsServer(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
            Stream::TlsServer(s) => s.is_write_vectored(),
        }
    }
}

/// The read half of a connection, for its reader: TCP's own half, or one
/// half of a split TLS stream (one dynamic call per read of up to 64 KiB).
pub(crate) type ReadSide = Box<dyn AsyncRead + Send + Unpin>;

/// The write half of a connection, for its writer.
pub(crate) enum WriteSide {
    /// TCP: shared with senders writing directly (see `outqueue.rs`).
    Tcp(Arc<tokio::net::tcp::OwnedWriteHalf>),
    /// TLS: the writer's alone.
    Tls(tokio::io::WriteHalf<Stream>),
}

impl Stream {
    /// Splits an established connection for its reader and writer.
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), WriteSide::Tcp(Arc::new(w)))
            }
            tls => {
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), WriteSide::Tls(w))
            }
        }
    }
}
