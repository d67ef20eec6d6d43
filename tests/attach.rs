//! `agent attach` end to end (agent/src/attach/): a command run under the
//! agent, a PID that exits while watched, the errors a user meets, and the
//! live view drawn in a real terminal (tmux).

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tests::{Workload, agent_bin, require_root, workload_bin};

fn attach(args: &[&str]) -> Output {
    require_root();
    Command::new(agent_bin())
        .arg("attach")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agent attach")
}

/// The object with `"final": true`, checking that it is the last line and
/// that every line is one JSON object.
fn final_object(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        !lines.is_empty(),
        "no output; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for l in &lines {
        assert!(l.starts_with('{') && l.ends_with('}'), "not NDJSON: {l}");
    }
    let last = lines.last().unwrap().to_string();
    assert!(last.starts_with("{\"final\":true"), "{last}");
    assert_eq!(stdout.matches("\"final\":true").count(), 1);
    last
}

/// The JSON object of syscall `name` in a snapshot line (the schema puts
/// `name` first in each row).
fn syscall<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let start = json.find(&format!("{{\"name\":\"{name}\""))?;
    let end = start + json[start..].find('}')? + 1;
    // errors_by_errno is a nested object: extend to the row's closing brace.
    let end = end + json[end..].find('}').map_or(0, |i| i + 1);
    Some(&json[start..end])
}

fn field(obj: &str, key: &str) -> u64 {
    let at = obj
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} missing in {obj}"))
        + key.len()
        + 3;
    obj[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {obj}"))
}

#[test]
fn command_is_traced_from_its_first_instruction_and_its_exit_code_kept() {
    const N: u64 = 5_000;
    const M: u64 = 321;
    const K: u64 = 3;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let w = workload_bin();
    let out = attach(&[
        "--json",
        "--interval",
        "0.2",
        "--",
        w.to_str().unwrap(),
        "demo",
        &N.to_string(),
        &M.to_string(),
        &port,
        &K.to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the agent exits with the command's code; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = final_object(&out);
    let getppid = syscall(&last, "getppid").expect("getppid row");
    assert_eq!(field(getppid, "count"), N, "{getppid}");
    assert_eq!(field(getppid, "errors"), 0);
    let fchdir = syscall(&last, "fchdir").expect("fchdir row");
    assert_eq!(field(fchdir, "count"), M, "{fchdir}");
    assert!(fchdir.contains(&format!("\"EBADF\":{M}")), "{fchdir}");
    // From its first instruction: the exec itself is counted.
    assert!(syscall(&last, "execve").is_some(), "{last}");
    // The last syscalls, staged on a CPU when the command exits, are flushed
    // into the summary: one connect per connection.
    let connect = syscall(&last, "connect").expect("connect row");
    assert_eq!(field(connect, "count"), K, "{connect}");
    // Only the command: the agent's own epoll_wait is filtered out in the kernel.
    assert!(syscall(&last, "epoll_wait").is_none(), "{last}");
    assert!(last.contains("\"success\":3"), "{last}");
    assert!(last.contains("\"exit\":{\"code\":3}"), "{last}");
    assert!(last.contains("\"probe\":\"syscalls\",\"attached\":true"));
}

#[test]
fn a_watched_pid_that_exits_ends_with_a_summary_and_exit_0() {
    let mut w = Workload::start(&["spin", "1", "700", "-1"]);
    let _tids = w.line();
    let pid = w.pid();
    let started = Instant::now();
    let agent = std::thread::spawn(move || attach(&["--pid", &pid, "--json", "--interval", "0.2"]));
    std::thread::sleep(Duration::from_millis(500));
    w.go();
    let out = agent.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let last = final_object(&out);
    assert!(last.contains("\"process\":null"), "{last}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().count() >= 2,
        "interval objects before the final one"
    );
}

#[test]
fn bad_targets_are_one_clear_line_and_a_failure() {
    for (pid, says) in [
        ("999999999", "no such process"),
        ("0", "not a process"),
        ("2", "kernel thread"),
    ] {
        let out = attach(&["--pid", pid]);
        assert!(!out.status.success(), "--pid {pid} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(says), "--pid {pid}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = attach(&["--", "/no/such/command"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot run `/no/such/command`"), "{stderr}");
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed (cargo xtask setup --test-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_view_draws_in_an_80_column_terminal() {
    require_root();
    let session = format!("attach-test-{}", std::process::id());
    let agent = agent_bin();
    let w = workload_bin();
    // The command keeps making getppid calls (`storm`) after a "go" on stdin,
    // which tmux's pane gives it: run it under sh to feed it.
    let script = format!(
        "echo go | {} attach --interval 0.3 -- {} storm 1 200000000; sleep 30",
        agent.display(),
        w.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "80",
        // Tall enough for every probe's section plus a lost-events line,
        // so the header never scrolls off: the width is what is tested.
        "-y",
        "70",
        "-s",
        &session,
        "sh",
        "-c",
        &script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let screen = loop {
        std::thread::sleep(Duration::from_millis(300));
        let screen = tmux(&["capture-pane", "-p", "-t", &session]);
        if screen.contains("getppid") && screen.contains("RUN QUEUE LATENCY")
            || Instant::now() > deadline
        {
            break screen;
        }
    };
    tmux(&["kill-session", "-t", &session]);
    assert!(screen.contains("agent attach: PID"), "{screen}");
    assert!(screen.contains("SYSCALL"), "{screen}");
    for header in ["COUNT", "ERRORS", "RATE/s", "P50", "P99", "MAX"] {
        assert!(screen.contains(header), "{header}: {screen}");
    }
    assert!(screen.contains("getppid"), "{screen}");
    assert!(screen.contains("RUN QUEUE LATENCY"), "{screen}");
    assert!(screen.contains("TCP CONNECTS"), "{screen}");
    assert!(screen.contains("process: cpu"), "{screen}");
    // Redrawn in place, not scrolled: the title appears once.
    assert_eq!(screen.matches("agent attach: PID").count(), 1, "{screen}");
    for line in screen.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
    if let Some(path) = std::env::var_os("ATTACH_CAPTURE") {
        std::fs::write(path, &screen).unwrap();
    }
}

#[test]
fn children_are_followed_unless_told_not_to() {
    // bash forks the first workload, then execs the second in its own process.
    // bash itself calls getppid a few times, so the two runs are compared.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let w = workload_bin();
    let script = format!(
        "{w} demo 1000 5 {port} 1; exec {w} demo 1000 5 {port} 1",
        w = w.display()
    );
    let run = |children: bool| {
        let mut args = vec!["--json"];
        if !children {
            args.push("--no-children");
        }
        args.extend(["--", "bash", "-c", &script]);
        let out = attach(&args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = final_object(&out);
        let getppid = field(syscall(&last, "getppid").expect("getppid row"), "count");
        (getppid, last)
    };
    let processes = |last: &str| {
        let v: serde_json::Value = serde_json::from_str(last).unwrap();
        let p = &v["processes"];
        let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p}"));
        let exits: Vec<(String, u64)> = p["exits"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        (n("execs"), n("forks"), exits, p["recent"].to_string())
    };
    let (alone, last) = run(false);
    assert!((1000..=1010).contains(&alone), "{last}");
    assert!(last.contains("\"success\":1,"), "{last}");
    // The command's own execs (bash, then the second workload) and its fork;
    // the forked child's exec and exit are not seen.
    let (execs, forks, exits, _) = processes(&last);
    assert_eq!((execs, forks), (2, 1), "{last}");
    assert_eq!(exits, [("nonzero".to_string(), 1)], "{last}");
    let (with_children, last) = run(true);
    assert_eq!(with_children, alone + 1000, "{last}");
    assert!(last.contains("\"success\":2,"), "{last}");
    let (execs, forks, exits, recent) = processes(&last);
    assert_eq!((execs, forks), (3, 1), "{last}");
    assert_eq!(exits, [("nonzero".to_string(), 2)], "{last}");
    assert!(
        recent.contains("\"event\":\"exit\"") && recent.contains(&format!("{}", w.display())),
        "{recent}"
    );
}
