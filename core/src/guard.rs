//! Third-party code that can panic on hostile input runs inside [`guarded`], which turns the
//! panic into an error. The `tokenizers` crate does panic on some damaged tokenizer.json files
//! (a malformed `decoder`, a template naming a special token that is not defined), and a
//! tokenizer.json is input like any other.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Guarded calls in progress, in any thread (a panic may surface in a worker thread of the
/// guarded call).
static GUARDED: AtomicUsize = AtomicUsize::new(0);

/// Runs `f`; a panic inside it becomes `on_panic(message)`.
pub fn guarded<T>(
    f: impl FnOnce() -> crate::Result<T>,
    on_panic: impl FnOnce(String) -> crate::Error,
) -> crate::Result<T> {
    GUARDED.fetch_add(1, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.fetch_sub(1, Ordering::SeqCst);
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(on_panic(message))
    })
}

/// Whether a guarded call is in progress: a panic hook can stay quiet then, because the panic
/// is about to become an error that is reported as such.
pub fn panic_is_guarded() -> bool {
    GUARDED.load(Ordering::SeqCst) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let err = guarded::<()>(
            || panic!("boom"),
            |m| crate::Error::InvalidArgument(format!("caught: {m}")),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "caught: boom");
        assert!(!panic_is_guarded());
        assert_eq!(guarded(|| Ok(3), |_| unreachable!()).unwrap(), 3);
    }
}
