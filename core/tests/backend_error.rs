//! What `backend_error!` generates, tested once for every backend that uses it: runtime errors
//! become `Error::Backend` named after the backend, inferox's own errors pass through unchanged.

mod runtime {
    inferox_core::backend_error!(Runtime(std::fmt::Error), "test-runtime");
}

#[test]
fn runtime_errors_become_backend_errors() {
    let e = runtime::Error::from(std::fmt::Error);
    let text = e.to_string();
    assert_eq!(text, format!("test-runtime backend: {}", std::fmt::Error));
    let core = inferox_core::Error::from(e);
    assert!(
        matches!(
            &core,
            inferox_core::Error::Backend {
                backend: "test-runtime",
                ..
            }
        ),
        "{core:?}"
    );
    assert_eq!(core.to_string(), text);
}

#[test]
fn inferox_errors_pass_through_unchanged() {
    let missing = inferox_core::Error::MissingTensor {
        tensor: "w".into(),
        files: vec![],
    };
    let text = missing.to_string();
    let wrapped = runtime::Error::from(missing);
    assert_eq!(wrapped.to_string(), text);
    let passed = inferox_core::Error::from(wrapped);
    assert!(matches!(passed, inferox_core::Error::MissingTensor { .. }));
    assert_eq!(passed.to_string(), text);
}
