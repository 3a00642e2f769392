use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use sofort::cli::{Cli, Command, LogFormat};

/// Log targets that may print objects' contents: kube's client logs the whole
/// body of an answer it cannot decode (a PatchPolicy list, with every policy's
/// embargoed advisory) at WARN. They are held to ERROR whatever `--log` says.
const QUIET_TARGETS: &str = "kube_client::client=error";

/// The name kubectl runs a plugin by: `kubectl sofort ...` execs `kubectl-sofort`.
const PLUGIN_NAME: &str = "kubectl-sofort";

fn init_logging(format: LogFormat, filter: &str, file: Option<std::fs::File>) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{QUIET_TARGETS}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET_TARGETS}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, file) {
        (LogFormat::Text, None) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, None) => builder.with_writer(std::io::stderr).json().init(),
        (LogFormat::Text, Some(f)) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        (LogFormat::Json, Some(f)) => builder.with_writer(std::sync::Mutex::new(f)).json().init(),
    }
}

/// A new log file of this run's own: created exclusively (never an existing
/// file or a planted symlink), readable only by its owner.
fn new_log_file(what: &str) -> Option<(std::fs::File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    for attempt in 0..16u32 {
        let path = dir.join(format!(
            "sofort-{what}-{}-{attempt}-{:08x}.log",
            std::process::id(),
            fastrand::u32(..)
        ));
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        if let Ok(f) = opened {
            return Some((f, path));
        }
    }
    None
}

/// Where the logs of this command go: a file for the live views (they own
/// the terminal), standard error otherwise.
fn log_file(command: &Command) -> Option<(std::fs::File, PathBuf)> {
    match command {
        #[cfg(feature = "sandbox")]
        Command::Sandbox(a) if !a.log_to_stderr => new_log_file("sandbox"),
        Command::Status(a) if !a.log_to_stderr && sofort::cmd::status::use_tui(a.plain) => {
            new_log_file("status")
        }
        _ => None,
    }
}

fn parse_cli() -> Cli {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut command = Cli::command();
    if invoked_as.is_some_and(|n| n.starts_with(PLUGIN_NAME)) {
        // Help and errors name the command as the user typed it.
        command = command.name("kubectl sofort").bin_name("kubectl sofort");
    }
    let matches = command.get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let file = log_file(&cli.command);
    let log_path = file.as_ref().map(|(_, p)| p.clone());
    init_logging(cli.log_format, &cli.log, file.map(|(f, _)| f));
    let code = match cli.command {
        Command::Crd => match sofort::cmd::crd::patch_policy_crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Validate(args) => sofort::cmd::validate::run_cli(&args.files),
        Command::Plan(args) => sofort::cmd::plan::run_cli(&args, jiff::Timestamp::now()),
        Command::Status(args) => sofort::cmd::status::run_cli(&args),
        Command::Pause(args) => sofort::cmd::kubectl_plugin::run_pause(&args.name, true),
        Command::Resume(args) => sofort::cmd::kubectl_plugin::run_pause(&args.name, false),
        Command::Why(args) => sofort::cmd::kubectl_plugin::run_why(&args.node),
        Command::Controller(args) => match sofort::controller::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Agent(args) => sofort::agent::run_cli(&args),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sofort::testkit::main(&args, log_path.as_deref()),
    };
    if let Some(p) = log_path {
        eprintln!("logs: {}", p.display());
    }
    code
}
