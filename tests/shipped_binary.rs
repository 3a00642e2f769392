//! The shipped binary (`--no-default-features`, as the Dockerfile builds it)
//! links no part of the API emulator.
//!
//! Asks cargo itself for the dependency tree of each build, so a new path from
//! `sofort` to `sofort-sandbox` (a dependency made non-optional, a feature that
//! pulls it in) fails here rather than in a size or audit review of the image.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `cargo tree` reads only the lock file and the manifests (`--offline`); this
/// bounds it if cargo waits on a lock held by another build.
const TREE_TIMEOUT: Duration = Duration::from_secs(180);

/// The crate names in `cargo tree -e normal -p sofort --locked --offline`,
/// with `extra` arguments (the feature selection).
fn normal_dependencies(extra: &[&str]) -> Result<Vec<String>, String> {
    let mut child = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-e",
            "normal",
            "-p",
            "sofort",
            "--locked",
            "--offline",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    // Read both pipes on threads so a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + TREE_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "cargo tree {extra:?} did not finish in {TREE_TIMEOUT:?}"
                ));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let out = out
        .join()
        .map_err(|_| "stdout reader panicked")?
        .map_err(|e| e.to_string())?;
    let err = err
        .join()
        .map_err(|_| "stderr reader panicked")?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cargo tree {extra:?} failed ({status}):\n{err}"));
    }
    // Lines are `name vX.Y.Z [(path)] [(*)]`.
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_build_without_default_features_links_no_emulator() -> Result<(), String> {
    let shipped = normal_dependencies(&["--no-default-features"])?;
    // A real tree, not an empty answer: the product's own dependencies are there.
    for needed in ["sofort", "kube", "k8s-openapi", "tokio"] {
        if !shipped.iter().any(|c| c == needed) {
            return Err(format!(
                "{needed} missing from the shipped tree: {shipped:?}"
            ));
        }
    }
    if let Some(c) = shipped.iter().find(|c| c.starts_with("sofort-sandbox")) {
        return Err(format!(
            "the shipped binary depends on {c}; keep it behind the `sandbox` feature"
        ));
    }
    // The live view's terminal crates stay out of the agent's and the
    // controller's image too (feature `tui`).
    if let Some(c) = shipped
        .iter()
        .find(|c| c.starts_with("ratatui") || c.starts_with("crossterm"))
    {
        return Err(format!(
            "the shipped binary depends on {c}; keep it behind the `tui` feature"
        ));
    }
    Ok(())
}

#[test]
fn the_default_build_has_the_emulator_for_the_demo_and_tests() -> Result<(), String> {
    // The counterpart of the check above: the same query sees the emulator
    // when the feature is on, so its absence there is the feature's doing.
    let default = normal_dependencies(&[])?;
    if !default.iter().any(|c| c == "sofort-sandbox") {
        return Err(format!(
            "sofort-sandbox missing from the default tree: {default:?}"
        ));
    }
    if !default.iter().any(|c| c == "ratatui") {
        return Err(format!(
            "ratatui missing from the default tree: {default:?}"
        ));
    }
    Ok(())
}

#[test]
fn the_image_is_built_without_default_features() -> Result<(), String> {
    // The tree checks above are about `--no-default-features`; this ties them
    // to what the Dockerfile actually builds.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    let dockerfile = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.contains("cargo build"))
        .collect();
    if builds.is_empty() {
        return Err("the Dockerfile has no `cargo build`".into());
    }
    for line in builds {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.contains(&"--no-default-features") {
            return Err(format!(
                "the image build keeps the default features: {line}"
            ));
        }
        if words
            .iter()
            .any(|w| *w == "--all-features" || w.contains("sandbox") || w.contains("tui"))
        {
            return Err(format!("the image build turns the sandbox back on: {line}"));
        }
    }
    Ok(())
}
