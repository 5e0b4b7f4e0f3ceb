//! [`TextStream`]: the text of a one-sequence generation as an iterator of pieces.

use super::{FinishReason, Generation, GenerationStats, Generator};
use crate::Result;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Streams the text of a single-sequence generation, piece by piece.
pub struct TextStream<'a> {
    generator: Generator<'a>,
}

impl<'a> TextStream<'a> {
    /// Wraps a one-row generator.
    pub fn new(generator: Generator<'a>) -> Self {
        TextStream { generator }
    }

    /// A flag that stops the stream at the next token when set (from any thread).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.generator.cancel_handle()
    }

    /// Timings so far.
    pub fn stats(&self) -> &GenerationStats {
        self.generator.stats()
    }

    /// The generation so far (call after the stream ends for the complete one).
    pub fn into_generation(self) -> Generation {
        self.generator.into_generations().remove(0)
    }
}

impl Iterator for TextStream<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        while !self.generator.finished() {
            match self.generator.step() {
                Ok(mut pieces) => {
                    let piece = pieces.remove(0);
                    if !piece.is_empty() {
                        return Some(Ok(piece));
                    }
                }
                Err(e) => {
                    self.generator.finish_all(FinishReason::Cancelled);
                    return Some(Err(e));
                }
            }
        }
        None
    }
}
