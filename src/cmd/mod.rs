//! The CLI commands that are not one of the two cluster processes:
//! [`validate`] (check policy files and report every problem), [`crd`]
//! (render the CustomResourceDefinition) and [`plan`] (forecast a rollout;
//! the simulation is [`crate::core::forecast`]). `sofort sandbox` lives in
//! `crate::testkit` (feature `sandbox`).

pub mod crd;
pub mod plan;
pub mod validate;
