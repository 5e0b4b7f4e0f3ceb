//! The backend's error type: candle's errors and inferox's own side by side, so that `?` works
//! on both inside models built on candle, and one conversion into [`inferox_core::Error`] at the
//! boundary (a registry loader, a [`Model`](inferox_core::model::Model) or
//! [`Decoder`](inferox_core::model::Decoder) method) turns a candle error into
//! [`inferox_core::Error::Backend`] and hands inferox's errors through unchanged.

inferox_core::backend_error!(Candle(candle_core::Error), crate::NAME);

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core as candle;

    #[test]
    fn converts_at_the_boundary() {
        let candle = Error::from(candle::Error::Msg("boom".into()));
        assert_eq!(candle.to_string(), "candle backend: boom");
        let core = inferox_core::Error::from(candle);
        assert!(
            matches!(&core, inferox_core::Error::Backend { backend: "candle", message } if message == "boom"),
            "{core:?}"
        );
        assert_eq!(core.to_string(), "candle backend: boom");
    }
}
