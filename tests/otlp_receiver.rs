//! The harness's OTLP receiver (src/otlp.rs) against real clients: hyper for
//! OTLP/HTTP, tonic's generated MetricsServiceClient for OTLP/gRPC. It must
//! record what was sent exactly, answer its script then success, and refuse
//! (and record) what it cannot decode.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric::Data, number_data_point::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use tests::otlp::{
    AggregationTemporality, Answer, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    OtlpReceiver, Point, Protocol, Received, get, points, retry_delay, sum,
};
use tonic::codec::CompressionEncoding;

const T0: u64 = 1_700_000_000_000_000_000;
const T1: u64 = T0 + 15_000_000_000;
const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const WAIT: Duration = Duration::from_secs(30);

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn number(attributes: Vec<KeyValue>, value: Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: T0,
        time_unix_nano: T1,
        value: Some(value),
        ..Default::default()
    }
}

fn metric(name: &str, data: Data) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// A request like the agent's: a counter, a gauge and a histogram.
fn request() -> ExportMetricsServiceRequest {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let syscalls = Sum {
        data_points: vec![
            // Attributes out of order: points() sorts them.
            number(
                vec![kv("syscall", "read"), kv("errno", "0")],
                Value::AsInt(1_234),
            ),
            number(vec![kv("syscall", "getppid")], Value::AsDouble(100.0)),
        ],
        aggregation_temporality: cumulative,
        is_monotonic: true,
    };
    let latency = Histogram {
        data_points: vec![HistogramDataPoint {
            attributes: vec![kv("syscall", "read")],
            start_time_unix_nano: T0,
            time_unix_nano: T1,
            count: 10,
            sum: Some(0.0125),
            bucket_counts: vec![3, 5, 0, 2],
            explicit_bounds: vec![0.000_001, 0.001, 0.01],
            ..Default::default()
        }],
        aggregation_temporality: cumulative,
    };
    let attached = Gauge {
        data_points: vec![number(vec![kv("probe", "syscalls")], Value::AsInt(1))],
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "ebpf-agent"), kv("host.name", "node-1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric("ebpf_agent_syscalls", Data::Sum(syscalls)),
                    metric(
                        "ebpf_agent_syscall_latency_seconds",
                        Data::Histogram(latency),
                    ),
                    metric("ebpf_agent_probe_attached", Data::Gauge(attached)),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn key(name: &str, attributes: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let attributes = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (name.to_string(), attributes)
}

/// What `request()` flattens to.
fn expected_points() -> BTreeMap<(String, Vec<(String, String)>), Point> {
    let sum = |value| Point::Sum {
        value,
        monotonic: true,
        temporality: AggregationTemporality::Cumulative,
    };
    BTreeMap::from([
        (
            key(
                "ebpf_agent_syscalls",
                &[("errno", "0"), ("syscall", "read")],
            ),
            sum(1_234.0),
        ),
        (
            key("ebpf_agent_syscalls", &[("syscall", "getppid")]),
            sum(100.0),
        ),
        (
            key("ebpf_agent_syscall_latency_seconds", &[("syscall", "read")]),
            Point::Histogram {
                bounds: vec![0.000_001, 0.001, 0.01],
                bucket_counts: vec![3, 5, 0, 2],
                sum: Some(0.0125),
                count: 10,
                temporality: AggregationTemporality::Cumulative,
            },
        ),
        (
            key("ebpf_agent_probe_attached", &[("probe", "syscalls")]),
            Point::Gauge(1.0),
        ),
    ])
}

fn check_recorded(r: &Received) {
    assert!(r.delivered(), "{r:?}");
    assert_eq!(r.request.as_ref(), Some(&request()));
    assert_eq!(r.points(), expected_points());
    assert_eq!(
        r.resource,
        [("host.name", "node-1"), ("service.name", "ebpf-agent")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body).unwrap();
    gz.finish().unwrap()
}

struct HttpAnswer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// One POST over a fresh HTTP/1.1 connection, with hyper's client.
fn post(
    receiver: &OtlpReceiver,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpAnswer {
    runtime().block_on(async {
        let stream = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::post(path).header("host", receiver.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        HttpAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    })
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

#[test]
fn http_receiver_records_plain_and_gzip_requests() {
    let receiver = OtlpReceiver::start(Protocol::Http);
    let endpoint = receiver.endpoint();
    assert_eq!(endpoint, format!("http://{}/v1/metrics", receiver.addr));
    let body = request().encode_to_vec();
    let plain = post(&receiver, "/v1/metrics", &[PROTOBUF], body.clone());
    let auth = ("authorization", "Bearer s3cret");
    let agent = ("user-agent", "ebpf-agent/0.1.0");
    let custom = ("x-tenant", "team-a");
    let gzip_headers = [PROTOBUF, ("content-encoding", "gzip"), auth, agent, custom];
    let zipped = post(&receiver, "/v1/metrics", &gzip_headers, gzip(&body));
    for answer in [&plain, &zipped] {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["content-type"], "application/x-protobuf");
        ExportMetricsServiceResponse::decode(answer.body.clone()).unwrap();
    }
    let received = receiver.wait_until("two requests", WAIT, |r| r.len() == 2);
    for r in &received {
        check_recorded(r);
        assert_eq!(r.path, "/v1/metrics");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.answer, Answer::Http(200, vec![]));
    }
    assert_eq!(received[0].bytes, body.len());
    assert_eq!(received[0].header("content-encoding"), None);
    assert_eq!(received[1].bytes, gzip(&body).len());
    for (k, v) in gzip_headers {
        assert_eq!(received[1].header(k), Some(v), "{k}");
    }
}

#[test]
fn http_receiver_answers_its_script_then_success() {
    let receiver = OtlpReceiver::start(Protocol::Http);
    receiver.script(vec![
        Answer::http(503, &[]),
        Answer::http(429, &[("Retry-After", "1")]),
    ]);
    let body = request().encode_to_vec();
    let statuses: Vec<(u16, Option<String>)> = (0..3)
        .map(|_| {
            let a = post(&receiver, "/v1/metrics", &[PROTOBUF], body.clone());
            let retry = a
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (a.status, retry)
        })
        .collect();
    assert_eq!(
        statuses,
        [(503, None), (429, Some("1".to_string())), (200, None)]
    );
    assert_eq!(receiver.script_left(), 0);
    let answers: Vec<Answer> = receiver.received().into_iter().map(|r| r.answer).collect();
    assert_eq!(
        answers,
        [
            Answer::http(503, &[]),
            Answer::http(429, &[("Retry-After", "1")]),
            Answer::http(200, &[])
        ]
    );
    assert!(receiver.received()[2].delivered());
}

#[test]
fn http_receiver_refuses_what_it_cannot_decode_and_records_it() {
    let receiver = OtlpReceiver::start(Protocol::Http);
    receiver.script(vec![Answer::http(503, &[])]);
    let body = request().encode_to_vec();
    let json = ("content-type", "application/json");
    let gzip_header = ("content-encoding", "gzip");
    let cases = [
        (
            "/v1/metrics",
            vec![PROTOBUF],
            b"not a protobuf".to_vec(),
            400,
        ),
        (
            "/v1/metrics",
            vec![PROTOBUF, gzip_header],
            body.clone(),
            400,
        ),
        ("/v1/metrics", vec![json], body.clone(), 415),
        ("/v1/traces", vec![PROTOBUF], body.clone(), 404),
        // The script was left alone: the first well-formed request gets it.
        ("/v1/metrics", vec![PROTOBUF], body.clone(), 503),
    ];
    for (path, headers, body, status) in &cases {
        let answer = post(&receiver, path, headers, body.clone());
        assert_eq!(answer.status, *status, "{path} {headers:?}");
    }
    let received = receiver.received();
    assert_eq!(received.len(), cases.len());
    for (r, (path, _, _, status)) in received.iter().zip(&cases) {
        assert_eq!(
            (r.path.as_str(), &r.answer),
            (*path, &Answer::http(*status, &[]))
        );
    }
    for (r, why) in received
        .iter()
        .zip(["protobuf", "gzip", "content-type", "no such path"])
    {
        assert!(r.request.is_none() && !r.delivered());
        let rejected = r.rejected.as_deref().unwrap();
        assert!(rejected.contains(why), "{rejected}");
    }
    assert!(received[4].request.is_some() && !received[4].delivered());
}

/// A channel to the receiver, whose worker runs on `rt`.
fn grpc_channel(
    rt: &tokio::runtime::Runtime,
    receiver: &OtlpReceiver,
) -> tonic::transport::Channel {
    let endpoint = receiver.endpoint();
    assert_eq!(endpoint, format!("http://{}", receiver.addr));
    let _entered = rt.enter();
    tonic::transport::Endpoint::new(endpoint)
        .unwrap()
        .connect_lazy()
}

fn grpc_client(
    rt: &tokio::runtime::Runtime,
    receiver: &OtlpReceiver,
) -> MetricsServiceClient<tonic::transport::Channel> {
    MetricsServiceClient::new(grpc_channel(rt, receiver)).send_compressed(CompressionEncoding::Gzip)
}

fn export(
    rt: &tokio::runtime::Runtime,
    client: &mut MetricsServiceClient<tonic::transport::Channel>,
    message: ExportMetricsServiceRequest,
    metadata: &[(&'static str, &'static str)],
) -> Result<ExportMetricsServiceResponse, tonic::Status> {
    let mut request = tonic::Request::new(message);
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    rt.block_on(client.export(request))
        .map(tonic::Response::into_inner)
}

#[test]
fn grpc_receiver_records_gzip_requests_and_answers_its_script() {
    let receiver = OtlpReceiver::start(Protocol::Grpc);
    let slow_down = Answer::GrpcRetryInfo(8, "slow down".into(), Duration::from_millis(2_500));
    receiver.script(vec![Answer::grpc(14, "down"), slow_down.clone()]);
    let rt = runtime();
    let mut client = grpc_client(&rt, &receiver);
    let metadata = [("authorization", "Bearer s3cret"), ("x-tenant", "team-a")];
    let down = export(&rt, &mut client, request(), &metadata).unwrap_err();
    assert_eq!(
        (down.code(), down.message()),
        (tonic::Code::Unavailable, "down")
    );
    assert_eq!(retry_delay(down.details()), None);
    let slow = export(&rt, &mut client, request(), &metadata).unwrap_err();
    assert_eq!(slow.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        retry_delay(slow.details()),
        Some(Duration::from_millis(2_500))
    );
    let up = export(&rt, &mut client, request(), &metadata).unwrap();
    assert_eq!(up, ExportMetricsServiceResponse::default());
    let received = receiver.wait_until("three requests", WAIT, |r| r.len() == 3);
    assert_eq!(received[0].answer, Answer::grpc(14, "down"));
    assert_eq!(received[1].answer, slow_down);
    assert_eq!(received[2].answer, Answer::grpc(0, ""));
    for r in &received {
        assert_eq!(r.request.as_ref(), Some(&request()));
        assert_eq!(r.points(), expected_points());
        assert_eq!(r.path, EXPORT);
        assert_eq!(r.bytes, request().encoded_len());
        assert_eq!(r.header("grpc-encoding"), Some("gzip"));
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/grpc")
        );
        assert!(r.header("user-agent").unwrap().contains("tonic"), "{r:?}");
        for (k, v) in metadata {
            assert_eq!(r.header(k), Some(v), "{k}");
        }
    }
    check_recorded(&received[2]);
    assert!(!received[0].delivered() && !received[1].delivered());
}

/// A message whose field 1 is a varint where ExportMetricsServiceRequest has
/// a message: valid protobuf, but not this message.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAnExport {
    #[prost(uint64, tag = "1")]
    resource_metrics: u64,
}

#[test]
fn grpc_receiver_refuses_what_it_cannot_decode_and_records_it() {
    let receiver = OtlpReceiver::start(Protocol::Grpc);
    receiver.script(vec![Answer::grpc(14, "down")]);
    let rt = runtime();
    let channel = grpc_channel(&rt, &receiver);
    let mut grpc = tonic::client::Grpc::new(channel).send_compressed(CompressionEncoding::Gzip);
    let mut call = |path: &'static str| {
        rt.block_on(async {
            grpc.ready().await.unwrap();
            let codec =
                tonic_prost::ProstCodec::<NotAnExport, ExportMetricsServiceResponse>::default();
            let request = tonic::Request::new(NotAnExport {
                resource_metrics: 7,
            });
            grpc.unary(request, path.parse().unwrap(), codec).await
        })
        .unwrap_err()
    };
    let status = call(EXPORT);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let traces = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let status = call(traces);
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // The script was left alone: the first well-formed request gets it.
    let mut client = grpc_client(&rt, &receiver);
    let down = export(&rt, &mut client, request(), &[]).unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable);
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for (r, (path, code, why)) in received
        .iter()
        .zip([(EXPORT, 3, "protobuf"), (traces, 12, "no method")])
    {
        assert_eq!(r.path, path);
        assert_eq!(r.answer, Answer::Grpc(code, r.rejected.clone().unwrap()));
        assert!(r.request.is_none() && !r.delivered());
        assert!(r.rejected.as_deref().unwrap().contains(why), "{r:?}");
        assert_eq!(r.header("grpc-encoding"), Some("gzip"));
    }
    assert_eq!(received[2].answer, Answer::grpc(14, "down"));
}

/// A gRPC call made by hand over HTTP/2 (hyper): one message frame flagged
/// compressed with `encoding`, so that it can be broken in ways tonic's client
/// never would. Returns the grpc-status answered.
fn raw_grpc_call(
    rt: &tokio::runtime::Runtime,
    receiver: &OtlpReceiver,
    encoding: &str,
    frame: &[u8],
) -> i32 {
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
        let executor = hyper_util::rt::TokioExecutor::new();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(executor, TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut body = vec![1];
        body.extend((frame.len() as u32).to_be_bytes());
        body.extend(frame);
        let req = hyper::Request::post(format!("http://{}{EXPORT}", receiver.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-encoding", encoding)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().unwrap_or_default();
        let status = headers.get("grpc-status").or(trailers.get("grpc-status"));
        status.unwrap().to_str().unwrap().parse().unwrap()
    })
}

#[test]
fn grpc_receiver_records_what_tonic_refuses_before_the_method() {
    let receiver = OtlpReceiver::start(Protocol::Grpc);
    let rt = runtime();
    let not_gzip = raw_grpc_call(&rt, &receiver, "gzip", b"not gzip");
    let zstd = raw_grpc_call(&rt, &receiver, "zstd", b"whatever");
    assert_eq!(zstd, 12, "UNIMPLEMENTED");
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for (r, code) in received.iter().zip([not_gzip, zstd]) {
        assert!(
            matches!(&r.answer, Answer::Grpc(c, _) if *c == code),
            "{r:?}"
        );
        assert!(r.request.is_none() && r.rejected.is_some(), "{r:?}");
    }
    assert_eq!(not_gzip, 3, "INVALID_ARGUMENT: {:?}", received[0]);
    let why = received[0].rejected.as_deref().unwrap();
    assert!(why.contains("Error decompressing"), "{why}");
}

#[test]
fn points_are_found_like_exposition_samples() {
    let all = points(&request());
    assert_eq!(sum(&all, "ebpf_agent_syscalls", &[]), Some(1_334.0));
    assert_eq!(sum(&all, "ebpf_agent_syscalls", &[("errno", "1")]), None);
    let read = get(&all, "ebpf_agent_syscalls", &[("syscall", "read")]);
    assert_eq!(read.map(Point::value), Some(1_234.0));
    let histogram = get(&all, "ebpf_agent_syscall_latency_seconds", &[]).unwrap();
    // Cumulative, like Exposition::buckets.
    assert_eq!(
        histogram.cumulative_buckets(),
        [
            (0.000_001, 3.0),
            (0.001, 8.0),
            (0.01, 8.0),
            (f64::INFINITY, 10.0)
        ]
    );
}

#[test]
#[should_panic(expected = "do not add up")]
fn points_refuses_a_histogram_whose_buckets_miss_its_count() {
    let mut req = request();
    let metric = &mut req.resource_metrics[0].scope_metrics[0].metrics[1];
    let Some(Data::Histogram(h)) = &mut metric.data else {
        unreachable!()
    };
    h.data_points[0].count = 11;
    points(&req);
}
