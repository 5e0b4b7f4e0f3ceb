//! Input checks shared by the backends: the same errors whichever backend runs the model.

use inferox_core::tensor::{DType, HostTensor, NamedTensors};
use inferox_core::{Error, Result};

/// A checked batch of inputs, shared by the backends: ids in range, the mask only 0 and 1.
pub(crate) struct Batch<'a> {
    pub batch: usize,
    pub seq: usize,
    pub ids: &'a [i64],
    pub type_ids: Option<&'a [i64]>,
    /// The attention mask, `None` when it is absent or all ones (nothing masked).
    pub mask: Option<&'a [i64]>,
}

impl<'a> Batch<'a> {
    /// Reads and checks `input_ids`, `token_type_ids` and `attention_mask`.
    pub fn read(inputs: &'a NamedTensors, vocab: usize, type_vocab: usize) -> Result<Batch<'a>> {
        let ids = inputs.get("input_ids").ok_or_else(|| Error::Input {
            name: "input_ids".into(),
            message: "missing (it is required)".into(),
        })?;
        let &[batch, seq] = ids.shape() else {
            return Err(Error::Input {
                name: "input_ids".into(),
                message: format!("shape {:?} is not [batch, sequence]", ids.shape()),
            });
        };
        let ids = int64_within("input_ids", ids, 0..vocab as i64)?;
        let type_ids = inputs
            .get("token_type_ids")
            .map(|t| int64_within("token_type_ids", t, 0..type_vocab as i64))
            .transpose()?;
        let mask = inputs
            .get("attention_mask")
            .map(|t| int64_within("attention_mask", t, 0..2))
            .transpose()?
            .filter(|m| m.contains(&0));
        Ok(Batch {
            batch,
            seq,
            ids,
            type_ids,
            mask,
        })
    }

    /// The additive attention mask, `[batch * seq]` row-major: 0 to attend, and for padding the
    /// compute dtype's most negative finite value (as transformers adds, so that a fully
    /// masked row stays finite). `None` when nothing is masked.
    pub fn additive_mask(&self, compute: DType) -> Option<Vec<f32>> {
        let min = match compute {
            DType::Float16 => -65504.0,
            DType::BFloat16 => -3.38e38,
            _ => f32::MIN,
        };
        let mask = self.mask?;
        Some(
            mask.iter()
                .map(|&m| if m == 1 { 0.0 } else { min })
                .collect(),
        )
    }

    /// RoBERTa positions: real tokens count up from `pad_id + 1`, padding sits at `pad_id`.
    pub fn roberta_positions(&self, pad_id: i64) -> Vec<i64> {
        let mut pos = Vec::with_capacity(self.ids.len());
        for row in self.ids.chunks(self.seq) {
            let mut count = 0;
            for &id in row {
                if id == pad_id {
                    pos.push(pad_id);
                } else {
                    count += 1;
                    pos.push(pad_id + count);
                }
            }
        }
        pos
    }
}

/// The int64 values of input `name`, each checked to lie in `range`.
fn int64_within<'a>(
    name: &str,
    t: &'a HostTensor,
    range: std::ops::Range<i64>,
) -> Result<&'a [i64]> {
    let values = t.as_i64().ok_or_else(|| Error::Input {
        name: name.into(),
        message: format!("dtype is {}, expected int64", t.dtype()),
    })?;
    if let Some(bad) = values.iter().find(|v| !range.contains(v)) {
        return Err(Error::Input {
            name: name.into(),
            message: format!("holds {bad}, outside {}..{}", range.start, range.end),
        });
    }
    Ok(values)
}
