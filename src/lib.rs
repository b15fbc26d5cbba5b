//! mamori: keeps a small fleet of servers and their batch jobs out of trouble.
//!
//! Shape (see `docs/architecture.md`): sense → judge → act → tell, with every
//! happening an [`event::Event`] appended to the [`store`] and published on
//! the bus.

pub mod agent;
pub mod alert;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod event;
pub mod incident;
mod libm_shim;
pub mod probe;
pub mod schedule;
pub mod store;
pub mod supervise;
pub mod util;
pub mod web;
