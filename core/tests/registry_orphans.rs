//! An implementation needs a model-type entry (import could not describe its packages) and a
//! linked backend (nothing could run it).

use inferox_core::backend::{Backend, per_model_threads};
use inferox_core::registry::{self, Implementation};
use inferox_core::{Error, ExecutionFormat, LoadRequest, Model, Result};

fn load(_: &LoadRequest<'_>) -> Result<Box<dyn Model>> {
    Err(Error::Unsupported("test double".into()))
}

inferox_core::register!(
    Backend {
        name: "test-backend",
        feature: "test-backend",
        preference: 0,
        description: "a test double",
        threads: per_model_threads,
        runtime: None,
    },
    Implementation::new(
        "nobody-describes-me",
        "test-backend",
        &[ExecutionFormat::Safetensors],
        load
    ),
);

#[test]
fn an_implementation_without_a_model_type_is_an_error() {
    assert_eq!(inferox_core::backend::names(), ["test-backend"]);
    match registry::check() {
        Err(Error::Registry(message)) => assert!(
            message.contains("`nobody-describes-me` has no model-type entry"),
            "{message}"
        ),
        other => panic!("expected Error::Registry, got {other:?}"),
    }
    assert!(registry::find("nobody-describes-me", "test-backend").is_some());
    assert!(registry::model_type("nobody-describes-me").is_none());
}
