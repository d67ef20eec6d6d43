//! OTLP/gRPC: tonic's server answering `MetricsService/Export`, gzip accepted.
//! The method decodes the protobuf itself (tonic's codec would answer a bad
//! body INTERNAL before any handler saw it) so that every request is recorded,
//! a malformed one as INVALID_ARGUMENT.

use super::{Answer, ExportMetricsServiceRequest, ExportMetricsServiceResponse, Incoming, Shared};
use bytes::{Buf, Bytes};
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Code, Status};

const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// Far above any export of the agent's (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// Serves until the runtime ends; with `tls` (a directory made by
/// `web::make_pki`), over TLS with server.crt and a client certificate signed
/// by ca.crt required.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<std::path::PathBuf>,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(dir) = tls {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(read("server.crt"), read("server.key")))
            .client_ca_root(Certificate::from_pem(read("ca.crt")));
        builder = builder
            .tls_config(config)
            .unwrap_or_else(|e| panic!("OTLP gRPC receiver TLS: {e}"));
    }
    if let Err(e) = builder.serve_with_incoming(Metrics(shared), incoming).await {
        eprintln!("OTLP gRPC receiver: {e}");
    }
}

/// The MetricsService: routes the one method, records what tonic refuses.
#[derive(Clone)]
struct Metrics(Arc<Shared>);

impl Service<http::Request<Body>> for Metrics {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let incoming = Incoming {
                path: req.uri().path().to_string(),
                headers: super::header_pairs(req.headers()),
                bytes: 0,
            };
            let encoding = crate::http::find_header(&incoming.headers, "grpc-encoding");
            let refused = if incoming.path != EXPORT {
                Some(format!("no method {}", incoming.path))
            } else if !matches!(encoding, None | Some("identity" | "gzip")) {
                Some(format!("grpc-encoding {encoding:?}"))
            } else {
                None
            };
            if let Some(why) = refused {
                let code = Code::Unimplemented;
                shared.answer(
                    incoming,
                    Err((Answer::Grpc(code.into(), why.clone()), why.clone())),
                );
                return Ok(Status::new(code, why).into_http());
            }
            let mut export = Export {
                shared: shared.clone(),
                incoming: Some(incoming),
            };
            let mut response = tonic::server::Grpc::new(RawMessages)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE)
                .unary(&mut export, req)
                .await;
            if let Some(incoming) = export.incoming.take() {
                // tonic refused the body before the method (framing, decompression):
                // its INTERNAL there means a malformed body, INVALID_ARGUMENT to OTLP.
                let headers = response.headers_mut();
                let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
                let code = header("grpc-status").and_then(|c| c.parse::<i32>().ok());
                let code = match code.map(Code::from) {
                    Some(Code::Internal) => Code::InvalidArgument,
                    Some(code) => code,
                    None => Code::Unknown,
                };
                let message = header("grpc-message").unwrap_or("");
                let why = percent_encoding::percent_decode_str(message)
                    .decode_utf8_lossy()
                    .into_owned();
                headers.insert("grpc-status", i32::from(code).into());
                shared.answer(incoming, Err((Answer::Grpc(code.into(), why.clone()), why)));
            }
            Ok(response)
        })
    }
}

/// One call of the Export method.
struct Export {
    shared: Arc<Shared>,
    /// Taken by the call: still here afterwards means tonic refused the request.
    incoming: Option<Incoming>,
}

impl Service<tonic::Request<Bytes>> for Export {
    type Response = tonic::Response<ExportMetricsServiceResponse>;
    type Error = Status;
    type Future = std::future::Ready<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let mut incoming = self.incoming.take().expect("a unary call has one message");
        let message = request.into_inner();
        incoming.bytes = message.len();
        let decoded = ExportMetricsServiceRequest::decode(message).map_err(|e| {
            let why = format!("protobuf: {e}");
            (Answer::Grpc(Code::InvalidArgument.into(), why.clone()), why)
        });
        let answer = match self.shared.answer(incoming, decoded) {
            Answer::Grpc(0, _) => Ok(tonic::Response::new(ExportMetricsServiceResponse::default())),
            Answer::Grpc(code, message) => Err(Status::new(code.into(), message)),
            Answer::GrpcRetryInfo(code, message, delay) => {
                let details = super::rpc_status::with_retry_delay(code, &message, delay);
                Err(Status::with_details(code.into(), message, details.into()))
            }
            Answer::Http(..) => unreachable!("script() admits only gRPC answers here"),
        };
        std::future::ready(answer)
    }
}

/// Requests as raw bytes (decoded by [`Export`]), responses with prost.
struct RawMessages;

impl Codec for RawMessages {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportMetricsServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        Default::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
