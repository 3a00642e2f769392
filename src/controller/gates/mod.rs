//! The controller's side of the health gates: the HTTP clients of Prometheus
//! and Alertmanager ([`client`]). What the observations mean is decided in
//! [`crate::core::gates`].

pub mod client;

pub use client::{GateHttpError, Limits, MonitoringClient, NewSilence, SilenceInfo};
