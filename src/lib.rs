//! sofort: a Kubernetes operator that keeps a fleet of nodes patched.
//!
//! The crate is split by job: [`api`] holds the `PatchPolicy` types, [`validate`]
//! checks a policy and reports every problem, [`crd`] renders the
//! CustomResourceDefinition, [`duration`] parses the duration strings of the spec,
//! [`notify`] tells customers about rollouts (webhooks, advisory embargo).

pub mod api;
pub mod cli;
pub mod crd;
pub mod duration;
pub mod node_record;
pub mod notify;
pub mod validate;
