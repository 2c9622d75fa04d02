//! TLS for the Flight endpoints (Flight SQL and the speed layer's states), and the endpoint
//! URLs clients accept.
//!
//! A server serves TLS when its section names a certificate and key ([`Config::tls`]): its
//! TCP connections go through a rustls handshake (ALPN `h2`, as gRPC clients require) before
//! tonic sees them. A client speaks TLS to `grpc+tls://` and `https://` endpoints, trusting
//! a given certificate authority or else the system's roots. rustls runs with the ring
//! provider, on what the dependency tree already builds.
//!
//! [`Config::tls`]: crate::config::Config::tls

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::config::TlsFiles;

/// The ring provider, which the dependency tree builds beside another (rustls then wants a
/// choice).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS acceptor for a certificate chain and key (PEM); the error says what is
/// wrong with them.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no certificate (expected PEM)".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not serve: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS acceptor of `section` (`serve` or `speed`), if its certificate and key are set;
/// an error naming `<section>.tls_cert` when they cannot serve.
pub fn acceptor_of(config: &crate::config::Config, section: &str) -> crate::Result<Option<TlsAcceptor>> {
    let Some(files) = config.tls(section)? else {
        return Ok(None);
    };
    acceptor(&files).map(Some).map_err(|m| {
        crate::Error::config(
            &config.file,
            format!("{section}.tls_cert"),
            format!("cannot serve TLS: {m}"),
        )
    })
}

/// Serves `router` on `listener` until `stop`: through the TLS handshake with `tls`, else in
/// plaintext.
pub async fn serve(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(acceptor) => {
            let incoming = incoming(listener, acceptor, stop.clone());
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
    }
}

/// A TLS connection accepted by [`incoming`].
pub struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The connections of `listener` through the TLS handshake, for tonic's
/// `serve_with_incoming_shutdown`, until `stop`. A failed handshake (a plaintext client, an
/// untrusted certificate) drops that connection only.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    stop: CancellationToken,
) -> impl Stream<Item = io::Result<TlsIo>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsIo>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer): (TcpStream, SocketAddr) = tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(TlsIo(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "a TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|io| (Ok(io), rx)) })
}

/// A client's TLS connector: trusting `ca` (PEM), or the system's roots without one.
pub fn connector(ca: Option<&[u8]>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA certificate cannot be trusted: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file holds no certificate (expected PEM)".into());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects TCP then TLS to an endpoint's host, for tonic's `connect_with_connector`.
#[derive(Clone)]
pub struct TlsConnect(TlsConnector);

type Connecting = Pin<Box<dyn Future<Output = io::Result<hyper_util::rt::TokioIo<ClientTls>>> + Send>>;
type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

impl tower::Service<tonic::codegen::http::Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<ClientTls>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Connecting {
        let tls = self.0.clone();
        Box::pin(async move {
            let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid("the endpoint has no host".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
            Ok(hyper_util::rt::TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

/// The tonic endpoint of `endpoint`, and for a TLS one the connector that reaches it,
/// trusting `ca` or the system's roots.
fn prepare(
    endpoint: &FlightEndpoint,
    ca: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<(Endpoint, Option<TlsConnect>), String> {
    let tls = if endpoint.is_tls() {
        Some(TlsConnect(connector(ca)?))
    } else {
        None
    };
    Ok((endpoint.endpoint.clone().connect_timeout(timeout), tls))
}

/// A channel to `endpoint` that connects on first use.
pub fn channel(endpoint: &FlightEndpoint, ca: Option<&[u8]>, timeout: std::time::Duration) -> Result<Channel, String> {
    Ok(match prepare(endpoint, ca, timeout)? {
        (endpoint, Some(tls)) => endpoint.connect_with_connector_lazy(tls),
        (endpoint, None) => endpoint.connect_lazy(),
    })
}

/// A channel to `endpoint`, connected now: the error says why it cannot be.
pub async fn connect(
    endpoint: &FlightEndpoint,
    ca: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<Channel, String> {
    let connected = match prepare(endpoint, ca, timeout)? {
        (endpoint, Some(tls)) => endpoint.connect_with_connector(tls).await,
        (endpoint, None) => endpoint.connect().await,
    };
    connected.map_err(|e| {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        message
    })
}

/// A Flight endpoint as users write it, parsed once: `grpc+tls://h:p` and `https://h:p` are
/// TLS, `grpc://h:p`, `http://h:p` and a bare `h:p` are plaintext.
#[derive(Debug, Clone)]
pub struct FlightEndpoint {
    /// As written, for messages.
    written: String,
    /// The URL tonic connects to: `https://` for TLS, else `http://`.
    url: String,
    /// `url` parsed, as `http://` either way: tonic sees plaintext HTTP/2, the connector
    /// does the TLS.
    endpoint: Endpoint,
}

impl FlightEndpoint {
    /// An endpoint as written; the error says why it is not one.
    pub fn parse(written: &str) -> Result<Self, String> {
        let url = endpoint_url(written);
        let endpoint = Endpoint::from_shared(url.replacen("https://", "http://", 1))
            .map_err(|e| format!("`{url}` is not an endpoint URL: {e}"))?;
        Ok(FlightEndpoint {
            written: written.to_string(),
            url,
            endpoint,
        })
    }

    /// The endpoint as written.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// The URL connected to: `https://host:port` or `http://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }
}

impl std::str::FromStr for FlightEndpoint {
    type Err = String;

    fn from_str(written: &str) -> Result<Self, String> {
        FlightEndpoint::parse(written)
    }
}

/// An endpoint in the configuration: the error names it as written.
impl<'de> Deserialize<'de> for FlightEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = String::deserialize(d)?;
        FlightEndpoint::parse(&written).map_err(|m| serde::de::Error::custom(format!("`{written}`: {m}")))
    }
}

/// The URL tonic connects to for an endpoint as users write it.
fn endpoint_url(endpoint: &str) -> String {
    if let Some(rest) = endpoint.strip_prefix("grpc+tls://") {
        format!("https://{rest}")
    } else if let Some(rest) = endpoint.strip_prefix("grpc://") {
        format!("http://{rest}")
    } else if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_say_whether_they_are_tls() {
        for (written, url, tls) in [
            ("grpc+tls://db:443", "https://db:443", true),
            ("https://db:443", "https://db:443", true),
            ("grpc://127.0.0.1:50051", "http://127.0.0.1:50051", false),
            ("http://127.0.0.1:50051", "http://127.0.0.1:50051", false),
            ("127.0.0.1:50051", "http://127.0.0.1:50051", false),
        ] {
            let endpoint = FlightEndpoint::parse(written).unwrap();
            assert_eq!(endpoint.url(), url);
            assert_eq!(endpoint.as_written(), written);
            assert_eq!(endpoint.is_tls(), tls, "{written}");
        }
        let e = FlightEndpoint::parse("db host:1").unwrap_err();
        assert!(e.contains("`http://db host:1` is not an endpoint URL"), "{e}");
    }

    #[test]
    fn files_that_are_not_pem_say_so() {
        let files = TlsFiles {
            cert: b"not a certificate".to_vec(),
            key: b"not a key".to_vec(),
        };
        let err = acceptor(&files).err().expect("refused");
        assert!(err.contains("no certificate"), "{err}");
        let err = connector(Some(b"nothing here")).err().expect("refused");
        assert!(err.contains("no certificate"), "{err}");
    }
}
