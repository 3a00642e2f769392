//! The pure decision core: no Kubernetes client, no I/O, the clock is an
//! argument. Everything here is tested without a cluster.
//!
//! - [`spec`]: the spec parsed once: typed values and every problem with its path.
//! - [`duration`]: the duration strings of the spec.
//! - [`window`]: maintenance windows and blackouts.
//! - [`order`]: which node first (one order key for the core, the forecast and
//!   the property tests).
//! - [`budget`]: how many nodes may be unavailable at once.
//! - [`selector`]: label selectors over nodes.
//! - [`node_record`]: the per-node record kept in a Node annotation.
//! - [`rollout`]: the per-node state machine and `decide()`, as named phases.
//! - [`round`]: rounds of a standing policy: the effective revision and
//!   members decide works on.
//! - [`forecast`]: the discrete-event simulation behind `sofort plan`.
//! - [`gates`]: health gates over what the controller observes (alerts,
//!   queries, silences, pods, workloads).
//! - [`clock`]: the controller's clock (system time with an optional offset).

pub mod budget;
pub mod clock;
pub mod duration;
pub mod forecast;
pub mod gates;
pub mod node_record;
pub mod order;
pub mod rollout;
pub mod round;
pub mod selector;
pub mod spec;
pub mod window;
