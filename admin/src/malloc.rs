//! glibc malloc settings for a process that decodes hostile batches on many threads.
//!
//! WHY: the admin decodes batches on tokio's blocking pool, at most `max_concurrent_decodes` at
//! once, each up to `max_batch_bytes`. With glibc's defaults each new thread may get its own
//! arena (up to 8 per core), and the mmap threshold rises to the size of the last freed large
//! block, so an 8 MiB decode buffer freed on one thread stays in that thread's arena and the
//! next one is carved from another: 16 connections of decompression bombs grew the admin by
//! 20-76 MiB depending on which threads ran the decodes (the uplink_faults test's bound is
//! 64 MiB; it failed in CI). A fixed mmap threshold sends every large buffer straight back to
//! the kernel when it is freed, and a small arena count bounds what many threads can hold.

// The one unsafe call in the admin: `mallopt`, a plain libc setter.
#![allow(unsafe_code)]

/// Buffers of this size and more are mmapped and unmapped on free (a fixed value also turns off
/// glibc's dynamic threshold, which is what let freed 8 MiB buffers stay in the heap).
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Most malloc arenas (glibc's default is 8 × cores).
pub const ARENA_MAX: i32 = 4;

/// Applies [`MMAP_THRESHOLD`] and [`ARENA_MAX`]. Call first thing in `main`, before threads
/// start. Returns false where the settings do not apply (not glibc) or glibc refused them.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::tune());
    }
}
