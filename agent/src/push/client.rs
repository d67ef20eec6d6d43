//! One HTTP(S) POST to a receiver, on hyper's client connection over a
//! TCP (and, for https, rustls) stream: a fresh connection per request is
//! plenty at one request per push interval, and holds no state across an
//! outage. What the receiver answered decides what happens to the record.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one request may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The receiver's TLS and authentication settings, shared by the exporters.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// CA certificates (PEM) to verify push receivers with, instead of the
    /// system's (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "PATH")]
    pub push_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for push receivers that ask for one; with
    /// --push-key-file.
    #[arg(long, value_name = "PATH")]
    pub push_cert_file: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PATH")]
    pub push_key_file: Option<PathBuf>,

    /// Send `Authorization: Bearer <the file's content>` (re-read at every request,
    /// so a rotated token is picked up).
    #[arg(long, value_name = "PATH", conflicts_with = "push_basic_auth_user")]
    pub push_bearer_token_file: Option<PathBuf>,

    /// Basic auth user for push receivers; the password is in --push-basic-auth-password-file.
    #[arg(long, value_name = "USER")]
    pub push_basic_auth_user: Option<String>,

    /// File holding the basic auth password (trailing newline ignored).
    #[arg(long, value_name = "PATH")]
    pub push_basic_auth_password_file: Option<PathBuf>,

    /// Extra request header `Name: value` (repeatable), e.g. a tenant:
    /// `X-Scope-OrgID: team-a` for Mimir or Cortex.
    #[arg(long, value_name = "HEADER", value_parser = parse_header)]
    pub push_header: Vec<(String, String)>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `Name: value`"))?;
    let (name, value) = (name.trim(), value.trim());
    HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header name `{name}`: {e}"))?;
    HeaderValue::from_str(value).map_err(|e| format!("header value of `{name}`: {e}"))?;
    Ok((name.to_string(), value.to_string()))
}

/// The outcome of one request.
#[derive(Debug)]
pub enum Outcome {
    /// The receiver answered (any status); the protocol decides what it means.
    Answered(Answer),
    /// Connect, TLS or I/O failure.
    Network(String),
    Timeout,
}

/// A receiver's answer: status, headers and trailers (gRPC puts its status
/// there), and the start of the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Retry-After in seconds, if given as a number.
    pub fn retry_after(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The body as text for a log line, cut short.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect::<String>()
            .trim()
            .to_string()
    }
}

/// The most of an answer's body read: receivers' messages are short, and a
/// hostile one cannot make the agent buffer more.
const MAX_ANSWER: usize = 64 << 10;

/// A receiver: where, and with what credentials.
pub struct Client {
    url: hyper::Uri,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    auth: AuthArgs,
    user_agent: String,
    http2: bool,
}

impl Client {
    /// `http2`: speak HTTP/2 (gRPC), with prior knowledge over plain TCP and
    /// ALPN `h2` over TLS; otherwise HTTP/1.1.
    pub fn new(url: &str, auth: &AuthArgs, http2: bool) -> Result<Client> {
        // Pairs are checked here rather than by clap, so that a config file
        // may set one half and the environment the other.
        if auth.push_cert_file.is_some() != auth.push_key_file.is_some() {
            bail!("--push-cert-file and --push-key-file go together: give both or neither");
        }
        if auth.push_basic_auth_user.is_some() != auth.push_basic_auth_password_file.is_some() {
            bail!(
                "--push-basic-auth-user and --push-basic-auth-password-file go together: give both or neither"
            );
        }
        let uri: hyper::Uri = url.parse().with_context(|| format!("push URL `{url}`"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("push URL `{url}`: the scheme must be http or https"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("push URL `{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(tokio_rustls::TlsConnector::from(tls_config(auth, http2)?))
        } else {
            None
        };
        // Read now, so a missing file fails at start rather than at the first push.
        for f in [
            &auth.push_bearer_token_file,
            &auth.push_basic_auth_password_file,
        ]
        .into_iter()
        .flatten()
        {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        }
        Ok(Client {
            url: uri,
            host,
            port,
            tls,
            auth: auth.clone(),
            user_agent: format!("ebpf-agent/{}", env!("CARGO_PKG_VERSION")),
            http2,
        })
    }

    /// POSTs `body` with `headers` to the URL's path, or to `path` if given,
    /// within [`TIMEOUT`].
    pub async fn post(
        &self,
        path: Option<&str>,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Outcome {
        match tokio::time::timeout(TIMEOUT, self.try_post(path, content_type, headers, body)).await
        {
            Err(_) => Outcome::Timeout,
            Ok(Err(e)) => Outcome::Network(format!("{e:#}")),
            Ok(Ok(o)) => o,
        }
    }

    async fn try_post(
        &self,
        path: Option<&str>,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Outcome> {
        let path = path.unwrap_or_else(|| self.url.path_and_query().map_or("/", |p| p.as_str()));
        // HTTP/1.1 takes the origin form (`/api/v1/write`) and a Host header;
        // HTTP/2 the whole URI, from which hyper makes :scheme and :authority.
        let req = if self.http2 {
            let scheme = self.url.scheme_str().unwrap_or("http");
            Request::post(format!("{scheme}://{}{path}", self.host_header()))
        } else {
            Request::post(path).header(hyper::header::HOST, self.host_header())
        };
        let mut req = req
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, &self.user_agent);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        for (k, v) in &self.auth.push_header {
            req = req.header(k, v);
        }
        if let Some(value) = self.authorization()? {
            req = req.header(hyper::header::AUTHORIZATION, value);
        }
        let req = req.body(Full::new(body))?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connect to {}:{}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let response = match &self.tls {
            None => send(tcp, req, self.http2).await?,
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())?;
                let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
                send(stream, req, self.http2).await?
            }
        };
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers;
        // Trailers (gRPC's status) join the headers; a body past the limit is
        // an error rather than memory the receiver decides.
        let collected = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?;
        if let Some(trailers) = collected.trailers() {
            headers.extend(trailers.clone());
        }
        Ok(Outcome::Answered(Answer {
            status,
            headers,
            body: collected.to_bytes(),
        }))
    }

    fn host_header(&self) -> String {
        match self.url.port_u16() {
            Some(p) => format!("{}:{p}", self.url.host().unwrap_or_default()),
            None => self.url.host().unwrap_or_default().to_string(),
        }
    }

    fn authorization(&self) -> Result<Option<String>> {
        use base64::Engine;
        let read = |p: &Path| -> Result<String> {
            Ok(std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string())
        };
        if let Some(f) = &self.auth.push_bearer_token_file {
            return Ok(Some(format!("Bearer {}", read(f)?)));
        }
        if let (Some(user), Some(f)) = (
            &self.auth.push_basic_auth_user,
            &self.auth.push_basic_auth_password_file,
        ) {
            let pair = format!("{user}:{}", read(f)?);
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            return Ok(Some(format!("Basic {b64}")));
        }
        Ok(None)
    }
}

async fn send<S>(
    stream: S,
    req: Request<Full<Bytes>>,
    http2: bool,
) -> Result<hyper::Response<hyper::body::Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return Ok(sender.send_request(req).await?);
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn tls_config(auth: &AuthArgs, http2: bool) -> Result<Arc<rustls::ClientConfig>> {
    let ca = auth
        .push_ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CAS));
    let pem = std::fs::read(&ca).with_context(|| {
        format!(
            "cannot read CA certificates {} (--push-ca-file)",
            ca.display()
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow!("{}: bad PEM: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("{}: no CA certificate in it", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&auth.push_cert_file, &auth.push_key_file) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_urls_are_checked() {
        assert_eq!(
            parse_header("X-Scope-OrgID: team-a").unwrap(),
            ("X-Scope-OrgID".to_string(), "team-a".to_string())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        let none = AuthArgs::default();
        assert!(Client::new("ftp://x/y", &none, false).is_err());
        assert!(Client::new("http:///nohost", &none, false).is_err());
        let c = Client::new("http://127.0.0.1:9090/api/v1/write", &none, false).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 9090));
        assert_eq!(c.host_header(), "127.0.0.1:9090");
    }
}
