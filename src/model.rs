//! The interface every architecture implements on every backend.

use crate::Result;
use crate::tensor::NamedTensors;

/// A loaded model: named host tensors in, named host tensors out.
///
/// Inputs have already been checked against the package's I/O schema when `forward` is called
/// through [`LoadedModel`](crate::LoadedModel), and outputs are checked on the way out.
pub trait Model: Send {
    /// Runs the model.
    fn forward(&mut self, inputs: &NamedTensors) -> Result<NamedTensors>;
}
