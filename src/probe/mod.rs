//! Probes: what mamori measures about units and the host (memory-trend leak detector).

pub mod leak;
