//! The agent's [`Host`] over a simulated host of the sandbox fleet, so the real
//! agent code runs against simulated nodes.

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use sofort_sandbox::{PatchOutcome, SimHost};

use crate::agent::host::{CommandOutcome, Host, HostError};

/// A sandbox host seen through the agent's [`Host`] trait.
#[derive(Clone)]
pub struct SandboxHost {
    sim: SimHost,
}

impl SandboxHost {
    /// Wraps a simulated host.
    pub fn new(sim: SimHost) -> Self {
        SandboxHost { sim }
    }
}

impl Host for SandboxHost {
    fn boot_id(&self) -> BoxFuture<'_, Result<String, HostError>> {
        let id = self.sim.boot_id();
        async move { Ok(id) }.boxed()
    }

    fn reboot_required(&self) -> BoxFuture<'_, Result<bool, HostError>> {
        let r = self.sim.reboot_required();
        async move {
            r.map_err(|e| HostError::SentinelCommand {
                command: "simulated sentinel".into(),
                outcome: e.to_string(),
                tail: String::new(),
            })
        }
        .boxed()
    }

    fn run_patch(
        &self,
        command: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandOutcome, HostError>> {
        async move {
            let started = Instant::now();
            let outcome = self.sim.run_patch(&command, timeout).await;
            let elapsed = started.elapsed();
            Ok(match outcome {
                PatchOutcome::Success { output } => CommandOutcome {
                    exit_code: Some(0),
                    timed_out: false,
                    output_tail: output,
                    elapsed,
                },
                PatchOutcome::Failed { exit_code, output } => CommandOutcome {
                    exit_code: Some(exit_code),
                    timed_out: false,
                    output_tail: output,
                    elapsed,
                },
                PatchOutcome::TimedOut => CommandOutcome {
                    exit_code: None,
                    timed_out: true,
                    output_tail: String::new(),
                    elapsed,
                },
            })
        }
        .boxed()
    }

    fn reboot(&self) -> BoxFuture<'_, Result<(), HostError>> {
        self.sim.reboot();
        async { Ok(()) }.boxed()
    }
}
