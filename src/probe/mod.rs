//! Sensing: checks (http, tcp, exec, disk, log, heartbeat) and resource
//! sampling of units and the host.
//!
//! - `health`: the pure rise/fall state of a check
//! - `probes`: one probe of each kind, each failure with its reason
//! - `checks`: one task per check; flips become events; `on_unhealthy`
//! - `logtail`: following a unit's output or a file
//! - `sampler`: per-unit and host samples, stored with bounded retention
//! - `leak`: the memory-trend leak detector (pure: samples in, verdicts out)

pub mod checks;
pub mod health;
pub mod leak;
mod logtail;
pub mod probes;
pub mod sampler;
