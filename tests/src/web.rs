//! Helpers for the secure-endpoint tests: a throw-away PKI made with the
//! `openssl` command, curl and `openssl s_client` as clients, a web config
//! checked by `promtool check web-config`, and a real Prometheus server.

use crate::{Agent, agent_bin, free_port, http_get};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a tool, panicking with how to install it if it is missing.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); `cargo xtask setup --test-tools` installs it")
        })
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (cargo xtask setup --test-tools installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// files `ca.crt`, `server.crt`/`server.key`, `client.crt`/`client.key`.
pub fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    openssl(dir, &ca);
    issue(dir, "server", "agent", SERVER_EXT, "server.key");
    issue(
        dir,
        "client",
        "prometheus",
        "subjectAltName=DNS:prometheus\nextendedKeyUsage=clientAuth\n",
        "client.key",
    );
}

/// `name.crt` signed by the CA in `dir`, with common name `cn`, for the key
/// `key` (made as `name.key` if that file does not exist yet).
pub fn issue(dir: &Path, name: &str, cn: &str, extensions: &str, key: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let ext = format!("{name}.ext");
    let subj = format!("/CN={cn}");
    let mut req = vec!["req", "-new", "-out", &csr, "-subj", &subj];
    if dir.join(key).exists() {
        req.extend(["-key", key]);
    } else {
        req.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
        ]);
    }
    openssl(dir, &req);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

pub const SERVER_EXT: &str =
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";

/// A bcrypt hash of `password` (cost 10, as htpasswd -B makes).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 10).unwrap()
}

/// `promtool check web-config FILE` must accept the file.
pub fn promtool_check_web_config(file: &Path) {
    let out = run("promtool", &["check", "web-config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "promtool check web-config rejected {}:\n{}{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// Starts `agent run --probes none --listen <free> --health-listen <free>
/// args`, waiting until the plain health listener says ready. Returns the
/// agent (whose `addr` is the main listener) and the health address.
pub fn start_agent(prefix: &[&str], args: &[&str]) -> (Agent, SocketAddr) {
    crate::require_root();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(agent_bin());
            c
        }
        None => Command::new(agent_bin()),
    };
    cmd.args(["run", "--probes", "none", "--listen"])
        .arg(addr.to_string())
        .arg("--health-listen")
        .arg(health.to_string())
        .args(args);
    let agent = Agent::spawn(cmd, addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(health, "/readyz").is_ok_and(|r| r.status == 200) {
        assert!(
            Instant::now() < deadline,
            "agent not ready within 30 s; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (agent, health)
}

/// curl with `args`, returning (exit code, headers+body as text, body).
pub fn curl(args: &[&str]) -> (i32, String) {
    let out = run("curl", &[&["-sS", "--max-time", "10"], args].concat());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `openssl s_client` to `addr` with extra arguments; its output, and whether
/// a session was established (a certificate was verified and data came back).
pub fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let target = addr.to_string();
    let mut all = vec!["s_client", "-connect", &target, "-brief", "-ign_eof"];
    all.extend_from_slice(args);
    let mut child = Command::new("openssl")
        .args(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    // A request, so a rejected client certificate (sent after the server's
    // Finished in TLS 1.3) shows as a failure too.
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text.contains("CONNECTION ESTABLISHED") && text.contains("HTTP/1.1 ");
    (ok, text)
}

/// An HTTP/1.1 client that keeps its connection open between requests, as
/// Prometheus does, and reconnects when the server has closed it.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<std::io::BufReader<std::net::TcpStream>>,
    /// Connections opened after the first.
    pub reconnects: u32,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            addr,
            conn: None,
            reconnects: 0,
        }
    }

    /// GET `path` with `accept`: (status, body). One retry on a fresh
    /// connection if the kept one turns out closed.
    pub fn get(&mut self, path: &str, accept: &str) -> std::io::Result<(u16, String)> {
        match self.try_get(path, accept) {
            Ok(r) => Ok(r),
            Err(_) => {
                self.conn = None;
                self.reconnects += 1;
                self.try_get(path, accept)
            }
        }
    }

    fn try_get(&mut self, path: &str, accept: &str) -> std::io::Result<(u16, String)> {
        use std::io::{BufRead, Read, Write};
        if self.conn.is_none() {
            let s = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(std::io::BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        write!(
            conn.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n\r\n",
            self.addr
        )?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
