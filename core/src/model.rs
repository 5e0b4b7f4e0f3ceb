//! The interfaces every architecture implements on every backend: [`Model`] for named-tensor
//! I/O, and [`Decoder`] for incremental (KV-cached) decoding by text-generation models, decoder-only
//! or encoder–decoder.
//!
//! A loaded model is shared: every method takes `&self`, and models are `Send + Sync`, so one
//! set of weights serves many threads at once. What a request changes — a decoder's KV cache —
//! lives in a [`DecoderState`] that the caller owns.

use crate::tensor::{HostTensor, NamedTensors};
use crate::{Error, Result};
use std::any::Any;

/// A loaded model: named host tensors in, named host tensors out.
///
/// Inputs have already been checked against the package's I/O schema when `forward` is called
/// through the facade's `inferox::LoadedModel`, and outputs are checked on the way out.
pub trait Model: Send + Sync {
    /// Runs the model. Calls from several threads may run at once.
    fn forward(&self, inputs: &NamedTensors) -> Result<NamedTensors>;

    /// The incremental-decoding interface, for text-generation models.
    fn decoder(&self) -> Option<&dyn Decoder> {
        None
    }
}

/// What a decoder keeps between steps for one batch of sequences (its KV cache): each
/// architecture's own type behind [`DecoderState`].
pub trait Cache: Any + Send {
    /// Tokens held per sequence.
    fn cached(&self) -> usize;
}

/// The per-request state of a [`Decoder`]: made by [`Decoder::new_state`], owned by the caller
/// and passed to every step, so that one model serves any number of generations at once.
pub struct DecoderState {
    /// The address of the decoder that made it: a state fed to another model is an error.
    owner: usize,
    cache: Box<dyn Cache>,
}

impl DecoderState {
    /// Wraps `cache`, made by `owner` (the decoder; only its address is kept).
    pub fn new<C: Cache, O: ?Sized>(owner: &O, cache: C) -> DecoderState {
        DecoderState {
            owner: owner_id(owner),
            cache: Box::new(cache),
        }
    }

    /// Tokens held per sequence.
    pub fn cached(&self) -> usize {
        self.cache.cached()
    }

    /// The cache, for `owner`: an error when another model made this state.
    pub fn cache_mut<C: Cache, O: ?Sized>(&mut self, owner: &O) -> Result<&mut C> {
        let cache: &mut dyn Any = &mut *self.cache;
        match cache.downcast_mut::<C>() {
            Some(c) if self.owner == owner_id(owner) => Ok(c),
            _ => Err(Error::InvalidArgument(
                "this decoder state was made by another model: make one with `new_state` of \
                 the model that steps it"
                    .into(),
            )),
        }
    }
}

fn owner_id<O: ?Sized>(owner: &O) -> usize {
    (owner as *const O).cast::<()>() as usize
}

/// One call of incremental decoding for a batch of sequences.
#[derive(Clone, Copy, Debug)]
pub struct DecodeStep<'a> {
    /// New tokens, `[batch, seq]` row-major.
    pub tokens: &'a [u32],
    /// Number of sequences.
    pub batch: usize,
    /// Position id of each new token, `[batch, seq]`.
    pub positions: &'a [u32],
    /// 1 for real tokens and 0 for padding, over the cached and the new tokens:
    /// `[batch, cached + seq]`.
    pub mask: &'a [u8],
    /// Logits for every new position (`[batch, seq, vocab]`) instead of the last (`[batch, vocab]`).
    pub all_positions: bool,
}

impl DecodeStep<'_> {
    /// New tokens per sequence.
    pub fn seq(&self) -> usize {
        self.tokens.len() / self.batch.max(1)
    }
}

/// A causal language model with a KV cache, or the decoder of an encoder–decoder model, which
/// first [`encode`](Decoder::encode)s a source and then decodes from
/// [`decoder_start`](Decoder::decoder_start) while attending to it.
///
/// Every method takes `&self`: the sequences' cache is the [`DecoderState`] passed in, so any
/// number of states (requests) may step through one decoder at once.
pub trait Decoder: Sync {
    /// Vocabulary size (length of a logits row).
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt and generated tokens) the model can attend over.
    fn max_positions(&self) -> usize;
    /// An empty cache: the first step on it starts new sequences.
    fn new_state(&self) -> DecoderState;
    /// An empty cache with room for `positions` positions per sequence (prompt and generated
    /// tokens) before it grows: a generation knows how long it may run, and a cache sized once
    /// never holds the copies that growing leaves behind. Decoders whose caches do not
    /// preallocate make [`new_state`](Decoder::new_state).
    fn new_state_with_room(&self, positions: usize) -> DecoderState {
        let _ = positions;
        self.new_state()
    }
    /// Runs `step` after what `state` holds, and appends it to `state`. Returns float32
    /// logits, `[batch, vocab]` or, with `all_positions`, `[batch, seq, vocab]`.
    fn step(&self, state: &mut DecoderState, step: &DecodeStep<'_>) -> Result<Vec<f32>>;

    /// The token every decoded sequence starts from, for an encoder–decoder model
    /// (`decoder_start_token_id`); `None` for a decoder-only model, which continues its prompt.
    fn decoder_start(&self) -> Option<u32> {
        None
    }

    /// Encoder–decoder models: runs the encoder over `tokens` (`[batch, seq]`, `mask` 1 for real
    /// tokens and 0 for padding) into `state`, emptying its decoder cache; the steps that follow
    /// on `state` attend to this source until the next `encode`.
    fn encode(
        &self,
        state: &mut DecoderState,
        tokens: &[u32],
        batch: usize,
        mask: &[u8],
    ) -> Result<()> {
        let _ = (state, tokens, batch, mask);
        Err(Error::Unsupported(
            "this model has no encoder: it continues its prompt".into(),
        ))
    }

    /// Whether the batch in a state can change between steps
    /// ([`append_rows`](Decoder::append_rows), [`retain_rows`](Decoder::retain_rows)): what
    /// continuous batching needs.
    fn resizable(&self) -> bool {
        false
    }

    /// Appends the sequences of `rows` (another state of this decoder, its prompts run on their
    /// own) after those of `state`, the two caches aligned at their last position: the shorter
    /// one is padded at the start, and the steps that follow mask the padding out. This is how
    /// a request joins a running batch without the batch computing its prompt.
    fn append_rows(&self, state: &mut DecoderState, rows: DecoderState) -> Result<()> {
        let _ = (state, rows);
        Err(Error::Unsupported(
            "this model's cache cannot take new rows".into(),
        ))
    }

    /// Keeps only the cached rows `rows` (ascending indices) of `state`, from cached position
    /// `from` on (the positions before it are masked in every row kept).
    fn retain_rows(&self, state: &mut DecoderState, rows: &[usize], from: usize) -> Result<()> {
        let _ = (state, rows, from);
        Err(Error::Unsupported(
            "this model's cache cannot drop rows".into(),
        ))
    }
}

/// Position ids as transformers derives them from an attention mask: the count of real tokens
/// before each one (padding gets 0), so left-padded rows start at 0 where their text starts.
pub fn positions_from_mask(mask: &[u8], batch: usize, offset: &[u32]) -> Vec<u32> {
    let seq = mask.len() / batch.max(1);
    let mut out = Vec::with_capacity(mask.len());
    for (b, row) in mask.chunks(seq.max(1)).enumerate().take(batch) {
        let mut next = offset.get(b).copied().unwrap_or(0);
        for &m in row {
            if m != 0 {
                out.push(next);
                next += 1;
            } else {
                out.push(0);
            }
        }
    }
    out
}

/// The additive attention bias of a 0/1 key mask (`[batch, keys]`, 1 = attend) for `queries`
/// new tokens: `[batch, queries, keys]` row-major, 0 where a query may attend and `min`
/// elsewhere. With `causal`, query `i` also sees only the keys up to `keys - queries + i` (the
/// cached tokens and the new ones before it).
pub fn mask_bias(mask: &[u8], batch: usize, queries: usize, causal: bool, min: f32) -> Vec<f32> {
    let window = if causal { Some(usize::MAX) } else { None };
    window_bias(mask, batch, queries, window, min)
}

/// [`mask_bias`], causal when `window` is given, and then also hiding the keys `window` or
/// more positions before the query (sliding-window attention; `usize::MAX` for none).
pub fn window_bias(
    mask: &[u8],
    batch: usize,
    queries: usize,
    window: Option<usize>,
    min: f32,
) -> Vec<f32> {
    let keys = mask.len() / batch.max(1);
    let cached = keys.saturating_sub(queries);
    let mut bias = Vec::with_capacity(batch * queries * keys);
    for row in mask.chunks(keys.max(1)).take(batch) {
        for i in 0..queries {
            let (first, last) = match window {
                Some(w) => ((cached + i + 1).saturating_sub(w), cached + i),
                None => (0, keys),
            };
            bias.extend(row.iter().enumerate().map(|(j, &m)| {
                if (first..=last).contains(&j) && m != 0 {
                    0.0
                } else {
                    min
                }
            }));
        }
    }
    bias
}

/// Token ids `name` (`[batch, sequence]`, int64, each below `vocab`), if given.
fn token_input(
    inputs: &NamedTensors,
    name: &str,
    vocab: usize,
) -> Result<Option<(Vec<u32>, usize, usize)>> {
    let Some(t) = inputs.get(name) else {
        return Ok(None);
    };
    let bad = |message: String| Error::Input {
        name: name.into(),
        message,
    };
    let ids = t
        .as_i64()
        .ok_or_else(|| bad(format!("dtype is {}, expected int64", t.dtype())))?;
    let &[batch, seq] = t.shape() else {
        return Err(bad(format!(
            "shape {:?} is not [batch, sequence]",
            t.shape()
        )));
    };
    let tokens = ids
        .iter()
        .map(|&id| {
            u32::try_from(id)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| bad(format!("holds {id}, outside 0..{vocab}")))
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(Some((tokens, batch, seq)))
}

/// The 0/1 mask `name` for `len` tokens; all ones when not given.
fn mask_input(inputs: &NamedTensors, name: &str, len: usize) -> Result<Vec<u8>> {
    let Some(t) = inputs.get(name) else {
        return Ok(vec![1; len]);
    };
    let bad = |message: String| Error::Input {
        name: name.into(),
        message,
    };
    let values = t
        .as_i64()
        .ok_or_else(|| bad(format!("dtype is {}, expected int64", t.dtype())))?;
    if values.len() != len {
        return Err(bad(format!(
            "holds {} values for {len} tokens",
            values.len()
        )));
    }
    values
        .iter()
        .map(|&v| match v {
            0 => Ok(0),
            1 => Ok(1),
            other => Err(bad(format!("holds {other}; only 0 and 1 are allowed"))),
        })
        .collect()
}

fn required<T>(value: Option<T>, name: &str) -> Result<T> {
    value.ok_or_else(|| Error::Input {
        name: name.into(),
        message: "missing (it is required)".into(),
    })
}

/// The named-tensor `forward` of a decoder: `input_ids` (and `attention_mask`) in, `logits`
/// `[batch, sequence, vocab]` out, computed from an empty cache.
///
/// For an encoder–decoder model ([`Decoder::decoder_start`] is set) the inputs are the source's
/// `input_ids` (and `attention_mask`) and the target's `decoder_input_ids` (and
/// `decoder_attention_mask`); the logits are the decoder's, teacher-forced.
pub fn decoder_forward(decoder: &dyn Decoder, inputs: &NamedTensors) -> Result<NamedTensors> {
    let vocab = decoder.vocab_size();
    let (ids, mask) = if decoder.decoder_start().is_some() {
        ("decoder_input_ids", "decoder_attention_mask")
    } else {
        ("input_ids", "attention_mask")
    };
    let (tokens, batch, seq) = required(token_input(inputs, ids, vocab)?, ids)?;
    let mask = mask_input(inputs, mask, tokens.len())?;
    if seq > decoder.max_positions() {
        return Err(Error::Input {
            name: ids.into(),
            message: format!(
                "{seq} tokens, more than the model's {} positions",
                decoder.max_positions()
            ),
        });
    }
    let mut state = decoder.new_state();
    if decoder.decoder_start().is_some() {
        let (source, source_batch, _) =
            required(token_input(inputs, "input_ids", vocab)?, "input_ids")?;
        if source_batch != batch {
            return Err(Error::Input {
                name: "decoder_input_ids".into(),
                message: format!("{batch} sequences for {source_batch} sources in `input_ids`"),
            });
        }
        let source_mask = mask_input(inputs, "attention_mask", source.len())?;
        decoder.encode(&mut state, &source, batch, &source_mask)?;
    }
    let positions = positions_from_mask(&mask, batch, &[]);
    let logits = decoder.step(
        &mut state,
        &DecodeStep {
            tokens: &tokens,
            batch,
            positions: &positions,
            mask: &mask,
            all_positions: true,
        },
    )?;
    let logits = HostTensor::from_f32(vec![batch, seq, vocab], logits)?;
    Ok([("logits", logits)].into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_mask() {
        // Row 0 left-padded by two, row 1 full.
        let mask = [0, 0, 1, 1, 1, 1, 1, 1];
        assert_eq!(positions_from_mask(&mask, 2, &[]), [0, 0, 0, 1, 0, 1, 2, 3]);
        assert_eq!(positions_from_mask(&[1, 1], 2, &[5, 7]), [5, 7]);
    }
}
