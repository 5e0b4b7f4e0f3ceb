//! The backend's error type: libtorch's errors (through tch) and inferox's own side by side, so
//! that `?` works on both inside models built on libtorch, and one conversion into
//! [`inferox_core::Error`] at the boundary (a registry loader, a
//! [`Model`](inferox_core::model::Model) method) turns a libtorch error into
//! [`inferox_core::Error::Backend`] and hands inferox's errors through unchanged.

inferox_core::backend_error!(Torch(tch::TchError), crate::NAME);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_at_the_boundary() {
        let tch = tch::TchError::Torch("boom".into());
        let text = tch.to_string();
        let torch = Error::from(tch);
        assert_eq!(torch.to_string(), format!("torch backend: {text}"));
        let core = inferox_core::Error::from(torch);
        assert!(
            matches!(&core, inferox_core::Error::Backend { backend: "torch", message } if *message == text),
            "{core:?}"
        );
        assert_eq!(core.to_string(), format!("torch backend: {text}"));
    }
}
