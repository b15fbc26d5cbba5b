//! Jobs over time: schedules (cron, `every`, business-day calendars) and
//! flows (jobs linked by `after`, held downstream of a failure, rerun from it).
//!
//! - `when`: pure schedule arithmetic (next fire times)
//! - `flow`: the pure flow-run state machine (hold, retry, rerun, release)
//! - `missed`: what runs when fire times were missed (`catch_up`)
//! - `zone`: time zones from the machine's tz database

pub mod engine;
pub mod flow;
mod missed;
pub mod when;
pub mod zone;
