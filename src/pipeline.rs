//! Sentence embeddings: tokenize, run, pool the token embeddings over the real (unpadded) tokens,
//! optionally L2-normalise — following the package's sentence-transformers settings. Works on
//! any backend, since it only uses the model's named outputs.

use crate::loader::LoadedModel;
use crate::manifest::{Pooling, SentenceEmbedding};
use crate::tensor::HostTensor;
use crate::{Error, Result};

/// Options for [`LoadedModel::embed_with`]; unset fields come from the package.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Pooling mode (default: the package's).
    pub pooling: Option<Pooling>,
    /// L2-normalise (default: the package's).
    pub normalize: Option<bool>,
    /// Texts per forward pass. Texts are sorted by length first so batches pad little.
    pub batch_size: usize,
    /// Cut texts longer than the model's maximum (the sentence-transformers behaviour); when
    /// false they are an error.
    pub truncate: bool,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            pooling: None,
            normalize: None,
            batch_size: 32,
            truncate: true,
        }
    }
}

/// The settings in effect: the package's, overridden by the options.
fn settings(model: &LoadedModel, options: &EmbedOptions) -> Result<(Pooling, bool, String)> {
    let package: Option<&SentenceEmbedding> = model.info().sentence_embedding.as_ref();
    let pooling = options
        .pooling
        .or(package.map(|s| s.pooling))
        .ok_or_else(|| {
            Error::Unsupported(
                "this package has no sentence-embedding settings (its source is not a \
             sentence-transformers model); choose a pooling mode explicitly (--pooling mean)"
                    .into(),
            )
        })?;
    let normalize = options
        .normalize
        .or(package.map(|s| s.normalize))
        .unwrap_or(false);
    let output = match package {
        Some(s) => s.token_embeddings.clone(),
        None => "last_hidden_state".to_string(),
    };
    if model.info().io.output(&output).is_none() {
        return Err(Error::Unsupported(format!(
            "this package has no `{output}` output to pool"
        )));
    }
    Ok((pooling, normalize, output))
}

/// Sentence embeddings of a batch of texts.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// One vector per text, in the order given.
    pub vectors: Vec<Vec<f32>>,
    /// Indices of the texts that were cut to the model's maximum length.
    pub truncated: Vec<usize>,
}

impl LoadedModel {
    /// Sentence embeddings with the package's pooling settings, one per text, in order.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_with(texts, &EmbedOptions::default())?.vectors)
    }

    /// Sentence embeddings with explicit options, and which texts were truncated.
    pub fn embed_with(&mut self, texts: &[&str], options: &EmbedOptions) -> Result<Embeddings> {
        embed(self, texts, options)
    }
}

/// Embeds `texts`, one vector per text, in the order given.
pub fn embed(
    model: &mut LoadedModel,
    texts: &[&str],
    options: &EmbedOptions,
) -> Result<Embeddings> {
    if texts.is_empty() {
        return Err(Error::InvalidArgument("no texts given".into()));
    }
    if options.batch_size == 0 {
        return Err(Error::InvalidArgument(
            "batch size must be at least 1".into(),
        ));
    }
    let (pooling, normalize, output) = settings(model, options)?;
    // Longest first, so that each batch holds texts of similar length.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let mut result = vec![Vec::new(); texts.len()];
    let mut truncated = Vec::new();
    for chunk in order.chunks(options.batch_size) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let encoded = model
            .encode(&batch, options.truncate)
            .map_err(|e| match e {
                // Report the caller's index, not the position in the length-sorted batch.
                Error::TextTooLong { index, length, max } => Error::TextTooLong {
                    index: chunk[index],
                    length,
                    max,
                },
                other => other,
            })?;
        let outputs = model.run(&encoded.inputs)?;
        let hidden = outputs.get(&output).ok_or_else(|| Error::Output {
            name: output.clone(),
            message: "missing from the model's outputs".into(),
        })?;
        let pooled = pool(hidden, &encoded.lengths, pooling, encoded.left_padded)?;
        truncated.extend(encoded.truncated.iter().map(|&j| chunk[j]));
        for (&i, mut v) in chunk.iter().zip(pooled) {
            if normalize {
                l2_normalize(&mut v);
            }
            result[i] = v;
        }
    }
    truncated.sort_unstable();
    Ok(Embeddings {
        vectors: result,
        truncated,
    })
}

/// Pools `[batch, sequence, hidden]` token embeddings into `[batch][hidden]`, over the first
/// `lengths[b]` tokens of each row (the last ones when `left_padded`).
pub fn pool(
    hidden: &HostTensor,
    lengths: &[usize],
    pooling: Pooling,
    left_padded: bool,
) -> Result<Vec<Vec<f32>>> {
    let &[batch, seq, dim] = hidden.shape() else {
        return Err(Error::Output {
            name: "token embeddings".into(),
            message: format!(
                "shape {:?} is not [batch, sequence, hidden]",
                hidden.shape()
            ),
        });
    };
    let values: Vec<f32> = match hidden.as_f32() {
        Some(v) => v.to_vec(),
        None => hidden
            .data()
            .to_f64_vec()
            .into_iter()
            .map(|x| x as f32)
            .collect(),
    };
    let mut out = Vec::with_capacity(batch);
    for b in 0..batch {
        let n = lengths.get(b).map_or(seq, |&l| l.min(seq));
        let tokens = if left_padded { seq - n..seq } else { 0..n };
        let row = |t: usize| &values[(b * seq + t) * dim..(b * seq + t + 1) * dim];
        let mut acc = vec![0f32; dim];
        match pooling {
            Pooling::Cls => acc.copy_from_slice(row(tokens.start)),
            Pooling::Max => {
                acc.fill(f32::NEG_INFINITY);
                for t in tokens {
                    for (a, &x) in acc.iter_mut().zip(row(t)) {
                        *a = a.max(x);
                    }
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                for t in tokens {
                    for (a, &x) in acc.iter_mut().zip(row(t)) {
                        *a += x;
                    }
                }
                let denom = if pooling == Pooling::Mean {
                    n.max(1) as f32
                } else {
                    (n.max(1) as f32).sqrt()
                };
                acc.iter_mut().for_each(|a| *a /= denom);
            }
        }
        out.push(acc);
    }
    Ok(out)
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden() -> HostTensor {
        // batch 2, seq 3, dim 2; row 1 has one padding token at the end.
        HostTensor::from_f32(
            vec![2, 3, 2],
            vec![1., 2., 3., 4., 5., 6., -1., 0., 1., 2., 100., 100.],
        )
        .unwrap()
    }

    #[test]
    fn mean_ignores_padding() {
        let p = pool(&hidden(), &[3, 2], Pooling::Mean, false).unwrap();
        assert_eq!(p, vec![vec![3., 4.], vec![0., 1.]]);
    }

    #[test]
    fn max_cls_and_sqrt_len() {
        let h = hidden();
        assert_eq!(
            pool(&h, &[3, 2], Pooling::Max, false).unwrap()[1],
            vec![1., 2.]
        );
        assert_eq!(
            pool(&h, &[3, 2], Pooling::Cls, false).unwrap()[1],
            vec![-1., 0.]
        );
        let s = pool(&h, &[3, 2], Pooling::MeanSqrtLen, false).unwrap();
        assert!((s[1][1] - 2.0 / 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn left_padding_pools_the_tail() {
        let p = pool(&hidden(), &[3, 1], Pooling::Mean, true).unwrap();
        assert_eq!(p[1], vec![100., 100.]);
    }

    #[test]
    fn normalize_and_cosine() {
        let mut v = vec![3., 4.];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&[1., 0.], &[1., 1.]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
