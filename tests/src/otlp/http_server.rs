//! OTLP/HTTP: `POST /v1/metrics` with a binary protobuf body, gzip accepted,
//! answered with an ExportMetricsServiceResponse (success) or a
//! google.rpc.Status (4xx, 5xx) as the OTLP specification asks.

use super::rpc_status::RpcStatus;
use super::{Answer, ExportMetricsServiceRequest, ExportMetricsServiceResponse, Incoming, Shared};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

pub(super) const PATH: &str = "/v1/metrics";
const PROTOBUF: &str = "application/x-protobuf";
/// Far above any export of the agent's: only a runaway body is refused (413).
const MAX_BODY: usize = 64 << 20;

/// Panics (in the test, at `script` time) on an answer hyper could not send.
pub(super) fn check(status: u16, headers: &[(String, String)]) {
    StatusCode::from_u16(status).unwrap_or_else(|e| panic!("scripted HTTP status {status}: {e}"));
    for (k, v) in headers {
        HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("scripted header {k}: {e}"));
        HeaderValue::from_str(v).unwrap_or_else(|e| panic!("scripted header {k}: {v}: {e}"));
    }
}

pub(super) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("OTLP HTTP receiver: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<hyper::body::Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await;
    let body = body.map(|b| b.to_bytes()).map_err(|e| {
        let status = if e.is::<LengthLimitError>() { 413 } else { 400 };
        (status, format!("body: {e}"))
    });
    let incoming = Incoming {
        path: parts.uri.path().to_string(),
        headers: super::header_pairs(&parts.headers),
        bytes: body.as_ref().map_or(0, Bytes::len),
    };
    let decoded = body.and_then(|body| decode(&parts.method, &incoming, &body));
    let why = decoded.as_ref().err().map(|(_, why)| why.clone());
    let decoded = decoded.map_err(|(status, why)| (Answer::Http(status, Vec::new()), why));
    let Answer::Http(status, extra) = shared.answer(incoming, decoded) else {
        unreachable!("script() admits only HTTP answers here");
    };
    let body = if (200..300).contains(&status) {
        ExportMetricsServiceResponse::default().encode_to_vec()
    } else {
        let message = why.unwrap_or_else(|| format!("scripted {status}"));
        // UNKNOWN: the HTTP status is what OTLP/HTTP clients act on.
        let details = Vec::new();
        RpcStatus {
            code: 2,
            message,
            details,
        }
        .encode_to_vec()
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", PROTOBUF);
    for (k, v) in extra {
        response = response.header(k, v);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("answers are checked by script()")
}

/// The request's message, or the status and reason it is refused with.
fn decode(
    method: &Method,
    incoming: &Incoming,
    body: &[u8],
) -> Result<ExportMetricsServiceRequest, (u16, String)> {
    if incoming.path != PATH {
        return Err((404, format!("no such path {}", incoming.path)));
    }
    if method != Method::POST {
        return Err((405, format!("method {method}, not POST")));
    }
    let header = |name| crate::http::find_header(&incoming.headers, name).unwrap_or("");
    let media_type = header("content-type")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if !media_type.eq_ignore_ascii_case(PROTOBUF) {
        return Err((415, format!("content-type {media_type:?}, not {PROTOBUF}")));
    }
    let mut inflated = Vec::new();
    let body = match header("content-encoding") {
        "" | "identity" => body,
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut inflated)
                .map_err(|e| (400, format!("gzip body: {e}")))?;
            &inflated
        }
        other => return Err((415, format!("content-encoding {other:?}"))),
    };
    ExportMetricsServiceRequest::decode(body).map_err(|e| (400, format!("protobuf: {e}")))
}
