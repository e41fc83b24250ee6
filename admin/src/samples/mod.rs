//! Malware samples at the admin (issue 15).
//!
//! [`classify`] says what a sample is from its bytes (file type from [`filetype`], YARA
//! matches). [`fetch`] is the opt-in fetcher of "download offered" URLs. The store, the uplink
//! transfer and the pages live beside it.

pub mod classify;
pub mod fetch;
pub mod filetype;
