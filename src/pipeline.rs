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
    /// The most texts per forward pass. Texts are tokenized first, sorted by token count and
    /// grouped so that little padding is computed: a batch of mixed lengths runs as a few
    /// batches of similar lengths (see [`buckets`]).
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
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_with(texts, &EmbedOptions::default())?.vectors)
    }

    /// Sentence embeddings with explicit options, and which texts were truncated.
    pub fn embed_with(&self, texts: &[&str], options: &EmbedOptions) -> Result<Embeddings> {
        embed(self, texts, options)
    }
}

/// Embeds `texts`, one vector per text, in the order given.
pub fn embed(model: &LoadedModel, texts: &[&str], options: &EmbedOptions) -> Result<Embeddings> {
    if texts.is_empty() {
        return Err(Error::InvalidArgument("no texts given".into()));
    }
    if options.batch_size == 0 {
        return Err(Error::InvalidArgument(
            "batch size must be at least 1".into(),
        ));
    }
    let (pooling, normalize, output) = settings(model, options)?;
    let mut result = vec![Vec::new(); texts.len()];
    let mut truncated = Vec::new();
    // Texts are tokenized and grouped a window at a time, so a call with a whole corpus holds
    // the encodings of one window, not of every text.
    let window = options.batch_size.saturating_mul(WINDOW_BATCHES);
    for (w, chunk) in texts.chunks(window).enumerate() {
        let first = w * window;
        let tokenized = model
            .preprocessor()?
            .tokenize_batch(chunk, options.truncate)
            .map_err(|e| match e {
                // The caller's index, not the position in the window.
                Error::TextTooLong { index, length, max } => Error::TextTooLong {
                    index: first + index,
                    length,
                    max,
                },
                other => other,
            })?;
        let lengths: Vec<usize> = (0..chunk.len()).map(|i| tokenized.len_of(i)).collect();
        for rows in buckets(&lengths, options.batch_size) {
            let encoded = model.preprocessor()?.pack(&tokenized, &rows)?;
            let outputs = model.run(&encoded.inputs)?;
            let hidden = outputs.get(&output).ok_or_else(|| Error::Output {
                name: output.clone(),
                message: "missing from the model's outputs".into(),
            })?;
            let pooled = pool(hidden, &encoded.lengths, pooling, encoded.left_padded)?;
            truncated.extend(encoded.truncated.iter().map(|&j| first + rows[j]));
            for (&i, mut v) in rows.iter().zip(pooled) {
                if normalize {
                    l2_normalize(&mut v);
                }
                result[first + i] = v;
            }
        }
    }
    truncated.sort_unstable();
    Ok(Embeddings {
        vectors: result,
        truncated,
    })
}

/// Batches per window of texts tokenized and grouped together.
const WINDOW_BATCHES: usize = 64;

/// Work of one forward pass besides its tokens, in tokens: the per-pass cost of small
/// products and per-op overhead, which makes many tiny batches slower than a few padded ones.
const PASS_COST: usize = 64;
/// Sequence length at which attention costs as much per token as the projections (about six
/// times the hidden size for the usual 4x feed-forward; 2048 suits hidden sizes of 384-768).
const ATTENTION_SCALE: usize = 2048;

/// Groups texts of token counts `lengths` into batches of at most `max_batch` rows, each padded
/// to its longest, so that the padded work is least: texts are sorted by length and cut where
/// the estimated cost (padded tokens, attention growing with the length, and a fixed cost per
/// pass) is smallest. Returns the indices of each batch, longest texts first.
pub fn buckets(lengths: &[usize], max_batch: usize) -> Vec<Vec<usize>> {
    let max_batch = max_batch.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first; ties keep the callers' order, so equal lengths batch as given.
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let cost = |rows: usize, longest: usize| {
        let (rows, longest) = (rows as u64, longest.max(1) as u64);
        PASS_COST as u64
            + rows * longest * (ATTENTION_SCALE as u64 + longest) / ATTENTION_SCALE as u64
    };
    // best[k]: least cost of the first k sorted texts; cut[k]: where its last batch starts.
    let n = order.len();
    let mut best = vec![u64::MAX; n + 1];
    let mut cut = vec![0; n + 1];
    best[0] = 0;
    for end in 1..=n {
        for start in end.saturating_sub(max_batch)..end {
            // The batch order[start..end] is padded to its first (longest) text.
            let c = best[start].saturating_add(cost(end - start, lengths[order[start]]));
            if c < best[end] {
                best[end] = c;
                cut[end] = start;
            }
        }
    }
    let mut batches = Vec::new();
    let mut end = n;
    while end > 0 {
        let start = cut[end];
        batches.push(order[start..end].to_vec());
        end = start;
    }
    batches.reverse();
    batches
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

    #[test]
    fn buckets_split_a_long_tail_and_keep_similar_lengths_together() {
        // 28 short texts and 4 passages: the passages run apart from the short ones.
        let mut lengths: Vec<usize> = (0..28).map(|i| 8 + i).collect();
        lengths.extend([256, 230, 210, 200]);
        let b = buckets(&lengths, 32);
        assert!(
            b.iter()
                .all(|x| x.iter().all(|&i| i < 28) || x.iter().all(|&i| i >= 28)),
            "{b:?}"
        );
        assert!(b[0].contains(&28), "longest first: {b:?}");
        // Fewer padded tokens than one batch of 32 x 256, in few passes.
        let padded: usize = b.iter().map(|x| x.len() * lengths[x[0]]).sum();
        assert!(
            padded < 32 * 256 / 3 && b.len() <= 5,
            "{padded} tokens in {b:?}"
        );
        // Equal lengths take the fewest passes the cap allows.
        let b = buckets(&[12; 10], 4);
        assert_eq!(b.len(), 3, "{b:?}");
        // Each text once, no batch over the cap, none empty.
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 251 + 1).collect();
        let b = buckets(&lengths, 16);
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(b.iter().all(|x| !x.is_empty() && x.len() <= 16));
        assert!(buckets(&[], 8).is_empty());
    }

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
