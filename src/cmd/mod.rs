//! The CLI commands that are not one of the two cluster processes:
//! [`validate`] (check policy files and report every problem) and [`crd`]
//! (render the CustomResourceDefinition), [`status`] (the live view),
//! [`timeline`] (`sofort plan -o svg|html`) and [`kubectl_plugin`] (`pause`,
//! `resume`, `why`). `sofort plan` lives beside the
//! simulation in [`crate::core::forecast`]; `sofort sandbox` in
//! `crate::testkit` (feature `sandbox`).

pub mod crd;
pub mod kubectl_plugin;
pub mod status;
pub mod timeline;
pub mod validate;
