//! sofort: a Kubernetes operator that keeps a fleet of nodes patched.
//!
//! The crate is split in layers, one folder each:
//!
//! - [`api`]: the `PatchPolicy` types (what the CRD is generated from).
//! - [`core`]: the pure decision core (windows, order, budget, selectors, node
//!   records, the rollout phases and the forecast simulation). No client, no
//!   I/O, the clock is an argument.
//! - [`controller`]: the kube shell around the core (watch, decide, write,
//!   drain, notifications glue, metrics).
//! - [`agent`]: the per-node process (a pure core, a shell and the host).
//! - [`notify`]: customer notifications (Events, webhooks, the advisory
//!   embargo).
//! - [`cmd`] and [`cli`]: the command line.
//! - `testkit` (cargo feature `sandbox`, on by default, off in the shipped
//!   image): the simulated host, the independent safety observer and the
//!   `sofort sandbox` demo, run against the in-process API emulator.
//!
//! `docs/architecture.md` has the module map and the data flow.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cmd;
pub mod controller;
pub mod core;
pub mod metrics;
pub mod notify;
#[cfg(feature = "sandbox")]
pub mod testkit;
