//! Text generation, shared by every decoder architecture on every backend: prefill and
//! KV-cached decoding through [`Decoder`], sampling (greedy, temperature, top-k, top-p,
//! repetition penalty, seeded), stop strings and end-of-sequence tokens, UTF-8-safe incremental
//! detokenisation, streaming with cancellation, and timing statistics.
//!
//! One concern per file:
//!
//! * `options` — [`GenerateOptions`] and resolving them into [`Sampling`];
//! * `sampler` — picking a token from logits ([`sample`]) and its seeded random source;
//! * `detokenize` — the tokenizer side ([`Detokenize`]) and incremental detokenisation;
//! * `stop` — holding back and cutting at stop strings;
//! * `output` — what a generation gives back ([`Generation`], [`FinishReason`],
//!   [`GenerationStats`]);
//! * `generator` — the batched decoding loop ([`Generator`]);
//! * `stream` — one sequence's text as an iterator ([`TextStream`]);
//!
//! and here, the generation methods of [`LoadedModel`].

mod detokenize;
mod generator;
mod options;
mod output;
mod sampler;
mod stop;
mod stream;
#[cfg(test)]
mod tests;

pub use detokenize::Detokenize;
pub use generator::Generator;
pub use options::{GenerateOptions, Sampling};
pub use output::{FinishReason, Generation, GenerationStats};
pub use sampler::sample;
pub use stream::TextStream;

use crate::loader::LoadedModel;
use crate::model::Decoder;
use crate::preprocess::TextPreprocessor;
use crate::{Error, Result};

impl LoadedModel {
    /// The decoder and the tokenizer, for generation.
    pub(crate) fn generation_parts(&self) -> Result<(&dyn Decoder, &TextPreprocessor)> {
        let text = self.preprocessor()?;
        let decoder = self.model.decoder().ok_or_else(|| {
            Error::Unsupported(format!(
                "this `{}` package is not a text-generation model",
                self.package.info().model_type
            ))
        })?;
        Ok((decoder, text))
    }

    pub(crate) fn sampling(&self, options: &GenerateOptions) -> Result<Sampling> {
        Sampling::resolve(options, self.package.info().generation.as_ref())
    }

    /// The incremental-decoding interface, for text-generation packages.
    pub fn decoder(&self) -> Option<&dyn Decoder> {
        self.model.decoder()
    }

    /// Generates from token-id prompts, left-padded into one batch.
    pub fn generate_ids(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let sampling = self.sampling(options)?;
        let (decoder, tokenizer) = self.generation_parts()?;
        Generator::new(decoder, tokenizer, prompts, sampling)?.run()
    }

    /// Completes each prompt (encoded with the tokenizer's special tokens), batched.
    pub fn generate_batch(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let ids = prompts
            .iter()
            .map(|p| self.tokenize(p, true))
            .collect::<Result<Vec<_>>>()?;
        self.generate_ids(&ids, options)
    }

    /// Completes `prompt`.
    pub fn generate(&self, prompt: &str, options: &GenerateOptions) -> Result<Generation> {
        let mut stream = self.stream(prompt, options)?;
        for piece in stream.by_ref() {
            piece?;
        }
        Ok(stream.into_generation())
    }

    /// Completes `prompt`, streaming the text piece by piece.
    pub fn stream(&self, prompt: &str, options: &GenerateOptions) -> Result<TextStream<'_>> {
        let ids = self.tokenize(prompt, true)?;
        self.stream_ids(ids, options)
    }

    /// Streams a completion of token ids.
    pub fn stream_ids(
        &self,
        prompt: Vec<u32>,
        options: &GenerateOptions,
    ) -> Result<TextStream<'_>> {
        let sampling = self.sampling(options)?;
        let (decoder, tokenizer) = self.generation_parts()?;
        Ok(TextStream::new(Generator::new(
            decoder,
            tokenizer,
            &[prompt],
            sampling,
        )?))
    }
}
