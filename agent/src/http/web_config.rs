//! The web config file of Prometheus' exporter-toolkit (`--web.config.file`),
//! unchanged, so one file serves node_exporter and this agent. Unknown keys are
//! an error, as exporter-toolkit's strict YAML. Paths are relative to the file.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Inline PEM, the newer alternative to the files.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Accepted for compatibility; the agent serves HTTP/1.1 only.
    #[serde(default)]
    #[allow(dead_code)]
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// exporter-toolkit's five client authentication policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(s: Option<&str>) -> Result<ClientAuth> {
        Ok(match s.unwrap_or("") {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // The older spelling exporter-toolkit still accepts.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => bail!(
                "invalid client_auth_type {other:?}: use NoClientCert, RequestClientCert, \
                 RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ),
        })
    }

    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// A PEM source: a file (re-read on reload) or inline text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Pem::File(p) => {
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
            }
            Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => "inline PEM".into(),
        }
    }
}

/// TLS settings after validation, ready for `tls::server_config`.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub allowed_sans: Vec<String>,
    pub cipher_suites: Vec<String>,
    pub curves: Vec<String>,
    pub min_version: Version,
    pub max_version: Version,
    pub prefer_server_cipher_suites: bool,
}

/// TLS versions by exporter-toolkit's names, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl Version {
    fn parse(s: &str) -> Result<Version> {
        Ok(match s {
            "TLS10" => Version::Tls10,
            "TLS11" => Version::Tls11,
            "TLS12" => Version::Tls12,
            "TLS13" => Version::Tls13,
            other => bail!("unknown TLS version {other:?}: use TLS10, TLS11, TLS12 or TLS13"),
        })
    }
}

/// Everything the server applies from one reading of the file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub tls: Option<Tls>,
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(String, String)>,
}

/// Response headers exporter-toolkit lets the file set, with the values it allows.
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Reads and validates the file.
pub fn load(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read web config file {}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("web config file {}", path.display()))
}

/// Parses the file's text; relative paths are taken from `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<Settings> {
    // An empty file is a valid, empty config (exporter-toolkit agrees).
    let config: WebConfig = if text.trim().is_empty() {
        WebConfig::default()
    } else {
        serde_yaml_ng::from_str(text)?
    };
    let tls = match config.tls_server_config {
        None => None,
        Some(t) => tls(t, dir)?,
    };
    for (user, hash) in &config.basic_auth_users {
        if user.contains(':') {
            bail!("basic_auth_users: user {user:?} contains ':', which basic auth cannot carry");
        }
        crate::http::auth::check_hash(hash)
            .with_context(|| format!("basic_auth_users: the hash of user {user:?}"))?;
    }
    let mut headers = Vec::new();
    for (name, value) in config.http_server_config.headers {
        let Some((canonical, allowed)) =
            HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name))
        else {
            bail!(
                "http_server_config.headers: {name:?} cannot be set; allowed: {}",
                HEADERS.iter().map(|h| h.0).collect::<Vec<_>>().join(", ")
            );
        };
        if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
            bail!(
                "http_server_config.headers: {canonical}: {value:?} is not allowed; use {}",
                allowed.join(" or ")
            );
        }
        if hyper::header::HeaderValue::from_str(&value).is_err() {
            bail!("http_server_config.headers: {canonical}: {value:?} is not a valid header value");
        }
        headers.push((canonical.to_string(), value));
    }
    Ok(Settings {
        tls,
        users: config.basic_auth_users,
        headers,
    })
}

fn tls(t: TlsServerConfig, dir: &Path) -> Result<Option<Tls>> {
    let file = |p: PathBuf| Pem::File(if p.is_relative() { dir.join(p) } else { p });
    let pick = |path: Option<PathBuf>, inline: Option<String>, what: &str| -> Result<Option<Pem>> {
        match (
            path.filter(|p| !p.as_os_str().is_empty()),
            inline.filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(_)) => bail!("tls_server_config: give {what}_file or {what}, not both"),
            (Some(p), None) => Ok(Some(file(p))),
            (None, Some(s)) => Ok(Some(Pem::Inline(s))),
            (None, None) => Ok(None),
        }
    };
    let cert = pick(t.cert_file, t.cert, "cert")?;
    let key = pick(t.key_file, t.key, "key")?;
    let client_ca = pick(t.client_ca_file, t.client_ca, "client_ca")?;
    let (cert, key) = match (cert, key) {
        // No certificate: plain HTTP, as exporter-toolkit does.
        (None, None) => return Ok(None),
        (Some(_), None) => bail!("tls_server_config: missing key_file"),
        (None, Some(_)) => bail!("tls_server_config: missing cert_file"),
        (Some(c), Some(k)) => (c, k),
    };
    let client_auth = ClientAuth::parse(t.client_auth_type.as_deref())?;
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        bail!(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert; \
             set client_auth_type (RequireAndVerifyClientCert for mutual TLS)"
        );
    }
    if client_auth.verifies() && client_ca.is_none() {
        bail!("tls_server_config: client_auth_type {client_auth:?} needs client_ca_file");
    }
    if !t.client_allowed_sans.is_empty() && !client_auth.verifies() {
        bail!(
            "tls_server_config: client_allowed_sans needs verified client certificates \
             (client_auth_type VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
        );
    }
    let min_version = match t.min_version.as_deref() {
        None | Some("") => Version::Tls12,
        Some(v) => Version::parse(v).context("tls_server_config.min_version")?,
    };
    let max_version = match t.max_version.as_deref() {
        None | Some("") => Version::Tls13,
        Some(v) => Version::parse(v).context("tls_server_config.max_version")?,
    };
    if max_version < Version::Tls12 {
        bail!(
            "tls_server_config.max_version {max_version:?}: the agent's TLS (rustls) speaks only \
             TLS12 and TLS13"
        );
    }
    if min_version > max_version {
        bail!("tls_server_config: min_version is above max_version");
    }
    let tls = Tls {
        cert,
        key,
        client_ca,
        client_auth,
        allowed_sans: t.client_allowed_sans,
        cipher_suites: t.cipher_suites,
        curves: t.curve_preferences,
        min_version,
        max_version,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
    };
    // Names are checked now, so a typo fails at load, not at the first handshake.
    crate::http::tls::cipher_suites(&tls.cipher_suites)?;
    crate::http::tls::curves(&tls.curves)?;
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text, Path::new("/etc/agent")).unwrap_err())
    }

    #[test]
    fn empty_and_plain_configs() {
        let s = parse("", Path::new("/")).unwrap();
        assert!(s.tls.is_none() && s.users.is_empty());
        let hash = bcrypt::hash("pw", 4).unwrap();
        let s = parse(
            &format!("basic_auth_users:\n  alice: '{hash}'\n"),
            Path::new("/"),
        )
        .unwrap();
        assert!(s.tls.is_none());
        assert_eq!(s.users.len(), 1);
    }

    #[test]
    fn full_tls_config_with_relative_paths() {
        let s = parse(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: /k/tls.key\n  client_ca_file: ca.crt\n  \
             client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n  \
             client_allowed_sans: [prometheus]\n  curve_preferences: [X25519, CurveP256]\n  \
             cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n\
             http_server_config:\n  http2: false\n  headers:\n    x-frame-options: deny\n",
            Path::new("/etc/agent"),
        )
        .unwrap();
        let t = s.tls.unwrap();
        assert_eq!(t.cert, Pem::File("/etc/agent/tls.crt".into()));
        assert_eq!(t.key, Pem::File("/k/tls.key".into()));
        assert_eq!(t.client_ca, Some(Pem::File("/etc/agent/ca.crt".into())));
        assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (t.min_version, t.max_version),
            (Version::Tls13, Version::Tls13)
        );
        assert_eq!(
            s.headers,
            [("X-Frame-Options".to_string(), "deny".to_string())]
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(err("tls_server_config:\n  cert_fil: a\n").contains("unknown field `cert_fil`"));
        assert!(err("basic_auth_user: {}\n").contains("unknown field `basic_auth_user`"));
        assert!(err("tls_server_config:\n  cert_file: a\n").contains("missing key_file"));
        assert!(err("tls_server_config:\n  key_file: a\n").contains("missing cert_file"));
        let base = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        assert!(
            err(&format!("{base}  client_auth_type: Maybe\n")).contains("invalid client_auth_type")
        );
        assert!(err(&format!("{base}  client_ca_file: c\n")).contains("NoClientCert"));
        assert!(
            err(&format!(
                "{base}  client_auth_type: RequireAndVerifyClientCert\n"
            ))
            .contains("needs client_ca_file")
        );
        assert!(err(&format!("{base}  max_version: TLS11\n")).contains("TLS12 and TLS13"));
        assert!(err(&format!("{base}  min_version: TLS14\n")).contains("unknown TLS version"));
        let e = err(&format!(
            "{base}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        ));
        let named = e.split("; supported").next().unwrap();
        assert!(
            named.ends_with("(rustls): TLS_RSA_WITH_AES_128_CBC_SHA"),
            "{e}"
        );
        assert!(err(&format!("{base}  curve_preferences: [CurveP521]\n")).contains("CurveP521"));
        assert!(err("basic_auth_users:\n  bob: plain\n").contains("bob"));
        assert!(err(&format!("{base}  cert: inline\n")).contains("cert_file or cert, not both"));
        let inline = parse(
            "tls_server_config:\n  cert: |\n    PEM\n  key_file: k\n",
            Path::new("/d"),
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(inline.cert, Pem::Inline("PEM\n".into()));
        assert_eq!(inline.key, Pem::File("/d/k".into()));
        assert!(err("http_server_config:\n  headers:\n    Server: x\n").contains("cannot be set"));
        assert!(
            err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n")
                .contains("not allowed")
        );
    }
}
