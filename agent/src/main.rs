use agent::cli::{Cli, Command};
use agent::{Invocation, config, logging};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Help, version and bad flags: clap prints them and exits (2 for errors).
    let cli = Cli::parse();
    let node = matches!(cli.command, None | Some(Command::Run(_)));
    let run_argv = match node {
        true => {
            agent::reload::ignore_hangup();
            std::env::args_os().skip(2).collect()
        }
        false => Vec::new(),
    };
    // Logging is not up yet: configuration errors are plain lines on stderr.
    let invocation = match Invocation::new(cli, run_argv, config::Env::from_process()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("agent: error: {e}");
            return ExitCode::from(2);
        }
    };
    let (format, level) = match &invocation {
        Invocation::Node(c) if c.args.config.check_config => return check_config(c),
        Invocation::Node(c) => (c.args.config.log_format, c.args.config.log_level.as_str()),
        _ => (logging::LogFormat::Auto, "info"),
    };
    logging::init(format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agent")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(agent::run(invocation));
    // Blocked tasks must not hold up the exit (SIGTERM should finish within 1 s).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// `--check-config`: the settings on stdout, warnings on stderr.
fn check_config(c: &config::Loaded) -> ExitCode {
    print!("{}", c.settings.table());
    for w in &c.warnings {
        eprintln!("agent: warning: {w}");
    }
    let file = c.file().unwrap_or("no config file");
    eprintln!("agent: configuration is valid ({file})");
    ExitCode::SUCCESS
}

/// The final error, in the log's format (JSON logs stay one object a line).
fn fail(message: &str) -> ExitCode {
    if logging::is_json() {
        tracing::error!("{message}");
    } else {
        eprintln!("agent: error: {message}");
    }
    ExitCode::FAILURE
}
