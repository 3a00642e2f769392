//! The controller's side of the health gates: the HTTP clients of Prometheus
//! and Alertmanager ([`client`]) and the observer that gathers, bounded in
//! rate, what the gates look at ([`observer`]). What the observations mean is decided in
//! [`crate::core::gates`].

pub mod client;

pub use client::{GateHttpError, Limits, MonitoringClient, NewSilence, SilenceInfo};
pub mod observer;
pub mod preflight;

pub use observer::GateObserver;
