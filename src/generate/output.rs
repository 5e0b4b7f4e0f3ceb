//! What a generation gives back: its text and tokens, why it ended ([`FinishReason`]) and its
//! timings ([`GenerationStats`]).

use serde::Serialize;

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The model's maximum number of positions reached.
    Context,
    /// Cancelled by the caller.
    Cancelled,
}

/// Timings of a generation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GenerationStats {
    /// Prompt tokens (per sequence, the longest when batched).
    pub prompt_tokens: usize,
    /// Tokens generated (summed over the batch).
    pub generated_tokens: usize,
    /// Prefill time in seconds.
    pub prompt_seconds: f64,
    /// Time to the first generated token, in seconds.
    pub time_to_first_token: f64,
    /// Decoding time after the first token, in seconds.
    pub decode_seconds: f64,
}

impl GenerationStats {
    /// Prompt tokens processed per second.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }

    /// Tokens generated per second after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// A finished generation.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// The generated text (without the prompt, the stop string or the end token).
    pub text: String,
    /// The generated token ids (the end token included when it ended the generation).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Timings.
    pub stats: GenerationStats,
}
