//! A simulated host per node, for the node agent: reboot-required sentinel,
//! patch command outcome, reboot trigger, boot ID.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// How the next `run_patch` calls behave.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchBehaviour {
    /// Exit 0 with this output after `took`.
    Succeed { output: String, took: Duration },
    /// Exit with this code and output after `took`.
    Fail {
        exit_code: i32,
        output: String,
        took: Duration,
    },
    /// Never finish: the call ends at its timeout.
    Hang,
}

/// What a patch command run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchOutcome {
    Success { output: String },
    Failed { exit_code: i32, output: String },
    TimedOut,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SimHostError {
    #[error("cannot read the reboot-required sentinel: {0}")]
    Sentinel(String),
    #[error("host {0} is down (rebooting)")]
    Down(String),
}

#[derive(Debug)]
pub(crate) struct HostState {
    pub boot_id: String,
    pub up: bool,
    pub reboot_required: bool,
    pub sentinel_error: Option<String>,
    pub patch: PatchBehaviour,
    pub patch_sets_reboot_required: bool,
    pub reboot_count: u64,
    pub patch_runs: Vec<Vec<String>>,
}

pub(crate) enum FleetCmd {
    Reboot(String),
}

/// Cloneable, thread-safe handle to one simulated host.
#[derive(Clone)]
pub struct SimHost {
    node: String,
    pub(crate) state: Arc<Mutex<HostState>>,
    cmd: mpsc::UnboundedSender<FleetCmd>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("node", &self.node).finish()
    }
}

impl SimHost {
    pub(crate) fn new(node: &str, boot_id: String, cmd: mpsc::UnboundedSender<FleetCmd>) -> Self {
        SimHost {
            node: node.to_string(),
            state: Arc::new(Mutex::new(HostState {
                boot_id,
                up: true,
                reboot_required: false,
                sentinel_error: None,
                patch: PatchBehaviour::Succeed {
                    output: "patched\n".into(),
                    took: Duration::ZERO,
                },
                patch_sets_reboot_required: true,
                reboot_count: 0,
                patch_runs: vec![],
            })),
            cmd,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Current boot ID (the same value the node reports in status.nodeInfo.bootID once Ready).
    pub fn boot_id(&self) -> String {
        self.lock().boot_id.clone()
    }

    /// False while the host is rebooting.
    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// Whether the reboot-required sentinel is present.
    pub fn reboot_required(&self) -> Result<bool, SimHostError> {
        let s = self.lock();
        if let Some(e) = &s.sentinel_error {
            return Err(SimHostError::Sentinel(e.clone()));
        }
        Ok(s.reboot_required)
    }

    pub fn set_reboot_required(&self, required: bool) {
        self.lock().reboot_required = required;
    }

    /// Make reading the sentinel fail (Some) or work again (None).
    pub fn set_sentinel_error(&self, error: Option<String>) {
        self.lock().sentinel_error = error;
    }

    pub fn set_patch_behaviour(&self, b: PatchBehaviour) {
        self.lock().patch = b;
    }

    /// Whether a successful patch run creates the reboot-required sentinel (default true).
    pub fn set_patch_sets_reboot_required(&self, v: bool) {
        self.lock().patch_sets_reboot_required = v;
    }

    /// Run the host patch command as configured.
    pub async fn run_patch(&self, command: &[String], timeout: Duration) -> PatchOutcome {
        let behaviour = {
            let mut s = self.lock();
            s.patch_runs.push(command.to_vec());
            s.patch.clone()
        };
        let took = match &behaviour {
            PatchBehaviour::Succeed { took, .. } | PatchBehaviour::Fail { took, .. } => *took,
            PatchBehaviour::Hang => Duration::MAX,
        };
        if took >= timeout {
            tokio::time::sleep(timeout).await;
            return PatchOutcome::TimedOut;
        }
        tokio::time::sleep(took).await;
        match behaviour {
            PatchBehaviour::Succeed { output, .. } => {
                let mut s = self.lock();
                if s.patch_sets_reboot_required {
                    s.reboot_required = true;
                }
                PatchOutcome::Success { output }
            }
            PatchBehaviour::Fail {
                exit_code, output, ..
            } => PatchOutcome::Failed { exit_code, output },
            PatchBehaviour::Hang => PatchOutcome::TimedOut,
        }
    }

    /// Commands passed to `run_patch`, oldest first.
    pub fn patch_runs(&self) -> Vec<Vec<String>> {
        self.lock().patch_runs.clone()
    }

    /// Reboot now: the node goes NotReady, its pods die, and it comes back
    /// Ready with a new boot ID after the scenario's reboot time (unless it
    /// was set to never return).
    pub fn reboot(&self) {
        {
            let mut s = self.lock();
            s.reboot_count += 1;
            s.up = false;
        }
        let _ = self.cmd.send(FleetCmd::Reboot(self.node.clone()));
    }

    pub fn reboot_count(&self) -> u64 {
        self.lock().reboot_count
    }
}
