//! The secure endpoint with real peers: web configs that promtool accepts, a
//! real Prometheus scraping over mutual TLS with basic auth, what clients
//! without a certificate, with a wrong password, with plain HTTP or with old
//! TLS get, content negotiation, and certificates and settings changed on disk.

use std::path::Path;
use std::time::{Duration, Instant};
use tests::prometheus::{Prometheus, Settings};
use tests::web::{
    SERVER_EXT, Scratch, bcrypt_hash, curl, issue, make_pki, promtool_check_web_config, s_client,
    start_agent,
};
use tests::{Exposition, http_get, openmetrics_check, promtool_check};

const MTLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                    client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n";

fn mtls_with_auth(dir: &Path) -> String {
    format!(
        "{MTLS}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  prometheus: '{}'\n",
        bcrypt_hash("s3cret")
    )
    .replace("server.crt", &dir.join("server.crt").display().to_string())
}

/// Every web config shape the agent takes is one exporter-toolkit (promtool) takes.
#[test]
fn promtool_accepts_the_web_configs_and_the_agent_rejects_bad_ones() {
    let dir = Scratch::new("webcfg");
    make_pki(&dir.0);
    let hash = bcrypt_hash("pw");
    let mut fixtures = vec![
        ("mtls-auth.yml", mtls_with_auth(&dir.0)),
        ("empty.yml", String::new()),
        ("auth-only.yml", format!("basic_auth_users:\n  alice: '{hash}'\n")),
        (
            "versions.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             min_version: TLS13\n  max_version: TLS13\n  curve_preferences: [X25519, CurveP256, CurveP384]\n  \
             cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  \
             prefer_server_cipher_suites: true\n\
             http_server_config:\n  http2: false\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
                .to_string(),
        ),
    ];
    for auth in [
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] {
        let ca = if auth.contains("Verify") {
            "  client_ca_file: ca.crt\n"
        } else {
            ""
        };
        fixtures.push((
            "auth-type.yml",
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: {auth}\n{ca}"
            ),
        ));
    }
    let other = Scratch::new("other-ca");
    make_pki(&other.0);
    let p = |d: &Scratch, f: &str| d.path(f).display().to_string();
    let ca = p(&dir, "ca.crt");
    let own = [
        "-CAfile",
        &ca,
        "-cert",
        &p(&dir, "client.crt"),
        "-key",
        &p(&dir, "client.key"),
    ];
    let foreign = [
        "-CAfile",
        &ca,
        "-cert",
        &p(&other, "client.crt"),
        "-key",
        &p(&other, "client.key"),
    ];
    for (name, text) in &fixtures {
        let file = dir.write(name, text);
        promtool_check_web_config(&file);
        // And the agent starts with it (all probes off: only the server matters).
        let (agent, _) = start_agent(&[], &["--web-config-file", file.to_str().unwrap()]);
        // Each client_auth_type lets through (no certificate, a certificate of
        // another CA, ours) as Go's crypto/tls does.
        let expect = [
            ("RequestClientCert", [true, true, true]),
            ("RequireAnyClientCert", [false, true, true]),
            ("VerifyClientCertIfGiven", [true, false, true]),
            ("RequireAndVerifyClientCert", [false, false, true]),
        ];
        if let Some((auth, want)) = expect
            .iter()
            .find(|(a, _)| text.contains(&format!("client_auth_type: {a}\n")))
            && !text.contains("basic_auth_users")
        {
            let got = [
                s_client(agent.addr, &["-CAfile", &ca]).0,
                s_client(agent.addr, &foreign).0,
                s_client(agent.addr, &own).0,
            ];
            assert_eq!(&got, want, "{auth}: (no certificate, another CA's, ours)");
        }
        drop(agent);
    }
    // client_allowed_sans (newer than Debian's promtool 2.42, so checked here
    // only): a verified certificate must also carry one of the names.
    let p = |f: &str| dir.path(f).display().to_string();
    let client = [
        "-CAfile",
        &p("ca.crt"),
        "-cert",
        &p("client.crt"),
        "-key",
        &p("client.key"),
    ];
    for (sans, accepted) in [("[prometheus, other]", true), ("[not-prometheus]", false)] {
        let file = dir.write(
            "sans.yml",
            &format!("{MTLS}  client_allowed_sans: {sans}\n"),
        );
        let (agent, _) = start_agent(&[], &["--web-config-file", file.to_str().unwrap()]);
        let (ok, out) = s_client(agent.addr, &client);
        assert_eq!(ok, accepted, "client_allowed_sans {sans}:\n{out}");
    }
    // node_exporter's spelling of the flag.
    let file = dir.write("empty.yml", "");
    let (agent, _) = start_agent(&[], &["--web.config.file", file.to_str().unwrap()]);
    assert_eq!(http_get(agent.addr, "/healthz").unwrap().status, 200);
    drop(agent);

    // Mistakes stop the start with the reason, before anything is attached.
    let bad = [
        (
            "tls_server_config:\n  cert_fil: a\n",
            "unknown field `cert_fil`",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
            "not supported by the agent's TLS (rustls): TLS_RSA_WITH_AES_128_CBC_SHA",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  curve_preferences: [CurveP521]\n",
            "CurveP521",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
            "usable pair",
        ),
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
            "nope.crt",
        ),
        ("basic_auth_users:\n  bob: plain\n", "bcrypt"),
    ];
    for (text, want) in bad {
        let file = dir.write("bad.yml", text);
        let out = std::process::Command::new(tests::agent_bin())
            .args([
                "run",
                "--probes",
                "none",
                "--listen",
                "127.0.0.1:0",
                "--web-config-file",
            ])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "agent started with {text}");
        assert!(
            stderr.contains(want),
            "for {text:?}, want {want:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn prometheus_scrapes_over_mutual_tls_with_basic_auth() {
    let dir = Scratch::new("mtls");
    make_pki(&dir.0);
    let config = dir.write("web.yml", &mtls_with_auth(&dir.0));
    promtool_check_web_config(&config);
    let (agent, health) = start_agent(&[], &["--web-config-file", config.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}/metrics", agent.addr.port());
    let p = |f: &str| dir.path(f).display().to_string();
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let with_cert = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let scrape_openmetrics = || {
        let accept = ["-H", "Accept: application/openmetrics-text"];
        curl(
            &[
                &with_cert[..],
                &["-u", "prometheus:s3cret"],
                &accept,
                &[&url],
            ]
            .concat(),
        )
    };

    // A real Prometheus: scheme https, tls_config, basic_auth.
    let prometheus = Prometheus::start(&Settings {
        scrape_configs: Some(format!(
            "- job_name: agent\n  scheme: https\n  tls_config:\n    ca_file: {ca}\n    cert_file: {cert}\n    \
             key_file: {key}\n  basic_auth:\n    username: prometheus\n    password: s3cret\n  \
             static_configs:\n  - targets: ['{}']\n",
            agent.addr
        )),
        ..Settings::every_second(agent.addr)
    });
    let up = prometheus.wait_for_value("up{job=\"agent\"}", 1.0, Duration::from_secs(60));
    assert_eq!(up, Some(1.0), "targets: {}", prometheus.targets());
    // The agent's own series came through.
    let encodes = prometheus.value("ebpf_agent_http_scrape_encodes_total");
    assert!(encodes >= Some(1.0), "{encodes:?}");

    // Good credentials: 200, classic text format by default, which promtool accepts.
    let (code, out) = curl(
        &[
            &with_cert[..],
            &["-u", "prometheus:s3cret", "-D", "-", &url],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("text/plain; version=0.0.4"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{out}"
    );
    let body = out.split_once("\r\n\r\n").unwrap().1;
    promtool_check(body);
    // Accept: OpenMetrics still gets OpenMetrics, which the strict parser takes.
    let (_, om) = scrape_openmetrics();
    assert!(
        om.ends_with("# EOF\n"),
        "{}",
        &om[om.len().saturating_sub(200)..]
    );
    openmetrics_check(&om);
    assert!(
        Exposition::parse(&om)
            .get("ebpf_agent_http_scrapes_total", &[])
            .is_some()
    );
    // gzip when asked (curl --compressed decodes it).
    let (_, gz) = curl(
        &[
            &with_cert[..],
            &["-u", "prometheus:s3cret", "--compressed", "-D", "-", &url],
        ]
        .concat(),
    );
    assert!(
        gz.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{}",
        &gz[..300]
    );
    assert!(gz.contains("# TYPE ebpf_agent_http_scrapes_total counter"));
    // HEAD: the headers, no body.
    let (_, head) = curl(&[&with_cert[..], &["-u", "prometheus:s3cret", "-I", &url]].concat());
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-length: ")
    );
    assert!(!head.contains("# TYPE"), "{head}");

    // A wrong password or none: 401 with WWW-Authenticate.
    for auth in [
        &["-u", "prometheus:wrong"][..],
        &["-u", "mallory:s3cret"],
        &[],
    ] {
        let (_, out) = curl(&[&with_cert[..], auth, &["-D", "-", &url]].concat());
        assert!(out.starts_with("HTTP/1.1 401"), "{out}");
        assert!(
            out.contains("www-authenticate: Basic") || out.contains("WWW-Authenticate: Basic"),
            "{out}"
        );
        assert!(!out.contains("# TYPE"));
    }
    // No client certificate: the handshake fails, nothing is served.
    let (code, out) = curl(&["--cacert", &ca, "-u", "prometheus:s3cret", &url]);
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("# TYPE"), "{out}");
    let (ok, out) = s_client(agent.addr, &["-CAfile", &ca]);
    assert!(!ok, "a client without a certificate got through:\n{out}");
    // A certificate from another CA: refused too.
    let other = Scratch::new("other-ca");
    make_pki(&other.0);
    let (ok, out) = s_client(
        agent.addr,
        &[
            "-CAfile",
            &ca,
            "-cert",
            &other.path("client.crt").display().to_string(),
            "-key",
            &other.path("client.key").display().to_string(),
        ],
    );
    assert!(!ok, "a certificate of another CA got through:\n{out}");
    let (ok, out) = s_client(agent.addr, &["-CAfile", &ca, "-cert", &cert, "-key", &key]);
    assert!(ok, "{out}");
    // Plain HTTP to the TLS port: no metrics.
    let (_, out) = curl(&[
        "-u",
        "prometheus:s3cret",
        &format!("http://{}/metrics", agent.addr),
    ]);
    assert!(!out.contains("# TYPE"), "{out}");

    // Kubelet's probes: the plain health listener, which serves nothing else.
    assert_eq!(http_get(health, "/readyz").unwrap().status, 200);
    assert_eq!(http_get(health, "/healthz").unwrap().status, 200);
    assert_eq!(http_get(health, "/metrics").unwrap().status, 404);

    // Every refusal above was counted.
    let (_, om) = scrape_openmetrics();
    let e = Exposition::parse(&om);
    assert!(e.value("ebpf_agent_http_auth_failures_total", &[]) >= 3.0);
    assert!(e.value("ebpf_agent_http_tls_handshake_failures_total", &[]) >= 3.0);
}

/// Versions, certificate rotation and reloads: all without a restart.
#[test]
fn certificates_and_settings_change_without_restart() {
    let dir = Scratch::new("rotate");
    make_pki(&dir.0);
    let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let config = dir.write("web.yml", &format!("{base}  min_version: TLS12\n"));
    promtool_check_web_config(&config);
    let (mut agent, _) = start_agent(&[], &["--web-config-file", config.to_str().unwrap()]);
    let ca = dir.path("ca.crt").display().to_string();
    let url = format!("https://127.0.0.1:{}/metrics", agent.addr.port());
    let metric = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        let (_, om) = curl(&[
            "--cacert",
            &ca,
            "-H",
            "Accept: application/openmetrics-text",
            &url,
        ]);
        Exposition::parse(&om).get(name, labels)
    };

    // TLS 1.1 is refused by the server (the client is told it may offer it).
    let (ok, out) = s_client(
        agent.addr,
        &["-CAfile", &ca, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    );
    assert!(!ok, "TLS 1.1 got through:\n{out}");
    // Refused by the server's alert, not by the client declining to offer it.
    assert!(
        out.contains("alert handshake failure") || out.contains("alert protocol version"),
        "{out}"
    );
    let (ok, out) = s_client(agent.addr, &["-CAfile", &ca, "-tls1_2"]);
    assert!(ok && out.contains("CN = agent"), "{out}");

    // A new certificate (same key) renamed into place is served within the poll.
    issue(&dir.0, "rotated", "agent-rotated", SERVER_EXT, "server.key");
    std::fs::rename(dir.path("rotated.crt"), dir.path("server.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = s_client(agent.addr, &["-CAfile", &ca]);
        if ok && out.contains("CN = agent-rotated") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotated certificate not served:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(
            "ebpf_agent_web_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );

    // A broken file keeps the old settings; the failure is counted.
    std::fs::write(&config, "tls_server_config: [\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        "ebpf_agent_web_config_reloads_total",
        &[("result", "failure")],
    ) != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "bad file not noticed:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric("ebpf_agent_web_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let (ok, out) = s_client(agent.addr, &["-CAfile", &ca, "-tls1_2"]);
    assert!(ok, "{out}");
    assert!(
        agent.stderr().contains("previous settings stay"),
        "{}",
        agent.stderr()
    );

    // SIGHUP applies a fixed file at once: TLS 1.3 only now.
    std::fs::write(&config, format!("{base}  min_version: TLS13\n")).unwrap();
    promtool_check_web_config(&config);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(
        "ebpf_agent_web_config_reloads_total",
        &[("result", "success")],
    ) != Some(2.0)
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = s_client(agent.addr, &["-CAfile", &ca, "-tls1_2"]);
    assert!(!ok, "TLS 1.2 got through min_version TLS13:\n{out}");
    let (ok, out) = s_client(agent.addr, &["-CAfile", &ca, "-tls1_3"]);
    assert!(ok, "{out}");
    let (status, _) = agent.stop_with(libc::SIGTERM);
    assert!(status.success());
}
