//! The byte stream under the protocol: plain TCP, or TLS (rustls, ring
//! provider) around it, with what each side needs to open one; or, for
//! peers in the driver's own process, an in-process pipe.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::proto::auth::Secret;
use crate::proto::{HANDSHAKE_TIMEOUT, Handshake, MessageReader, MessageWriter, PipeEnd, ProtoError};

/// The reading half of a connection, whatever carries it.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, whatever carries it.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// Certificate, key or CA.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificates or key.
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The driver's TLS identity: certificate chain and private key.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsServer(..)")
    }
}

impl TlsServer {
    /// From a certificate chain and a private key.
    pub fn new(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, TlsError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Completes the server side of a TLS handshake on an accepted stream,
    /// within the handshake deadline.
    pub async fn handshake(&self, stream: TcpStream) -> Result<tokio_rustls::server::TlsStream<TcpStream>, ProtoError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream))
            .await
            .map_err(|_| ProtoError::Timeout(HANDSHAKE_TIMEOUT, "the TLS handshake"))?
            .map_err(|e| ProtoError::Rejected(format!("TLS handshake failed: {e}")))
    }

    /// From PEM files (`--tls-cert`, `--tls-key`).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let certs = read_certs(cert, "a certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            what: "a private key",
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::new(certs, key)
    }
}

/// What a connecting peer trusts: the CA that signed the driver's certificate.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient(..)")
    }
}

impl TlsClient {
    /// Trusting these CA certificates.
    pub fn new(cas: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca)?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// From a PEM file of CA certificates (`--tls-ca`).
    pub fn from_pem_file(ca: &Path) -> Result<Self, TlsError> {
        Self::new(read_certs(ca, "a CA certificate")?)
    }
}

/// What a peer (executor or client) presents to the driver.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The shared secret, if the driver asks for one.
    pub secret: Option<Secret>,
    /// TLS, if the driver speaks it.
    pub tls: Option<TlsClient>,
}

/// The host part of `host:port` or `[v6]:port`, as TLS names the server.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn split<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (BoxRead, BoxWrite) {
    let (read, write) = tokio::io::split(stream);
    (Box::new(read), Box::new(write))
}

/// Opens a connection to the driver at `addr`, through TLS when `tls` is set
/// (the driver's certificate must name the host in `addr`).
pub async fn connect(addr: &str, tls: Option<&TlsClient>) -> Result<(BoxRead, BoxWrite), ProtoError> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return Ok((Box::new(read), Box::new(write)));
    };
    let name = ServerName::try_from(host_of(addr).to_string())
        .map_err(|e| ProtoError::Rejected(format!("{addr} cannot be checked against a certificate: {e}")))?;
    let tls_stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connector.connect(name, stream))
        .await
        .map_err(|_| ProtoError::Timeout(HANDSHAKE_TIMEOUT, "the TLS handshake"))?
        .map_err(|e| ProtoError::Rejected(format!("TLS handshake with {addr} failed: {e}")))?;
    Ok(split(tls_stream))
}

/// A connection to the driver with the handshake done: the message reader
/// and writer, the id the driver gave, and the heartbeat it asks for.
pub struct Dialed {
    /// Messages from the driver.
    pub reader: MessageReader<BoxRead>,
    /// Messages to the driver.
    pub writer: MessageWriter<BoxWrite>,
    /// The id the driver gave this peer (0 for clients).
    pub id: u64,
    /// How often the driver wants heartbeats.
    pub heartbeat: Duration,
}

/// Connects to the driver at `addr` with `credentials` and shakes hands
/// with `hello`.
pub async fn dial(
    addr: &str,
    credentials: &Credentials,
    hello: Handshake,
    max_frame: usize,
) -> Result<Dialed, ProtoError> {
    let (read, write) = connect(addr, credentials.tls.as_ref()).await?;
    let reader = MessageReader::new(read, max_frame);
    let writer = MessageWriter::new(write, max_frame);
    shake((reader, writer), credentials, hello).await
}

/// Opens a connection to the driver of this process through `driver` and
/// shakes hands with `hello`, exactly as [`dial`] does over TCP.
pub async fn dial_in_process(
    driver: &InProcess,
    credentials: &Credentials,
    hello: Handshake,
    max_frame: usize,
) -> Result<Dialed, ProtoError> {
    shake(driver.open(max_frame), credentials, hello).await
}

async fn shake(
    (mut reader, mut writer): Connection,
    credentials: &Credentials,
    hello: Handshake,
) -> Result<Dialed, ProtoError> {
    let (id, heartbeat) = crate::proto::handshake(&mut reader, &mut writer, hello, credentials.secret.as_ref()).await?;
    Ok(Dialed {
        reader,
        writer,
        id,
        heartbeat,
    })
}

/// One end of a connection: its reader and writer.
pub type Connection = PipeEnd<BoxRead, BoxWrite>;

/// How peers in the driver's own process reach it (local mode): each
/// [`InProcess::open`] starts a connection the driver serves like any
/// other and returns the peer's end of it. Frames cross as shared bytes
/// ([`crate::proto::pipe`]): nothing is copied through a socket.
#[derive(Clone)]
pub struct InProcess(Arc<dyn Fn(usize) -> Connection + Send + Sync>);

impl InProcess {
    /// From the driver's side of opening: given the peer's largest frame,
    /// serve a new pipe and return the peer's end.
    pub fn new(open: impl Fn(usize) -> Connection + Send + Sync + 'static) -> Self {
        Self(Arc::new(open))
    }

    /// A new connection to the driver, refusing frames above `max_frame`.
    pub fn open(&self, max_frame: usize) -> Connection {
        (self.0)(max_frame)
    }
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InProcess(..)")
    }
}

/// Wraps an accepted connection, in TLS when the driver has it.
pub async fn accept(stream: TcpStream, tls: Option<&TlsServer>) -> Result<(BoxRead, BoxWrite), ProtoError> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return Ok((Box::new(read), Box::new(write)));
    };
    Ok(split(tls.handshake(stream).await?))
}

/// How long telling a refused peer that the driver is busy may take.
const BUSY_REPLY_DEADLINE: Duration = Duration::from_secs(1);

/// Refuses an accepted connection because the driver is at a connection
/// limit: on plain TCP one [`Handshake::Busy`] frame (within a short
/// deadline, so a peer that does not read cannot hold the task), on TLS
/// nothing, since a TLS handshake would cost more than the refusal saves.
pub async fn refuse_busy(stream: TcpStream, tls: bool, reason: &str, retry_after: Duration) {
    if tls {
        return;
    }
    let busy = Handshake::Busy {
        reason: reason.to_string(),
        retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
    };
    let mut writer = MessageWriter::new(stream, crate::proto::HANDSHAKE_MAX_FRAME);
    let _ = tokio::time::timeout(BUSY_REPLY_DEADLINE, writer.send(&busy)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_come_from_addresses() {
        assert_eq!(host_of("driver.example:7077"), "driver.example");
        assert_eq!(host_of("127.0.0.1:7077"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7077"), "::1");
    }

    #[test]
    fn pem_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsClient::from_pem_file(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pem") && err.contains("no certificate"), "{err}");
        let err = TlsServer::from_pem_files(&dir.path().join("missing.pem"), &empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[tokio::test]
    async fn tls_carries_bytes_and_refuses_an_untrusted_driver() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let signed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert = signed.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(signed.key_pair.serialize_der().into());
        let server = TlsServer::new(vec![cert.clone()], key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let echo = tokio::spawn(async move {
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                if let Ok((mut r, mut w)) = accept(stream, Some(&server)).await {
                    let mut buf = [0u8; 5];
                    r.read_exact(&mut buf).await.unwrap();
                    w.write_all(&buf).await.unwrap();
                    w.flush().await.unwrap();
                }
            }
        });
        let trusting = TlsClient::new(vec![cert]).unwrap();
        let (mut r, mut w) = connect(&addr, Some(&trusting)).await.unwrap();
        w.write_all(b"hello").await.unwrap();
        w.flush().await.unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let distrusting = TlsClient::new(vec![other.cert.der().clone()]).unwrap();
        let err = connect(&addr, Some(&distrusting)).await.err().unwrap().to_string();
        assert!(err.contains("TLS handshake"), "{err}");
        echo.await.unwrap();
    }
}
