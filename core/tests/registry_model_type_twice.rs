//! A model type registered twice is an error, not a silent pick of one describe function.

use inferox_core::registry::{self, Description, ImportSource, ModelType};
use inferox_core::{Error, Family, Result};

fn describe(_: &ImportSource<'_>) -> Result<Description> {
    Err(Error::Unsupported("test double".into()))
}

inferox_core::register!(
    ModelType::new("twice", Family::EncoderOnly, describe),
    ModelType::new("twice", Family::DecoderOnly, describe),
);

#[test]
fn a_model_type_registered_twice_is_an_error() {
    match registry::check() {
        Err(Error::Registry(message)) => {
            assert!(
                message.contains("`twice` is registered more than once"),
                "{message}"
            )
        }
        other => panic!("expected Error::Registry, got {other:?}"),
    }
}
