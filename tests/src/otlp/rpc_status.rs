//! google.rpc.Status and RetryInfo, which opentelemetry-proto does not carry:
//! the body of an OTLP/HTTP error, and the details of a gRPC status asking the
//! exporter to wait (OTLP's throttling signal).

use prost::Message;
use std::time::Duration;

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// google.protobuf.Any
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// google.protobuf.Duration
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// An encoded google.rpc.Status whose details ask for a wait of `delay`.
pub(super) fn with_retry_delay(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = vec![Any {
        type_url: RETRY_INFO.to_string(),
        value: retry.encode_to_vec(),
    }];
    RpcStatus {
        code,
        message: message.to_string(),
        details,
    }
    .encode_to_vec()
}

/// The RetryInfo delay in an encoded google.rpc.Status (a gRPC status's
/// details), if it has one.
pub fn retry_delay(status: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(status).ok()?;
    let any = status.details.iter().find(|a| a.type_url == RETRY_INFO)?;
    let delay = RetryInfo::decode(&any.value[..]).ok()?.retry_delay?;
    Some(Duration::new(
        delay.seconds.try_into().ok()?,
        delay.nanos.try_into().ok()?,
    ))
}
