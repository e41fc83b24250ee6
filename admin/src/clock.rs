//! Wall-clock time in milliseconds since the epoch, the unit of every stored time: the one
//! `now_ms` of the workspace, from the uplink contract (the sensor stamps events with it).

pub use drosera_uplink::now_ms;
