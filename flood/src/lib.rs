//! `drosera-flood` as a library: the probe bytes every client in this workspace sends
//! ([`probe`]) and the raw SYN sender of the scan benchmark ([`syn`]). The load generator itself
//! is the binary (`src/main.rs`).

pub mod probe;
pub mod syn;
