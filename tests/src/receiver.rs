//! A push receiver for the tests: a loopback HTTP/1.1 server that records
//! every request (headers, body) and answers from a script of statuses, then
//! 200. Real Prometheus receives the real pushes (prometheus.rs); this one
//! plays the receiver's failures (400, 401, 413, 429, 503) on demand.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::find_header(&self.headers, name)
    }
}

/// The answer to one request: a status and extra headers.
pub type Answer = (u16, Vec<(String, String)>);

/// A receiver serving until dropped (its thread then ends with the process).
pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Listens on `addr` (port 0: any free loopback port).
    pub fn start(addr: SocketAddr, script: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (script.clone(), received.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &s, &r));
            }
        });
        Receiver {
            addr,
            script,
            received,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Statuses still to be answered before 200s.
    pub fn script_left(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

fn serve(
    conn: std::net::TcpStream,
    script: &Mutex<VecDeque<Answer>>,
    received: &Mutex<Vec<Received>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = crate::http::find_header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, extra) = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, Vec::new()));
        received.lock().unwrap().push(Received {
            at: Instant::now(),
            path,
            headers,
            body,
            status,
        });
        let mut out = format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\n");
        for (k, v) in extra {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        if conn.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}
