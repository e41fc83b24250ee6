//! The sensor's heap under a flood: one glibc malloc arena.
//!
//! WHY: glibc gives a thread that finds an arena locked an arena of its own (up to eight per
//! core), and an arena keeps what was freed in it for later allocations. The sensor's
//! allocating threads are the runtime's workers, the store writer and tokio's blocking threads;
//! with several arenas, a flood's per-connection buffers and tasks are spread over heaps that
//! each stay at their own high-water mark. Measured on the 2,000-concurrent flood of
//! `scripts/bench-idle.sh` (FLOOD=1; `docs/benchmarks.md`, "Memory under a flood"): peak RSS
//! 28.8-34.0 MiB with two arenas, 25.8-27.9 MiB with one, and no more CPU per connection in
//! `scripts/bench-sensor.sh` (glibc's per-thread cache still serves most small allocations
//! without taking the arena's lock).
//!
//! Called first thing in `main`, before any other thread exists. `mallopt` only sets a number
//! in the allocator; it takes and returns plain integers, which is why this one call is the
//! second and last `unsafe` of the sensor (the other is `privileges`).
#![allow(unsafe_code)]

/// Most malloc arenas the process uses (see the module docs).
pub const MAX_ARENAS: i32 = 1;

/// Limits glibc malloc to [`MAX_ARENAS`] arenas. Returns false where it could not (not glibc, or
/// glibc refused); the sensor runs either way.
pub fn limit_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt reads two integers and changes an allocator setting; it touches no
        // memory of ours, and glibc documents it as safe to call at any time.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// glibc accepts the setting (a wrong parameter number makes mallopt return 0).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_arena_limit() {
        assert!(super::limit_arenas());
    }
}
