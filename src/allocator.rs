//! The allocator of the `inferox` binary, shared by path with the benchmarks so that their
//! figures are what the binary's users see.
//!
//! mimalloc keeps freed memory for reuse: tensor buffers are allocated and freed at every layer,
//! and the system allocator returns large blocks to the kernel each time, so every op
//! page-faults its output back in (measured: 30% more throughput on the BERT benchmark).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same in its versions 2 and 3).
const PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keeps freed memory ten seconds before mimalloc hands it back to the kernel (jemalloc's
/// default decay), not mimalloc's one second, unless `MIMALLOC_PURGE_DELAY` says otherwise.
///
/// An encoder allocates and frees the same tens of megabytes at every layer: with the one
/// second delay (ten for its arenas) much of it was purged between uses all the same, and ops
/// faulted their outputs back in (79 000 page faults and 5% of the time for three all-MiniLM
/// 32 × 128 batches; 47 000, the first batch's, with ten seconds; 58 000 with three). A run's
/// peak RSS does not change: the memory kept is what is reused. `inferox serve` does not call
/// this: under many clients on many threads the kept memory added up (RSS 336 -> 365 MiB over
/// a fourth round of tests/serve.rs's load, against a plateau before).
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's option setter, linked with the allocator above; any value is valid.
        unsafe { mi_option_set(PURGE_DELAY, 10_000) }
    }
}

// The benchmarks include this file too, built as tests by `cargo clippy --all-targets` but
// without a test harness: there the test is dead code.
#[cfg(test)]
#[allow(dead_code)]
mod tests {
    unsafe extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    /// The purge delay in force, in milliseconds.
    fn purge_delay_ms() -> i64 {
        // SAFETY: mimalloc's option getter, linked with the allocator.
        unsafe { mi_option_get(super::PURGE_DELAY) as i64 }
    }

    #[test]
    fn the_option_is_mimallocs_purge_delay() {
        // mimalloc 3's default purge delay is 1000 ms: a different value means the index now
        // names another option (or a new default to read the docs above against).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
            super::keep_freed_memory();
            assert_eq!(purge_delay_ms(), 10_000);
        }
    }
}
