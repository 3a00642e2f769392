//! sofort: a Kubernetes operator that keeps a fleet of nodes patched.
//!
//! The crate is split by job: [`api`] holds the `PatchPolicy` types, [`validate`]
//! checks a policy and reports every problem, [`crd`] renders the
//! CustomResourceDefinition, [`duration`] parses the duration strings of the spec.
//!
//! The rollout core is pure (no client, no I/O, the clock is an argument):
//! [`window`] (maintenance windows and blackouts), [`order`] (which node first),
//! [`budget`] (how many at once), [`selector`] (label selectors), [`rollout`]
//! (the per-node state machine and `decide()`), and [`forecast`] (a
//! discrete-event simulation behind `sofort plan`). [`notify`] tells customers
//! about rollouts (webhooks, advisory embargo).
//!
//! [`controller`] and [`agent`] are the two processes of a cluster. The
//! `sandbox` module (cargo feature `sandbox`, on by default, off in the shipped
//! image) runs both against the in-process API emulator.

pub mod agent;
pub mod api;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod crd;
pub mod drain;
pub mod duration;
pub mod forecast;
pub mod metrics;
pub mod node_record;
pub mod notify;
pub mod order;
pub mod rollout;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod selector;
pub mod validate;
pub mod window;
