//! The CLI commands that are not one of the two cluster processes:
//! [`validate`] (check policy files and report every problem), [`crd`]
//! (render the CustomResourceDefinition), [`plan`] (forecast a rollout; the
//! simulation is [`crate::core::forecast`]) with [`timeline`] (`-o svg|html`),
//! [`status`] (the live view) and [`kubectl_plugin`] (`pause`, `resume`,
//! `why`). `sofort sandbox` lives in `crate::testkit` (feature `sandbox`).

pub mod crd;
pub mod kubectl_plugin;
pub mod plan;
pub mod status;
pub mod timeline;
pub mod validate;
