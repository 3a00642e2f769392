use std::process::ExitCode;

use clap::Parser;
use sofort::cli::{Cli, Command, LogFormat};

/// Log targets that may print objects' contents: kube's client logs the whole
/// body of an answer it cannot decode (a PatchPolicy list, with every policy's
/// embargoed advisory) at WARN. They are held to ERROR whatever `--log` says.
const QUIET_TARGETS: &str = "kube_client::client=error";

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{QUIET_TARGETS}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET_TARGETS}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    match cli.command {
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
        Command::Controller(args) => match sofort::controller::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Agent(args) => sofort::agent::run_cli(&args),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sofort::testkit::main(&args),
    }
}
