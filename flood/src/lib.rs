//! `drosera-flood` as a library: the probe bytes every client in this workspace sends
//! ([`probe`]). The load generator itself is the binary (`src/main.rs`).

pub mod probe;
