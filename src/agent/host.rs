//! The host abstraction: the only four things the agent ever does to its node.
//!
//! [`LinuxHost`] is the production implementation; [`FakeHost`] records calls
//! for tests; the sandbox implements [`Host`] over its simulated nodes.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::core::output_tail;

/// Largest output tail kept from a host command.
pub const TAIL_BYTES: usize = 4096;
/// Most lines kept from a host command's output.
pub const TAIL_LINES: usize = 20;
/// Longest a sentinel command may run.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the kernel publishes the current boot ID (not namespaced: a container
/// sees the host's).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// systemd's reboot request signal, `SIGRTMIN+5`, as systemd (built with glibc,
/// whose `SIGRTMIN` is 34) numbers it. Computing it from the C library this
/// binary is linked with would be wrong under musl, whose `SIGRTMIN` is 35:
/// that would send `SIGRTMIN+6` (kexec) in systemd's numbering.
pub const SYSTEMD_REBOOT_SIGNAL: i32 = 34 + 5;

/// Something the host could not do.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Reading the boot ID failed.
    #[error(
        "cannot read the boot ID from {path}: {source}; the agent needs the host's /proc (it is not namespaced, any container sees it)"
    )]
    BootId {
        /// File read.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sentinel file could not be checked.
    #[error(
        "cannot check the sentinel file {path}: {source}; mount the host directory holding it read-only into the agent"
    )]
    SentinelFile {
        /// File checked.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sentinel command did not answer 0 or 1.
    #[error(
        "sentinel command `{command}` {outcome}; it must exit 0 (reboot required) or 1 (not required). Output: {tail}"
    )]
    SentinelCommand {
        /// Command line.
        command: String,
        /// What happened (`exited with 127`, `timed out after 60s`).
        outcome: String,
        /// End of its output.
        tail: String,
    },
    /// A host command could not be started.
    #[error(
        "cannot start `{command}`: {source}; the agent image must contain nsenter and run with hostPID (and a privileged container for host commands)"
    )]
    Spawn {
        /// Command line.
        command: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The reboot request failed.
    #[error("cannot reboot the host with {method}: {detail}")]
    Reboot {
        /// Method used.
        method: String,
        /// What failed and what to do.
        detail: String,
    },
}

/// How a host command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// True when it was killed for exceeding its timeout.
    pub timed_out: bool,
    /// The end of its combined output (bounded by [`TAIL_BYTES`] and [`TAIL_LINES`]).
    pub output_tail: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl CommandOutcome {
    /// True when it exited 0 in time.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    /// `exit 0`, `exit 3`, `killed by a signal`, `timed out after 30m`.
    pub fn describe(&self, timeout: Duration) -> String {
        if self.timed_out {
            format!(
                "timed out after {}; the command was killed",
                crate::core::duration::format(timeout)
            )
        } else {
            match self.exit_code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_string(),
            }
        }
    }
}

/// The node the agent runs on. Implementations must be cheap to share.
pub trait Host: Send + Sync {
    /// Current boot ID of the host.
    fn boot_id(&self) -> BoxFuture<'_, Result<String, HostError>>;
    /// Whether the host asks for a reboot (the sentinel). An error never means "required".
    fn reboot_required(&self) -> BoxFuture<'_, Result<bool, HostError>>;
    /// Runs a patch command on the host, killing it after `timeout`.
    fn run_patch(
        &self,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandOutcome, HostError>>;
    /// Asks the host to reboot. Returns once the request was handed over; the
    /// host goes down some time later.
    fn reboot(&self) -> BoxFuture<'_, Result<(), HostError>>;
}

/// Where the Linux host finds its sentinel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sentinel {
    /// The file exists when a reboot is required.
    File(PathBuf),
    /// Run in the host's namespaces: exit 0 = required, 1 = not required.
    Command(Vec<String>),
}

/// How the Linux host reboots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebootVia {
    /// Send [`SYSTEMD_REBOOT_SIGNAL`] to PID 1 (needs hostPID and CAP_KILL).
    Signal,
    /// Run this command in the host's namespaces (needs a privileged container).
    Command(Vec<String>),
}

/// The real host, reached through the host PID namespace.
#[derive(Clone, Debug)]
pub struct LinuxHost {
    /// Reboot sentinel.
    pub sentinel: Sentinel,
    /// Reboot method.
    pub reboot_via: RebootVia,
    /// Boot ID file (overridable for tests).
    pub boot_id_path: PathBuf,
    /// Prefix that enters the host's namespaces; empty runs commands directly
    /// (tests).
    pub enter_host: Vec<String>,
}

/// `nsenter` into PID 1's namespaces.
pub fn nsenter_prefix() -> Vec<String> {
    [
        "nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl LinuxHost {
    /// A host that enters PID 1's namespaces for commands.
    pub fn new(sentinel: Sentinel, reboot_via: RebootVia) -> Self {
        LinuxHost {
            sentinel,
            reboot_via,
            boot_id_path: PathBuf::from(BOOT_ID_PATH),
            enter_host: nsenter_prefix(),
        }
    }

    fn host_command(&self, command: &[String]) -> Vec<String> {
        self.enter_host.iter().chain(command).cloned().collect()
    }
}

/// Kills a process group when dropped, unless disarmed after a normal exit.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // The group may already be gone; nothing else to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Runs a command with a timeout, capturing the tail of stdout and stderr
/// together. The child and its process group are killed (and the child reaped)
/// on timeout or when the future is dropped.
pub async fn run_command(argv: &[String], timeout: Duration) -> Result<CommandOutcome, HostError> {
    let line = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(HostError::Spawn {
            command: line,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Own process group, so a timeout also kills what the command started
        // (nsenter forks the real command into the host's PID namespace).
        .process_group(0)
        .spawn()
        .map_err(|source| HostError::Spawn {
            command: line.clone(),
            source,
        })?;
    let mut group = GroupKiller(child.id());
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(HostError::Spawn {
            command: line,
            source: std::io::Error::other("no output pipes"),
        });
    };
    let mut buf: Vec<u8> = Vec::new();
    let run = async {
        // Interleave both streams into one bounded buffer.
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                r = out.read(&mut a), if out_open => match r {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => buf.extend_from_slice(&a[..n]),
                },
                r = err.read(&mut b), if err_open => match r {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                },
            }
            if buf.len() > 2 * TAIL_BYTES {
                buf.drain(..buf.len() - TAIL_BYTES);
            }
        }
        child.wait().await
    };
    // On timeout, dropping `run` drops the child, which kills it (kill_on_drop)
    // and lets tokio reap it; `group` kills the rest of its process group.
    let result = tokio::time::timeout(timeout, run).await;
    let output_tail = output_tail(&buf, TAIL_BYTES, TAIL_LINES);
    match result {
        Ok(status) => {
            group.disarm();
            let status = status.map_err(|source| HostError::Spawn {
                command: line,
                source,
            })?;
            Ok(CommandOutcome {
                exit_code: status.code(),
                timed_out: false,
                output_tail,
                elapsed: started.elapsed(),
            })
        }
        Err(_) => Ok(CommandOutcome {
            exit_code: None,
            timed_out: true,
            output_tail,
            elapsed: started.elapsed(),
        }),
    }
}

impl Host for LinuxHost {
    fn boot_id(&self) -> BoxFuture<'_, Result<String, HostError>> {
        Box::pin(async move {
            tokio::fs::read_to_string(&self.boot_id_path)
                .await
                .map(|s| s.trim().to_string())
                .map_err(|source| HostError::BootId {
                    path: self.boot_id_path.display().to_string(),
                    source,
                })
        })
    }

    fn reboot_required(&self) -> BoxFuture<'_, Result<bool, HostError>> {
        Box::pin(async move {
            match &self.sentinel {
                Sentinel::File(path) => {
                    tokio::fs::try_exists(path)
                        .await
                        .map_err(|source| HostError::SentinelFile {
                            path: path.display().to_string(),
                            source,
                        })
                }
                Sentinel::Command(cmd) => {
                    let argv = self.host_command(cmd);
                    let outcome = run_command(&argv, SENTINEL_TIMEOUT).await?;
                    match (outcome.timed_out, outcome.exit_code) {
                        (false, Some(0)) => Ok(true),
                        (false, Some(1)) => Ok(false),
                        _ => Err(HostError::SentinelCommand {
                            command: cmd.join(" "),
                            outcome: if outcome.timed_out {
                                format!(
                                    "timed out after {}",
                                    crate::core::duration::format(SENTINEL_TIMEOUT)
                                )
                            } else {
                                match outcome.exit_code {
                                    Some(c) => format!("exited with {c}"),
                                    None => "was killed by a signal".to_string(),
                                }
                            },
                            tail: outcome.output_tail,
                        }),
                    }
                }
            }
        })
    }

    fn run_patch(
        &self,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandOutcome, HostError>> {
        Box::pin(async move { run_command(&self.host_command(&command), timeout).await })
    }

    fn reboot(&self) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            match &self.reboot_via {
                RebootVia::Signal => signal_init_reboot(),
                RebootVia::Command(cmd) => {
                    let argv = self.host_command(cmd);
                    let outcome = run_command(&argv, Duration::from_secs(60)).await?;
                    // `systemctl reboot` returns once the job is queued; the
                    // connection may also drop while the host goes down, so only a
                    // clean non-zero exit is a failure.
                    match outcome.exit_code {
                        Some(c) if c != 0 && !outcome.timed_out => Err(HostError::Reboot {
                            method: format!("command `{}`", cmd.join(" ")),
                            detail: format!(
                                "exit {c}: {}; check that the container is privileged",
                                outcome.output_tail
                            ),
                        }),
                        _ => Ok(()),
                    }
                }
            }
        })
    }
}

fn signal_init_reboot() -> Result<(), HostError> {
    // SAFETY: the number is a valid real-time signal (34..=64 on Linux), outside
    // the range either glibc (32, 33) or musl (32..=34) reserves for itself, and it
    // is only sent to another process; no handler or mask of ours is touched.
    let sig = unsafe { rustix::process::Signal::from_raw_unchecked(SYSTEMD_REBOOT_SIGNAL) };
    rustix::process::kill_process(rustix::process::Pid::INIT, sig).map_err(|e| {
        HostError::Reboot {
            method: "signal SIGRTMIN+5 to PID 1".to_string(),
            detail: format!(
                "{e}; run the agent with hostPID: true and the CAP_KILL capability, on a host whose init is systemd"
            ),
        }
    })
}

/// One call made on a [`FakeHost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCall {
    /// `reboot_required()`.
    RebootRequired,
    /// `run_patch(command, timeout)`.
    RunPatch(Vec<String>, Duration),
    /// `reboot()`.
    Reboot,
}

/// A scripted host for tests: answers from its fields and records calls.
#[derive(Debug)]
pub struct FakeHost {
    state: Mutex<FakeState>,
}

#[derive(Debug)]
struct FakeState {
    boot_id: String,
    sentinel: Result<bool, String>,
    patch: Result<CommandOutcome, String>,
    patch_delay: Duration,
    calls: Vec<HostCall>,
}

impl FakeHost {
    /// A host with this boot ID, no reboot required, a patch that exits 0.
    pub fn new(boot_id: &str) -> Self {
        FakeHost {
            state: Mutex::new(FakeState {
                boot_id: boot_id.to_string(),
                sentinel: Ok(false),
                patch: Ok(CommandOutcome {
                    exit_code: Some(0),
                    timed_out: false,
                    output_tail: String::new(),
                    elapsed: Duration::ZERO,
                }),
                patch_delay: Duration::ZERO,
                calls: Vec::new(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Changes the boot ID (as a reboot would).
    pub fn set_boot_id(&self, id: &str) {
        self.with(|s| s.boot_id = id.to_string());
    }
    /// Sets what the sentinel answers; `Err` is a failed check.
    pub fn set_sentinel(&self, answer: Result<bool, String>) {
        self.with(|s| s.sentinel = answer);
    }
    /// Sets what the patch command returns, after `delay` (tokio time).
    pub fn set_patch(&self, outcome: Result<CommandOutcome, String>, delay: Duration) {
        self.with(|s| {
            s.patch = outcome;
            s.patch_delay = delay;
        });
    }
    /// Calls made so far.
    pub fn calls(&self) -> Vec<HostCall> {
        self.with(|s| s.calls.clone())
    }
    /// How many times `reboot()` was called.
    pub fn reboots(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| **c == HostCall::Reboot)
            .count()
    }
}

impl Host for FakeHost {
    fn boot_id(&self) -> BoxFuture<'_, Result<String, HostError>> {
        let id = self.with(|s| s.boot_id.clone());
        Box::pin(async move { Ok(id) })
    }

    fn reboot_required(&self) -> BoxFuture<'_, Result<bool, HostError>> {
        let answer = self.with(|s| {
            s.calls.push(HostCall::RebootRequired);
            s.sentinel.clone()
        });
        Box::pin(async move {
            answer.map_err(|e| HostError::SentinelCommand {
                command: "fake".into(),
                outcome: e,
                tail: String::new(),
            })
        })
    }

    fn run_patch(
        &self,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandOutcome, HostError>> {
        let (outcome, delay) = self.with(|s| {
            s.calls.push(HostCall::RunPatch(command.clone(), timeout));
            (s.patch.clone(), s.patch_delay)
        });
        Box::pin(async move {
            tokio::time::sleep(delay.min(timeout)).await;
            if delay > timeout {
                return Ok(CommandOutcome {
                    exit_code: None,
                    timed_out: true,
                    output_tail: String::new(),
                    elapsed: timeout,
                });
            }
            outcome.map_err(|e| HostError::Spawn {
                command: command.join(" "),
                source: std::io::Error::other(e),
            })
        })
    }

    fn reboot(&self) -> BoxFuture<'_, Result<(), HostError>> {
        self.with(|s| s.calls.push(HostCall::Reboot));
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn direct(sentinel: Sentinel) -> LinuxHost {
        LinuxHost {
            enter_host: Vec::new(),
            // Never the signal method in tests: it would signal this machine's PID 1.
            ..LinuxHost::new(sentinel, RebootVia::Command(vec!["false".into()]))
        }
    }

    #[tokio::test]
    async fn sentinel_file_presence_means_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reboot-required");
        let host = direct(Sentinel::File(path.clone()));
        assert!(!host.reboot_required().await.unwrap());
        std::fs::write(&path, "").unwrap();
        assert!(host.reboot_required().await.unwrap());
    }

    #[tokio::test]
    async fn sentinel_command_exit_codes() {
        let host = direct(Sentinel::Command(argv(&["sh", "-c", "exit 0"])));
        assert!(host.reboot_required().await.unwrap());
        let host = direct(Sentinel::Command(argv(&["sh", "-c", "exit 1"])));
        assert!(!host.reboot_required().await.unwrap());
        let host = direct(Sentinel::Command(argv(&["sh", "-c", "echo oops; exit 2"])));
        let err = host.reboot_required().await.unwrap_err().to_string();
        assert!(
            err.contains("exited with 2") && err.contains("oops"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn missing_sentinel_command_is_an_error_not_required() {
        let host = direct(Sentinel::Command(argv(&["/nonexistent/needs-restarting"])));
        let err = host.reboot_required().await.unwrap_err();
        assert!(matches!(err, HostError::Spawn { .. }), "{err}");
        // Through nsenter-like wrappers a missing program shows as exit 127.
        let host = direct(Sentinel::Command(argv(&[
            "sh",
            "-c",
            "exec /nonexistent/needs-restarting",
        ])));
        let err = host.reboot_required().await.unwrap_err().to_string();
        assert!(err.contains("exited with 127"), "{err}");
    }

    #[tokio::test]
    async fn boot_id_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot_id");
        std::fs::write(&path, "abc-123\n").unwrap();
        let host = LinuxHost {
            boot_id_path: path,
            ..direct(Sentinel::File(dir.path().join("x")))
        };
        assert_eq!(host.boot_id().await.unwrap(), "abc-123");
    }

    #[tokio::test]
    async fn patch_command_output_and_exit_code() {
        let host = direct(Sentinel::File("/nonexistent".into()));
        let out = host
            .run_patch(
                argv(&["sh", "-c", "echo one; echo two >&2; exit 3"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(!out.success());
        assert!(out.output_tail.contains("one") && out.output_tail.contains("two"));
        assert_eq!(out.describe(Duration::from_secs(10)), "exit 3");
    }

    #[tokio::test]
    async fn patch_command_is_killed_on_timeout() {
        let host = direct(Sentinel::File("/nonexistent".into()));
        let started = Instant::now();
        let out = host
            .run_patch(
                argv(&["sh", "-c", "echo started; sleep 30; echo never"]),
                Duration::from_millis(300),
            )
            .await
            .unwrap();
        assert!(out.timed_out);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.output_tail, "started");
        assert!(
            out.describe(Duration::from_millis(300))
                .starts_with("timed out after 300ms")
        );
    }

    #[tokio::test]
    async fn long_output_is_bounded() {
        let host = direct(Sentinel::File("/nonexistent".into()));
        let out = host
            .run_patch(argv(&["sh", "-c", "seq 1 100000"]), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(out.success());
        assert!(out.output_tail.ends_with("100000"), "{}", out.output_tail);
        assert!(out.output_tail.lines().count() <= TAIL_LINES + 1);
    }

    #[test]
    fn reboot_signal_is_systemds_sigrtmin_plus_5() {
        assert_eq!(SYSTEMD_REBOOT_SIGNAL, 39);
    }
}
