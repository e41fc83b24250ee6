//! Helpers shared by the end-to-end tests and the reliability suite (`drosera-torture`):
//! the processes under test ([`procs`]), one admin + one sensor set up the way an operator would
//! ([`stack`]), the connection and datagram flood ([`flood`]), the accounting that proves nothing
//! was lost ([`account`], with the kernel's UDP drop counters from [`kernel`]) and a simulated
//! sensor fleet ([`fleet`]).

pub mod account;
pub mod fleet;
pub mod flood;
pub mod kernel;
pub mod procs;
pub mod stack;
