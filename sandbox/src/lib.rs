//! Kubernetes API emulator and simulated fleet.
