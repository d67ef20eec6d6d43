//! An OTLP metrics receiver for the tests, built on the official proto
//! definitions (`opentelemetry-proto`): HTTP/protobuf (`POST /v1/metrics` on
//! hyper) or gRPC (`MetricsService/Export` on tonic's server), gzip accepted.
//! Like receiver.rs it listens on loopback on a thread of its own, records
//! every request (headers, decoded message, answer) and answers from a script,
//! then with success. A request it cannot decode is answered 400 /
//! INVALID_ARGUMENT and recorded as rejected, so a broken exporter fails loudly.

mod grpc_server;
mod http_server;
mod points;
mod rpc_status;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
pub use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
pub use points::{
    Key, Point, Stamps, get, matching, points, resource_attributes, stamped_points, sum,
};
pub use rpc_status::retry_delay;

/// How the receiver is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with binary protobuf bodies.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status and extra headers, e.g. `Http(429, [("Retry-After", "1")])`.
    Http(u16, Vec<(String, String)>),
    /// A gRPC status code and message, e.g. `Grpc(14, "down")` (UNAVAILABLE).
    Grpc(i32, String),
    /// A gRPC status with a google.rpc.RetryInfo detail asking to wait that
    /// long, OTLP's throttling signal, e.g. `GrpcRetryInfo(8, "slow down", 2s)`.
    GrpcRetryInfo(i32, String, Duration),
}

impl Answer {
    /// `Answer::Http` from borrowed header pairs.
    pub fn http(status: u16, headers: &[(&str, &str)]) -> Answer {
        Answer::Http(
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn grpc(code: i32, message: &str) -> Answer {
        Answer::Grpc(code, message.to_string())
    }

    /// What an unscripted, well-formed request gets.
    pub fn success(protocol: Protocol) -> Answer {
        match protocol {
            Protocol::Http => Answer::Http(200, Vec::new()),
            Protocol::Grpc => Answer::Grpc(0, String::new()),
        }
    }

    pub fn is_success(&self) -> bool {
        match self {
            Answer::Http(status, _) => (200..300).contains(status),
            Answer::Grpc(code, _) | Answer::GrpcRetryInfo(code, ..) => *code == 0,
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Answer::Http(..) => Protocol::Http,
            Answer::Grpc(..) | Answer::GrpcRetryInfo(..) => Protocol::Grpc,
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The HTTP path, or the gRPC method's path.
    pub path: String,
    /// Headers or gRPC metadata, names in lower case, in arrival order:
    /// content-type, content-encoding or grpc-encoding, authorization,
    /// user-agent and any custom ones.
    pub headers: Vec<(String, String)>,
    /// The body's size: as sent for HTTP (compressed if it was), the
    /// decompressed message for gRPC (tonic inflates it before it is seen).
    pub bytes: usize,
    /// The decoded message; None if the request was rejected.
    pub request: Option<ExportMetricsServiceRequest>,
    /// Why the request was rejected (bad path, content type, encoding, protobuf).
    pub rejected: Option<String>,
    /// The request's resource attributes (see [`resource_attributes`]).
    pub resource: Vec<(String, String)>,
    /// What it was answered.
    pub answer: Answer,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::find_header(&self.headers, name)
    }

    /// Decoded and answered with success: the data counts as delivered.
    pub fn delivered(&self) -> bool {
        self.request.is_some() && self.answer.is_success()
    }

    /// The request's points (see [`points`]); panics if it was rejected.
    pub fn points(&self) -> std::collections::BTreeMap<Key, Point> {
        points(self.request())
    }

    /// The decoded message; panics with the reason if it was rejected.
    pub fn request(&self) -> &ExportMetricsServiceRequest {
        self.request.as_ref().unwrap_or_else(|| {
            panic!(
                "OTLP request to {} was rejected ({:?}): {}",
                self.path,
                self.answer,
                self.rejected.as_deref().unwrap_or("")
            )
        })
    }

    /// One line for failure messages.
    fn summary(&self) -> String {
        let what = match (&self.request, &self.rejected) {
            (Some(r), _) => format!("{} points", points::count(r)),
            (None, Some(why)) => format!("rejected: {why}"),
            (None, None) => "rejected".to_string(),
        };
        format!(
            "{} {:?} {what}, {} bytes, headers {:?}",
            self.path, self.answer, self.bytes, self.headers
        )
    }
}

/// What the servers share with the test: the script and the record.
struct Shared {
    protocol: Protocol,
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
}

/// A request as the server saw it, before it is answered.
struct Incoming {
    path: String,
    headers: Vec<(String, String)>,
    bytes: usize,
}

impl Shared {
    /// Records a request and returns its answer: the next scripted one if it
    /// decoded, else `rejected` (which consumes nothing from the script).
    fn answer(
        &self,
        incoming: Incoming,
        decoded: Result<ExportMetricsServiceRequest, (Answer, String)>,
    ) -> Answer {
        let (request, rejected, answer) = match decoded {
            Ok(request) => {
                let answer = self
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| Answer::success(self.protocol));
                (Some(request), None, answer)
            }
            Err((answer, why)) => (None, Some(why), answer),
        };
        let resource = request
            .as_ref()
            .map(resource_attributes)
            .unwrap_or_default();
        self.received.lock().unwrap().push(Received {
            at: Instant::now(),
            path: incoming.path,
            headers: incoming.headers,
            bytes: incoming.bytes,
            request,
            rejected,
            resource,
            answer: answer.clone(),
        });
        answer
    }
}

/// Headers as (lower-case name, value) pairs, in arrival order.
fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// An OTLP receiver on loopback, serving until dropped.
pub struct OtlpReceiver {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Loopback, any free port; serves until dropped.
    pub fn start(protocol: Protocol) -> OtlpReceiver {
        OtlpReceiver::start_with(protocol, None)
    }

    /// A gRPC receiver over TLS: `pki` is a directory made by
    /// [`crate::web::make_pki`] (server.crt for 127.0.0.1; clients must show a
    /// certificate signed by ca.crt). Its endpoint is `https://`.
    pub fn start_grpc_tls(pki: &std::path::Path) -> OtlpReceiver {
        OtlpReceiver::start_with(Protocol::Grpc, Some(pki.to_path_buf()))
    }

    fn start_with(protocol: Protocol, tls: Option<std::path::PathBuf>) -> OtlpReceiver {
        let tls_on = tls.is_some();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("OTLP receiver: bind 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        // The receiver's own runtime, on its own thread: the tests stay synchronous.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("OTLP receiver: tokio runtime: {e}"));
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let shared = Arc::new(Shared {
            protocol,
            script: Mutex::new(VecDeque::new()),
            received: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-{protocol:?}").to_lowercase())
            .spawn(move || {
                runtime.block_on(async move {
                    match protocol {
                        Protocol::Http => tokio::spawn(http_server::serve(listener, server)),
                        Protocol::Grpc => tokio::spawn(grpc_server::serve(listener, server, tls)),
                    };
                    // Dropping the runtime after this ends every connection.
                    let _ = stopped.await;
                })
            })
            .unwrap();
        OtlpReceiver {
            protocol,
            addr,
            tls: tls_on,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The answers to the next well-formed requests, in order (after any still
    /// pending), then success. Panics on an answer of the other protocol.
    pub fn script(&self, answers: Vec<Answer>) {
        for a in &answers {
            assert_eq!(
                a.protocol(),
                self.protocol,
                "OTLP receiver: {a:?} scripted on a {:?} receiver",
                self.protocol
            );
            if let Answer::Http(status, headers) = a {
                http_server::check(*status, headers);
            }
        }
        self.shared.script.lock().unwrap().extend(answers);
    }

    /// Scripted answers not given yet.
    pub fn script_left(&self) -> usize {
        self.shared.script.lock().unwrap().len()
    }

    /// What the agent is given: `http://127.0.0.1:PORT/v1/metrics` for HTTP,
    /// `http://127.0.0.1:PORT` for gRPC.
    pub fn endpoint(&self) -> String {
        match self.protocol {
            Protocol::Http => format!("http://{}{}", self.addr, http_server::PATH),
            Protocol::Grpc if self.tls => format!("https://{}", self.addr),
            Protocol::Grpc => format!("http://{}", self.addr),
        }
    }

    /// Every request so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `pred(&received)` holds and returns what was received;
    /// panics with a summary of every request if `deadline` passes first.
    pub fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let received = self.received();
            if pred(&received) {
                return received;
            }
            if start.elapsed() > deadline {
                let lines: Vec<String> = received.iter().map(Received::summary).collect();
                panic!(
                    "OTLP {:?} receiver: {what}: not within {deadline:?}; {} requests:\n{}",
                    self.protocol,
                    received.len(),
                    lines.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
