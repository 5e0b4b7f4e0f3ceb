//! Picking the next token from a row of logits: repetition penalty, then greedy or seeded
//! temperature sampling with top-k and top-p (nucleus) filtering.

use super::Sampling;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The sampler's random source for row `row` of a batch: seeded, so the same seed gives the
/// same sample, and different for each row.
pub(super) fn row_rng(seed: u64, row: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_add(row as u64))
}

/// Picks the next token from a row of logits.
pub fn sample(logits: &mut [f32], history: &[u32], s: &Sampling, rng: &mut ChaCha8Rng) -> u32 {
    if s.repetition_penalty != 1.0 {
        let p = s.repetition_penalty as f32;
        let mut seen = history.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for &t in &seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l < 0.0 { *l * p } else { *l / p };
            }
        }
    }
    if s.temperature == 0.0 {
        return argmax(logits);
    }
    let t = s.temperature as f32;
    let mut candidates: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l / t))
        .collect();
    candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    if let Some(k) = s.top_k {
        candidates.truncate(k.max(1));
    }
    let max = candidates[0].1;
    let mut probs: Vec<f32> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if let Some(top_p) = s.top_p {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= top_p as f32 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f32 = probs.iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (i, p) in probs.iter().enumerate() {
        if r < *p {
            return candidates[i].0;
        }
        r -= p;
    }
    candidates[probs.len() - 1].0
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::GenerateOptions;

    fn sampling() -> Sampling {
        Sampling::resolve(&GenerateOptions::default(), None).unwrap()
    }

    #[test]
    fn greedy_and_penalty() {
        let s = sampling();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(sample(&mut [0.1, 2.0, 1.0], &[], &s, &mut rng), 1);
        let s = Sampling {
            repetition_penalty: 4.0,
            ..sampling()
        };
        // Token 1 (2.0 -> 0.5) falls below token 2 (1.0).
        assert_eq!(sample(&mut [0.1, 2.0, 1.0], &[1], &s, &mut rng), 2);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let s = Sampling {
            temperature: 1.0,
            top_k: Some(2),
            ..sampling()
        };
        let logits = [0.0f32, 1.0, 1.0, -1.0, 0.5];
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample(&mut logits.clone(), &[], &s, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).iter().all(|&t| t == 1 || t == 2));
        assert!(draw(7).contains(&1) && draw(7).contains(&2));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let s = Sampling {
            temperature: 1.0,
            top_p: Some(0.5),
            ..sampling()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            assert_eq!(sample(&mut [5.0, 0.0, 0.0, 0.0], &[], &s, &mut rng), 0);
        }
    }
}
