//! rustls server configuration from the web config's `tls_server_config`:
//! versions, cipher suites, curves and the five client authentication policies.

use super::web_config::{ClientAuth, Tls, Version};
use anyhow::{Context, Result, anyhow, bail};
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
};
use std::sync::Arc;

/// Go's TLS 1.2 suite names (as exporter-toolkit takes them) that rustls has.
/// TLS 1.3 suites are accepted and, as in Go, not configurable.
const SUITES: &[(&str, Option<SupportedCipherSuite>)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Some(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Some(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    ("TLS_AES_128_GCM_SHA256", None),
    ("TLS_AES_256_GCM_SHA384", None),
    ("TLS_CHACHA20_POLY1305_SHA256", None),
];

/// The TLS 1.2 suites named (empty: rustls' defaults). Names rustls lacks (CBC,
/// RSA key exchange, 3DES...) are an error that lists them.
pub fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>> {
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for name in names {
        match SUITES.iter().find(|(n, _)| n == name) {
            Some((_, Some(s))) => out.push(*s),
            Some((_, None)) => {}
            None => unsupported.push(name.as_str()),
        }
    }
    if !unsupported.is_empty() {
        bail!(
            "tls_server_config.cipher_suites: not supported by the agent's TLS (rustls): {}; \
             supported: {}",
            unsupported.join(", "),
            SUITES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(out)
}

/// Go's curve names that rustls has.
pub fn curves(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>> {
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for name in names {
        match name.as_str() {
            "X25519" => out.push(kx_group::X25519),
            "CurveP256" => out.push(kx_group::SECP256R1),
            "CurveP384" => out.push(kx_group::SECP384R1),
            other => unsupported.push(other),
        }
    }
    if !unsupported.is_empty() {
        bail!(
            "tls_server_config.curve_preferences: not supported by the agent's TLS (rustls): {}; \
             supported: X25519, CurveP256, CurveP384",
            unsupported.join(", ")
        );
    }
    Ok(out)
}

/// Builds the server's TLS configuration, reading the certificate, key and CA.
pub fn server_config(t: &Tls) -> Result<Arc<ServerConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    let tls12 = cipher_suites(&t.cipher_suites)?;
    if !tls12.is_empty() {
        // TLS 1.3 suites stay (Go does not let them be chosen either).
        provider.cipher_suites.retain(|s| s.tls13().is_some());
        provider.cipher_suites.extend(tls12);
    }
    let groups = curves(&t.curves)?;
    if !groups.is_empty() {
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);
    // rustls has nothing below TLS 1.2, so TLS10 and TLS11 as a minimum mean TLS 1.2.
    let mut versions = Vec::new();
    if t.min_version <= Version::Tls12 && t.max_version >= Version::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if t.max_version >= Version::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    let certs = read_certs(&t.cert.read()?).with_context(|| t.cert.describe())?;
    let key = PrivateKeyDer::from_pem_slice(&t.key.read()?)
        .map_err(|e| anyhow!("{}: no usable private key: {e}", t.key.describe()))?;
    let verifier = client_verifier(t, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .context("tls_server_config: versions, cipher suites and curves leave nothing in common")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable pair",
                t.cert.describe(),
                t.key.describe()
            )
        })?;
    config.ignore_client_order = t.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("bad PEM: {e}"))?;
    if certs.is_empty() {
        bail!("no certificate in it");
    }
    Ok(certs)
}

fn client_verifier(t: &Tls, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ClientCertVerifier>> {
    let algorithms = provider.signature_verification_algorithms;
    Ok(match t.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert => Arc::new(AnyCert {
            mandatory: false,
            algorithms,
        }),
        ClientAuth::RequireAnyClientCert => Arc::new(AnyCert {
            mandatory: true,
            algorithms,
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = t.client_ca.as_ref().context("client_ca_file is required")?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&ca.read()?).with_context(|| ca.describe())? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a usable CA certificate", ca.describe()))?;
            }
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if t.client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder = builder.allow_unauthenticated();
            }
            let inner = builder.build().context("client certificate verifier")?;
            if t.allowed_sans.is_empty() {
                inner
            } else {
                Arc::new(AllowedSans {
                    inner,
                    sans: t.allowed_sans.clone(),
                })
            }
        }
    })
}

/// RequestClientCert / RequireAnyClientCert: a certificate is asked for (or
/// required) but not checked against a CA; its signature still proves the key.
#[derive(Debug)]
struct AnyCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: a verified certificate must also carry one of these
/// subject alternative names (DNS, IP, email or URI), as in exporter-toolkit.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity);
        if names.iter().any(|n| self.sans.contains(n)) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(format!(
                "client certificate SANs {names:?} are not in client_allowed_sans"
            )))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some(s.to_string())
            }
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
