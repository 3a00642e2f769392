//! Validation of PatchPolicy specs.
use std::path::PathBuf;
use std::process::ExitCode;

/// Validates policy files and prints one line per problem.
pub fn run_cli(_files: &[PathBuf]) -> ExitCode {
    ExitCode::FAILURE
}
