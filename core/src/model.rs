//! The interfaces every architecture implements on every backend: [`Model`] for named-tensor
//! I/O, and [`Decoder`] for incremental (KV-cached) decoding by text-generation models.

use crate::tensor::{HostTensor, NamedTensors};
use crate::{Error, Result};

/// A loaded model: named host tensors in, named host tensors out.
///
/// Inputs have already been checked against the package's I/O schema when `forward` is called
/// through the facade's `inferox::LoadedModel`, and outputs are checked on the way out.
pub trait Model: Send {
    /// Runs the model.
    fn forward(&mut self, inputs: &NamedTensors) -> Result<NamedTensors>;

    /// The incremental-decoding interface, for text-generation models.
    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        None
    }
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

/// A causal language model with a KV cache.
pub trait Decoder {
    /// Vocabulary size (length of a logits row).
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt and generated tokens) the model can attend over.
    fn max_positions(&self) -> usize;
    /// Tokens held in the cache per sequence.
    fn cached(&self) -> usize;
    /// Empties the cache: the next step starts new sequences.
    fn reset(&mut self);
    /// Runs `step` after what the cache holds, and appends it to the cache. Returns float32
    /// logits, `[batch, vocab]` or, with `all_positions`, `[batch, seq, vocab]`.
    fn step(&mut self, step: &DecodeStep<'_>) -> Result<Vec<f32>>;
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

/// The named-tensor `forward` of a decoder: `input_ids` (and `attention_mask`) in, `logits`
/// `[batch, sequence, vocab]` out, computed from an empty cache.
pub fn decoder_forward(decoder: &mut dyn Decoder, inputs: &NamedTensors) -> Result<NamedTensors> {
    let input = |name: &str| -> Result<Option<(&[i64], &[usize])>> {
        match inputs.get(name) {
            None => Ok(None),
            Some(t) => Ok(Some((
                t.as_i64().ok_or_else(|| Error::Input {
                    name: name.into(),
                    message: format!("dtype is {}, expected int64", t.dtype()),
                })?,
                t.shape(),
            ))),
        }
    };
    let (ids, shape) = input("input_ids")?.ok_or_else(|| Error::Input {
        name: "input_ids".into(),
        message: "missing (it is required)".into(),
    })?;
    let &[batch, seq] = shape else {
        return Err(Error::Input {
            name: "input_ids".into(),
            message: format!("shape {shape:?} is not [batch, sequence]"),
        });
    };
    let vocab = decoder.vocab_size();
    let tokens = ids
        .iter()
        .map(|&id| {
            u32::try_from(id)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| Error::Input {
                    name: "input_ids".into(),
                    message: format!("holds {id}, outside 0..{vocab}"),
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    let mask: Vec<u8> = match input("attention_mask")? {
        Some((m, _)) => m
            .iter()
            .map(|&v| match v {
                0 => Ok(0),
                1 => Ok(1),
                other => Err(Error::Input {
                    name: "attention_mask".into(),
                    message: format!("holds {other}; only 0 and 1 are allowed"),
                }),
            })
            .collect::<Result<_>>()?,
        None => vec![1; tokens.len()],
    };
    if seq > decoder.max_positions() {
        return Err(Error::Input {
            name: "input_ids".into(),
            message: format!(
                "{seq} tokens, more than the model's {} positions",
                decoder.max_positions()
            ),
        });
    }
    let positions = positions_from_mask(&mask, batch, &[]);
    decoder.reset();
    let logits = decoder.step(&DecodeStep {
        tokens: &tokens,
        batch,
        positions: &positions,
        mask: &mask,
        all_positions: true,
    });
    decoder.reset();
    let logits = HostTensor::from_f32(vec![batch, seq, vocab], logits?)?;
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
