//! Where the database is and how to reach it: a connection URL read as libpq reads it, TLS
//! included, and the URL as the host may show it.
//!
//! `sslmode` takes libpq's values, with libpq's meaning. `disable`: plain TCP. `allow` and
//! `prefer` (the default): TLS when the server offers it, its certificate not checked.
//! `require`: TLS or no connection, the certificate not checked, unless `sslrootcert` is given
//! (then as `verify-ca`). `verify-ca`: the certificate must be signed by a root of `sslrootcert`.
//! `verify-full`: that, and it must name the host the URL names. `sslrootcert` is a PEM file
//! (default `~/.postgresql/root.crt`, as libpq's), or `system` for the system's roots;
//! `sslcert` and `sslkey` give a client certificate. TLS is rustls', with aws-lc-rs (post-quantum key exchange
//! where the server offers it).
//!
//! The password is never shown: [`Target::shown`] is built from the parsed configuration, so
//! it holds none whether it came as `user:password@` or as `?password=`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode as WireMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A database to connect to: its configuration, the TLS connector its `sslmode` asks for, and
/// how it is shown.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// `postgres://user@host:port/dbname?sslmode=…`, never with a password.
    pub shown: String,
}

impl Target {
    /// Reads `url`. The error shows the URL as [`shown_unread`] does.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (rest, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = SslMode::Prefer;
        let (mut root, mut cert, mut key) = (None, None, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sslmode" => mode = SslMode::parse(&percent_decoded(value)?)?,
                "sslrootcert" => root = Some(percent_decoded(value)?),
                "sslcert" => cert = Some(PathBuf::from(percent_decoded(value)?)),
                "sslkey" => key = Some(PathBuf::from(percent_decoded(value)?)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            rest.to_owned()
        } else {
            format!("{rest}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|error: tokio_postgres::Error| super::with_causes(&error))?;
        config.ssl_mode(match mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Allow | SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        });
        // libpq: `require` with a root certificate checks the chain, as `verify-ca`.
        let mode = match (mode, &root) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        if root.as_deref() == Some("system") && mode != SslMode::VerifyFull {
            // Any public certificate chains to the system's roots: only the name tells this
            // server apart (libpq 16 refuses the same).
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full, not {}",
                mode.as_str()
            ));
        }
        let tls = client_config(mode, root.as_deref(), cert.as_deref(), key.as_deref())?;
        let shown = shown(&config, mode);
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
            shown,
        })
    }
}

/// `url`, which could not be read, as it may be shown: its scheme, user and hosts, no password
/// and no parameters (one may be a password).
pub fn shown_unread(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(rest, _)| rest);
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The parsed configuration as a URL without its password.
fn shown(config: &tokio_postgres::Config, mode: SslMode) -> String {
    let user = config.get_user().unwrap_or("");
    let password = if config.get_password().is_some() {
        ":***"
    } else {
        ""
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let at = if user.is_empty() && password.is_empty() {
        ""
    } else {
        "@"
    };
    format!(
        "postgres://{user}{password}{at}{}/{}?sslmode={}",
        hosts.join(","),
        config.get_dbname().unwrap_or(""),
        mode.as_str()
    )
}

/// A parameter's value with its `%XX` escapes decoded.
fn percent_decoded(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("a bad %-escape in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8 once decoded"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS client `mode` asks for.
fn client_config(
    mode: SslMode,
    root: Option<&str>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
            Arc::new(Unchecked(Arc::clone(&provider)))
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(mode, root)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|error| format!("sslrootcert: {error}"))?;
            if mode == SslMode::VerifyCa {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (cert, key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|error| format!("sslcert {}: {error}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| format!("sslkey {}: {error}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| format!("sslcert and sslkey: {error}"))
        }
        _ => Err("sslcert and sslkey go together".into()),
    }
}

/// The roots a certificate must chain to: `sslrootcert`'s file, the system's (`system`), or
/// libpq's default file.
fn roots(mode: SslMode, root: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if root == Some("system") {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err("sslrootcert=system: no root certificate found on this system".into());
        }
        return Ok(store);
    }
    let path = match root {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            let default = Path::new(&home).join(".postgresql/root.crt");
            if !default.is_file() {
                return Err(format!(
                    "sslmode={} needs the roots to check the server's certificate: give \
                     sslrootcert=PATH (a PEM file) or sslrootcert=system",
                    mode.as_str()
                ));
            }
            default
        }
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| format!("sslrootcert {}: {error}", path.display()))?;
    for cert in certs {
        store
            .add(cert)
            .map_err(|error| format!("sslrootcert {}: {error}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {}: no certificate in it",
            path.display()
        ));
    }
    Ok(store)
}

/// `prefer` and `require` without roots, as libpq: encrypted, the server's certificate taken
/// as it comes (the handshake's signatures are still checked against it).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name the certificate gives is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown_of(url: &str) -> String {
        match Target::parse(url) {
            Ok(target) => target.shown,
            Err(error) => panic!("{url}: {error}"),
        }
    }

    #[test]
    fn a_url_is_shown_without_its_password_wherever_it_was_given() {
        assert_eq!(
            shown_of("postgres://app:s3cret@db.internal:5432/tasks"),
            "postgres://app:***@db.internal:5432/tasks?sslmode=prefer"
        );
        assert_eq!(
            shown_of("postgresql://app@db/tasks?password=s3cret&sslmode=require"),
            "postgres://app:***@db:5432/tasks?sslmode=require"
        );
        assert_eq!(
            shown_of("postgres://app@127.0.0.1:5433/tasks?sslmode=disable"),
            "postgres://app@127.0.0.1:5433/tasks?sslmode=disable"
        );
        assert_eq!(
            shown_unread("postgres://app:s3cret@db/tasks?password=more&bad"),
            "postgres://app:***@db/tasks"
        );
    }

    #[test]
    fn sslmode_takes_libpq_values_and_says_what_is_missing() {
        let mode = |url: &str| Target::parse(url).map(|target| target.config.get_ssl_mode());
        assert_eq!(mode("postgres://db/x").ok(), Some(WireMode::Prefer));
        assert_eq!(
            mode("postgres://db/x?sslmode=disable").ok(),
            Some(WireMode::Disable)
        );
        assert_eq!(
            mode("postgres://db/x?sslmode=require").ok(),
            Some(WireMode::Require)
        );
        let Err(error) = mode("postgres://db/x?sslmode=sometimes") else {
            panic!("a bad sslmode is refused");
        };
        assert!(error.contains("verify-full"), "{error}");
        let Err(error) = mode("postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent")
        else {
            panic!("a missing root file is refused");
        };
        assert!(error.contains("/nonexistent"), "{error}");
        let Err(error) = mode("postgres://db/x?sslmode=verify-ca&sslrootcert=system") else {
            panic!("the system's roots without a name check are refused");
        };
        assert!(error.contains("verify-full"), "{error}");
        let Err(error) = mode("postgres://db/x?sslcert=/a.pem") else {
            panic!("a certificate without its key is refused");
        };
        assert!(error.contains("sslkey"), "{error}");
        let Err(error) = mode("postgres://db/x?password=s3cret&connect_timeout=soon") else {
            panic!("a bad option is refused");
        };
        assert!(!error.contains("s3cret"), "{error}");
    }
}
