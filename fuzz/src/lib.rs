//! Helpers shared by the fuzz targets: a scratch directory per process, and an allocator that
//! turns any single allocation above a limit into a crash (libFuzzer's `-malloc_limit_mb` only
//! works with a sanitizer's allocator hooks; this works without one, so the fast `-s none` build
//! still catches allocations sized by untrusted input).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default largest single allocation, in MiB (`FUZZ_MALLOC_LIMIT_MB` changes it). Every input
/// of these targets is at most a few hundred KiB; nothing legitimate comes close.
const DEFAULT_LIMIT_MB: usize = 256;

/// 0 until first read from the environment.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

fn limit() -> usize {
    let l = LIMIT.load(Ordering::Relaxed);
    if l != 0 {
        return l;
    }
    // Reading the environment allocates: mark the limit as "unlimited" while we do, so the
    // nested allocations pass, then store the real one.
    LIMIT.store(usize::MAX, Ordering::Relaxed);
    let mb = std::env::var("FUZZ_MALLOC_LIMIT_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_LIMIT_MB);
    let l = mb.saturating_mul(1 << 20);
    LIMIT.store(l, Ordering::Relaxed);
    l
}

/// Writes `n` in decimal into `buf`, returning the digits.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cold]
fn too_large(size: usize) -> ! {
    // The message without allocating (stderr is unbuffered; its lock does not allocate), then a
    // backtrace (its small allocations pass the limit) to show who asked.
    let mut buf = [0u8; 20];
    let mut err = std::io::stderr();
    let _ = err.write_all(b"\n==inferox-fuzz== allocation of ");
    let _ = err.write_all(decimal(size, &mut buf));
    let _ = err.write_all(
        b" bytes exceeds FUZZ_MALLOC_LIMIT_MB: an allocation sized by untrusted input\n",
    );
    let _ = writeln!(err, "{}", std::backtrace::Backtrace::force_capture());
    std::process::abort()
}

/// The system allocator, refusing (by aborting, which libFuzzer reports as a crash with the
/// input saved) any single allocation larger than the limit.
pub struct CappedAlloc;

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > limit() {
            too_large(layout.size());
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > limit() {
            too_large(layout.size());
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > limit() {
            too_large(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAlloc = CappedAlloc;

/// The repository root (the parent of this crate), for fixtures.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

/// A scratch directory for this process and target, created once: under
/// `INFEROX_FUZZ_SCRATCH` (scripts/fuzz.sh gives each run its own), else in /dev/shm when there
/// is one (no disk traffic), else in the system's temporary directory.
pub fn scratch(target: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = match std::env::var_os("INFEROX_FUZZ_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None if shm.is_dir() => shm.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let dir = base.join(format!("inferox-fuzz-{target}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory can be created");
        dir
    })
}

/// Replaces libFuzzer's panic hook (abort on every panic) with one that lets through the
/// panics inferox catches and turns into errors (`inferox::panic_is_guarded`: third-party code
/// such as `tokenizers` panics on some damaged files) and aborts on every other one, so that
/// libFuzzer records it as a crash. Called by [`fresh`]; targets that use no scratch directory
/// call it themselves.
pub fn guard_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !inferox::panic_is_guarded() {
                abort_hook(info);
                std::process::abort();
            }
        }));
    });
}

/// The scratch directory emptied of what the previous iteration left.
pub fn fresh(target: &str) -> &'static Path {
    guard_panics();
    let dir = scratch(target);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    let _ = std::fs::remove_dir_all(&path);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file can be written");
    path
}

/// Exercises what every error offers (Display, Debug, hint) so that formatting an error built
/// from hostile input is fuzzed too.
pub fn touch_error(e: &inferox::Error) {
    let _ = e.to_string();
    let _ = format!("{e:?}");
    let _ = e.hint();
}
