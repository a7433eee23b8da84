//! TLS to PostgreSQL, with libpq's meanings of `sslmode` and `sslrootcert`, on rustls.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` and leaves what a handshake checks
//! to its connector. PostgreSQL users read a URL as libpq does, so this connector does too:
//!
//! | `sslmode` | encrypted | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | |
//! | `allow`, `prefer` (the default) | when the server offers TLS | not checked, unless `sslrootcert` is given: then its chain |
//! | `require` | always | not checked, unless `sslrootcert` is given: then its chain |
//! | `verify-ca` | always | its chain, against `sslrootcert` or the system's roots |
//! | `verify-full` | always | its chain and that it names the host of the URL |
//!
//! `allow` is taken as `prefer` (tokio-postgres has no plain-first attempt): the same
//! connections, encrypted more often. Where libpq reads `~/.postgresql/root.crt` when no
//! `sslrootcert` is given, this reads the system's roots (as libpq's `sslrootcert=system`
//! does), so that a managed database whose certificate comes from a public CA needs only
//! `sslmode=verify-full`. SCRAM's channel binding is not offered (tokio-postgres's default,
//! `channel_binding=prefer`, then authenticates without it).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The URL's TLS settings, read out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots, or `None` for the system's.
    pub root_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Why the URL's TLS settings cannot be used. Names the parameter, never the URL (which may
/// hold a password).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("sslmode must be disable, allow, prefer, require, verify-ca or verify-full")]
    UnknownMode,
    #[error("{0} is given twice")]
    Repeated(&'static str),
    #[error("cannot read sslrootcert {path}: {reason}")]
    RootCert { path: String, reason: String },
    #[error("sslrootcert {0} holds no certificate")]
    NoRootCert(String),
    #[error("no trusted roots: the system has none and sslrootcert is not given")]
    NoSystemRoots,
    #[error("cannot set up TLS: {0}")]
    Rustls(String),
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query: the rest is for
/// tokio-postgres, which refuses both `verify-*` modes and `sslrootcert`.
pub fn take_tls_settings(url: &str) -> Result<(String, TlsSettings), TlsSetupError> {
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    // The query starts at the first `?` after the user and password, as tokio-postgres reads
    // it: a password may hold a `?`.
    let credentials_end = url.find('@').map_or(0, |at| at + 1);
    let Some(query_start) = url[credentials_end..]
        .find('?')
        .map(|at| credentials_end + at)
    else {
        return Ok((url.to_owned(), settings));
    };
    let (base, query) = (&url[..query_start], &url[query_start + 1..]);
    let (mut mode_seen, mut root_seen) = (false, false);
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8_lossy();
        match name {
            "sslmode" => {
                if std::mem::replace(&mut mode_seen, true) {
                    return Err(TlsSetupError::Repeated("sslmode"));
                }
                settings.mode = match &*value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => return Err(TlsSetupError::UnknownMode),
                };
            }
            "sslrootcert" => {
                if std::mem::replace(&mut root_seen, true) {
                    return Err(TlsSetupError::Repeated("sslrootcert"));
                }
                // libpq's word for the system's roots, which are also ours by default.
                settings.root_cert = (value != "system").then(|| PathBuf::from(&*value));
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, settings))
}

impl SslMode {
    /// What tokio-postgres is told: whether to ask for TLS and whether to insist.
    pub fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            SslMode::Disable => Wire::Disable,
            SslMode::Prefer => Wire::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
        }
    }
}

/// What the handshake checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Only that the server holds the key of the certificate it shows.
    Nothing,
    /// Also that the certificate chains to a trusted root.
    Chain,
    /// Also that it names the host.
    ChainAndName,
}

impl TlsSettings {
    fn check(&self) -> Check {
        match self.mode {
            // No handshake, so nothing to check (and no roots to read).
            SslMode::Disable => Check::Nothing,
            SslMode::VerifyFull => Check::ChainAndName,
            SslMode::VerifyCa => Check::Chain,
            SslMode::Prefer | SslMode::Require if self.root_cert.is_some() => Check::Chain,
            SslMode::Prefer | SslMode::Require => Check::Nothing,
        }
    }

    /// The connector for these settings: reads the roots now, so that a missing file stops
    /// the program at start rather than failing every connection.
    pub fn connector(&self) -> Result<RustlsConnect, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
        let webpki = || -> Result<Arc<WebPkiServerVerifier>, TlsSetupError> {
            WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))
        };
        let trust = match self.check() {
            Check::Nothing => Trust::Anyone,
            Check::Chain => Trust::Chain(webpki()?),
            Check::ChainAndName => Trust::ChainAndName(webpki()?),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck { trust, provider }))
            .with_no_client_auth();
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }

    fn roots(&self) -> Result<RootCertStore, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let shown = path.display().to_string();
                let unreadable = |reason: String| TlsSetupError::RootCert {
                    path: shown.clone(),
                    reason,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| unreadable(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| unreadable(e.to_string()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsSetupError::NoRootCert(shown));
                }
            }
            None => {
                // Unreadable entries of the system's store are skipped, as every client does.
                let system = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(system.certs);
                if added == 0 {
                    return Err(TlsSetupError::NoSystemRoots);
                }
            }
        }
        Ok(roots)
    }
}

/// Checks the server's certificate as far as the settings ask. The handshake's signatures
/// are always checked: they prove that the server holds the key of the certificate it shows.
#[derive(Debug)]
struct ServerCheck {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Trust {
    /// `prefer` and `require` without roots: encryption against a passive listener, as
    /// libpq gives; who holds the certificate, nothing says.
    Anyone,
    /// `verify-ca`: the chain must reach a trusted root; the name is not checked (libpq's
    /// meaning, for servers reached by an address their certificate does not name).
    Chain(Arc<WebPkiServerVerifier>),
    /// `verify-full`.
    ChainAndName(Arc<WebPkiServerVerifier>),
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let webpki = match &self.trust {
            Trust::Anyone => return Ok(ServerCertVerified::assertion()),
            Trust::Chain(webpki) | Trust::ChainAndName(webpki) => webpki,
        };
        let verified =
            webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match (&self.trust, verified) {
            // WebPKI checks the chain first and the name last, so a name error means that
            // everything else held.
            (
                Trust::Chain(_),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )),
            ) => Ok(ServerCertVerified::assertion()),
            (_, verified) => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS connector, made once from the settings and cloned per connection.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsHandshake, Self::Error> {
        // A Unix socket comes with no host, and PostgreSQL offers no TLS there: a host that
        // is no name fails only if a handshake is actually attempted.
        Ok(RustlsHandshake {
            config: self.config.clone(),
            server_name: ServerName::try_from(host.to_owned()).ok(),
        })
    }
}

pub struct RustlsHandshake {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        Box::pin(async move {
            let server_name = self.server_name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the host is neither a DNS name nor an IP address, so TLS cannot check it",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(server_name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> (String, TlsSettings) {
        take_tls_settings(url).unwrap()
    }

    #[test]
    fn without_a_query_the_mode_is_prefer_and_the_url_unchanged() {
        let (url, tls) = settings("postgres://u:p@db.example:5432/app");
        assert_eq!(url, "postgres://u:p@db.example:5432/app");
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.check(), Check::Nothing);
    }

    #[test]
    fn the_tls_parameters_are_taken_out_and_the_others_kept_in_order() {
        let (url, tls) = settings(
            "postgres://h/app?application_name=x&sslmode=verify-full&connect_timeout=3&sslrootcert=%2Fetc%2Fca%20bundle.pem",
        );
        assert_eq!(url, "postgres://h/app?application_name=x&connect_timeout=3");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca bundle.pem")));
        assert_eq!(tls.check(), Check::ChainAndName);

        let (url, _) = settings("postgres://h/app?sslmode=disable");
        assert_eq!(url, "postgres://h/app");

        let (url, tls) = settings("postgres://u:pa?ss@h/app?sslmode=require");
        assert_eq!(url, "postgres://u:pa?ss@h/app");
        assert_eq!(tls.mode, SslMode::Require);
    }

    #[test]
    fn each_mode_checks_what_libpq_checks() {
        let check = |query: &str| settings(&format!("postgres://h/db?{query}")).1.check();
        assert_eq!(check("sslmode=disable"), Check::Nothing);
        assert_eq!(check("sslmode=disable&sslrootcert=/ca.pem"), Check::Nothing);
        assert_eq!(check("sslmode=allow"), Check::Nothing);
        assert_eq!(check("sslmode=prefer"), Check::Nothing);
        assert_eq!(check("sslmode=require"), Check::Nothing);
        assert_eq!(check("sslmode=require&sslrootcert=/ca.pem"), Check::Chain);
        assert_eq!(check("sslmode=verify-ca"), Check::Chain);
        assert_eq!(check("sslmode=verify-ca&sslrootcert=system"), Check::Chain);
        assert_eq!(check("sslmode=verify-full"), Check::ChainAndName);
        let wire = |query: &str| settings(&format!("postgres://h/db?{query}")).1.mode.wire();
        use tokio_postgres::config::SslMode as Wire;
        assert_eq!(wire("sslmode=disable"), Wire::Disable);
        assert_eq!(wire("sslmode=allow"), Wire::Prefer);
        assert_eq!(wire("sslmode=verify-ca"), Wire::Require);
        assert_eq!(wire("sslmode=verify-full"), Wire::Require);
    }

    #[test]
    fn unknown_or_repeated_settings_are_refused_by_name() {
        let refused = |url: &str| take_tls_settings(url).unwrap_err().to_string();
        assert_eq!(
            refused("postgres://h/db?sslmode=verify"),
            "sslmode must be disable, allow, prefer, require, verify-ca or verify-full"
        );
        assert_eq!(
            refused("postgres://h/db?sslmode=require&sslmode=disable"),
            "sslmode is given twice"
        );
        assert_eq!(
            refused("postgres://h/db?sslrootcert=/a&sslrootcert=/b"),
            "sslrootcert is given twice"
        );
    }

    #[test]
    fn a_missing_or_empty_root_file_stops_the_connector_naming_the_file() {
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        let error = missing.connector().err().unwrap().to_string();
        assert!(
            error.starts_with("cannot read sslrootcert /nonexistent/ca.pem: "),
            "{error}"
        );
        let dir = std::env::temp_dir().join(format!("statuspulse-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: Some(empty.clone()),
        }
        .connector()
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            error,
            format!("sslrootcert {} holds no certificate", empty.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
