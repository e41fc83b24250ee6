//! Malware samples at the admin (issue 15).
//!
//! [`classify`] says what a sample is from its bytes (file type, YARA matches). The store, the
//! uplink transfer and the pages live beside it.

pub mod classify;
