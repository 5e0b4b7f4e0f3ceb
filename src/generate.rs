//! Text generation, shared by every decoder architecture on every backend: prefill and
//! KV-cached decoding through [`Decoder`], sampling (greedy, temperature, top-k, top-p,
//! repetition penalty, seeded), stop strings and end-of-sequence tokens, UTF-8-safe incremental
//! detokenisation, streaming with cancellation, and timing statistics.

use crate::manifest::GenerationInfo;
use crate::model::{DecodeStep, Decoder};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the caller asks for; unset fields come from the package's generation_config.json.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Most tokens to generate (default: the package's, else 256).
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (default: greedy unless the package says to sample).
    pub temperature: Option<f64>,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    pub top_p: Option<f64>,
    /// Penalise tokens already in the text (1.0 is none), as transformers does.
    pub repetition_penalty: Option<f64>,
    /// Seed of the sampler (default 0): the same seed gives the same sample.
    pub seed: Option<u64>,
    /// Texts that end the generation; they are not part of the output.
    pub stop: Vec<String>,
    /// End-of-sequence tokens (default: the package's).
    pub eos_token_ids: Option<Vec<u32>>,
}

/// Sampling settings after defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub repetition_penalty: f64,
    pub seed: u64,
    pub stop: Vec<String>,
    pub eos_token_ids: Vec<u32>,
}

impl Sampling {
    /// Applies the package's defaults under the caller's options, and checks the values.
    pub fn resolve(
        options: &GenerateOptions,
        package: Option<&GenerationInfo>,
    ) -> Result<Sampling> {
        let defaults = package.map(|g| g.defaults.clone()).unwrap_or_default();
        let sample_by_default = defaults.do_sample == Some(true);
        let temperature = options.temperature.unwrap_or(if sample_by_default {
            defaults.temperature.unwrap_or(1.0)
        } else {
            0.0
        });
        let pick = |user: Option<f64>, dflt: Option<f64>| {
            user.or(if sample_by_default { dflt } else { None })
        };
        let s = Sampling {
            max_new_tokens: options
                .max_new_tokens
                .or(defaults.max_new_tokens)
                .unwrap_or(256),
            temperature,
            top_k: options
                .top_k
                .or(if sample_by_default {
                    defaults.top_k
                } else {
                    None
                })
                .filter(|&k| k > 0),
            top_p: pick(options.top_p, defaults.top_p),
            repetition_penalty: options
                .repetition_penalty
                .or(defaults.repetition_penalty)
                .unwrap_or(1.0),
            seed: options.seed.unwrap_or(0),
            stop: options
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            eos_token_ids: options
                .eos_token_ids
                .clone()
                .or_else(|| package.map(|g| g.eos_token_ids.clone()))
                .unwrap_or_default(),
        };
        if s.temperature.is_nan() || s.temperature < 0.0 || s.temperature.is_infinite() {
            return Err(Error::InvalidArgument(format!(
                "temperature must be 0 (greedy) or positive, not {}",
                s.temperature
            )));
        }
        if let Some(p) = s.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::InvalidArgument(format!(
                "top-p must be in (0, 1], not {p}"
            )));
        }
        // 1 keeps every token: the same as no nucleus filter.
        let s = Sampling {
            top_p: s.top_p.filter(|&p| p < 1.0),
            ..s
        };
        if s.repetition_penalty.is_nan()
            || s.repetition_penalty <= 0.0
            || s.repetition_penalty.is_infinite()
        {
            return Err(Error::InvalidArgument(format!(
                "repetition penalty must be positive, not {}",
                s.repetition_penalty
            )));
        }
        Ok(s)
    }
}

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

/// Decodes token ids to text; the tokenizer side of generation.
pub trait Detokenize {
    /// Text of `ids`, special tokens skipped.
    fn decode(&self, ids: &[u32]) -> Result<String>;
}

/// Emits text as tokens arrive, never splitting a UTF-8 character or a merge that later tokens
/// complete (the prefix/read offsets scheme of text-generation-inference).
#[derive(Debug, Default)]
struct IncrementalText {
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalText {
    fn new(prompt_len: usize) -> Self {
        // Start a few tokens back so that the first piece has its leading space.
        IncrementalText {
            prefix_offset: prompt_len.saturating_sub(5),
            read_offset: prompt_len,
        }
    }

    fn next(&mut self, tok: &dyn Detokenize, ids: &[u32]) -> Result<String> {
        let prefix = tok.decode(&ids[self.prefix_offset..self.read_offset])?;
        let full = tok.decode(&ids[self.prefix_offset..])?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let piece = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = ids.len();
            Ok(piece)
        } else {
            Ok(String::new())
        }
    }
}

/// Holds back text that could be the start of a stop string.
#[derive(Debug, Default)]
struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// Adds `piece`; returns the text safe to emit and whether a stop string was found.
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.held.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// Whatever is held when the generation ends for another reason.
    fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
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

/// One sequence being generated.
struct Row {
    ids: Vec<u32>,
    prompt_len: usize,
    text: IncrementalText,
    stop: StopMatcher,
    output: String,
    rng: ChaCha8Rng,
    finish: Option<FinishReason>,
}

/// A batch of sequences advancing together (left-padded; finished rows keep feeding their last
/// token, masked out).
pub struct Generator<'a> {
    decoder: &'a mut dyn Decoder,
    tokenizer: &'a dyn Detokenize,
    sampling: Sampling,
    rows: Vec<Row>,
    mask: Vec<Vec<u8>>,
    next: Vec<u32>,
    started: Instant,
    stats: GenerationStats,
    first_token_at: Option<Instant>,
    cancel: Arc<AtomicBool>,
}

impl<'a> Generator<'a> {
    /// Prepares generation for `prompts` (token ids; at least one token each).
    pub fn new(
        decoder: &'a mut dyn Decoder,
        tokenizer: &'a dyn Detokenize,
        prompts: &[Vec<u32>],
        sampling: Sampling,
    ) -> Result<Generator<'a>> {
        if prompts.is_empty() {
            return Err(Error::InvalidArgument("no prompts given".into()));
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!("prompt {i} has no tokens")));
        }
        let vocab = decoder.vocab_size();
        if let Some(bad) = prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        if longest >= decoder.max_positions() {
            return Err(Error::InvalidArgument(format!(
                "the prompt has {longest} tokens; the model takes at most {} positions",
                decoder.max_positions()
            )));
        }
        let mut rows = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Row {
                ids: p.clone(),
                prompt_len: p.len(),
                text: IncrementalText::new(p.len()),
                stop: StopMatcher {
                    stops: sampling.stop.clone(),
                    held: String::new(),
                },
                output: String::new(),
                rng: ChaCha8Rng::seed_from_u64(sampling.seed.wrapping_add(i as u64)),
                finish: None,
            })
            .collect::<Vec<Row>>();
        if sampling.max_new_tokens == 0 {
            // Nothing to generate: every row is done before the model runs.
            for row in &mut rows {
                row.finish = Some(FinishReason::Length);
            }
        }
        Ok(Generator {
            decoder,
            tokenizer,
            sampling,
            rows,
            mask: Vec::new(),
            next: Vec::new(),
            started: Instant::now(),
            stats: GenerationStats {
                prompt_tokens: longest,
                ..Default::default()
            },
            first_token_at: None,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that stops the generation at the next token when set (from any thread).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Whether every sequence has finished.
    pub fn finished(&self) -> bool {
        self.rows.iter().all(|r| r.finish.is_some())
    }

    /// Runs the prompt (first call) or one decoding step; returns the new text of each row.
    pub fn step(&mut self) -> Result<Vec<String>> {
        let batch = self.rows.len();
        if self.finished() {
            return Ok(vec![String::new(); batch]);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Ok(self.finish_all(FinishReason::Cancelled));
        }
        let logits = if self.mask.is_empty() {
            self.prefill()?
        } else {
            self.decode()?
        };
        let vocab = self.decoder.vocab_size();
        let mut pieces = Vec::with_capacity(batch);
        self.next.clear();
        for (row, logits) in self.rows.iter_mut().zip(logits.chunks(vocab)) {
            if row.finish.is_some() {
                self.next.push(*row.ids.last().expect("non-empty"));
                pieces.push(String::new());
                continue;
            }
            let mut logits = logits.to_vec();
            let token = sample(&mut logits, &row.ids, &self.sampling, &mut row.rng);
            row.ids.push(token);
            self.next.push(token);
            let generated = row.ids.len() - row.prompt_len;
            let mut piece = String::new();
            if self.sampling.eos_token_ids.contains(&token) {
                row.finish = Some(FinishReason::Eos);
            } else {
                let text = row.text.next(self.tokenizer, &row.ids)?;
                let (out, stopped) = row.stop.push(&text);
                piece = out;
                if stopped {
                    row.finish = Some(FinishReason::Stop);
                } else if generated >= self.sampling.max_new_tokens {
                    row.finish = Some(FinishReason::Length);
                } else if row.ids.len() >= self.decoder.max_positions() {
                    row.finish = Some(FinishReason::Context);
                }
            }
            if row.finish.is_some() {
                piece.push_str(&row.stop.flush());
            }
            row.output.push_str(&piece);
            self.stats.generated_tokens += 1;
            pieces.push(piece);
        }
        let now = Instant::now();
        if self.first_token_at.is_none() {
            self.first_token_at = Some(now);
            self.stats.time_to_first_token = (now - self.started).as_secs_f64();
        } else if let Some(first) = self.first_token_at {
            self.stats.decode_seconds = (now - first).as_secs_f64();
        }
        Ok(pieces)
    }

    fn prefill(&mut self) -> Result<Vec<f32>> {
        let longest = self.stats.prompt_tokens;
        let batch = self.rows.len();
        let mut tokens = Vec::with_capacity(batch * longest);
        self.mask = Vec::with_capacity(batch);
        for row in &self.rows {
            let pad = longest - row.prompt_len;
            tokens.extend(std::iter::repeat_n(row.ids[0], pad));
            tokens.extend_from_slice(&row.ids);
            let mut m = vec![0u8; pad];
            m.extend(std::iter::repeat_n(1u8, row.prompt_len));
            self.mask.push(m);
        }
        let flat_mask: Vec<u8> = self.mask.concat();
        let positions = crate::model::positions_from_mask(&flat_mask, batch, &[]);
        self.decoder.reset();
        let start = Instant::now();
        let logits = self.decoder.step(&DecodeStep {
            tokens: &tokens,
            batch,
            positions: &positions,
            mask: &flat_mask,
            all_positions: false,
        })?;
        self.stats.prompt_seconds = start.elapsed().as_secs_f64();
        finite(logits)
    }

    fn decode(&mut self) -> Result<Vec<f32>> {
        let batch = self.rows.len();
        let mut positions = Vec::with_capacity(batch);
        for (row, mask) in self.rows.iter().zip(self.mask.iter_mut()) {
            positions.push(mask.iter().filter(|&&m| m != 0).count() as u32);
            mask.push(u8::from(row.finish.is_none()));
        }
        let flat_mask: Vec<u8> = self.mask.concat();
        let next = std::mem::take(&mut self.next);
        finite(self.decoder.step(&DecodeStep {
            tokens: &next,
            batch,
            positions: &positions,
            mask: &flat_mask,
            all_positions: false,
        })?)
    }

    fn finish_all(&mut self, reason: FinishReason) -> Vec<String> {
        self.rows
            .iter_mut()
            .map(|row| {
                if row.finish.is_some() {
                    return String::new();
                }
                row.finish = Some(reason);
                let rest = row.stop.flush();
                row.output.push_str(&rest);
                rest
            })
            .collect()
    }

    /// The statistics so far.
    pub fn stats(&self) -> &GenerationStats {
        &self.stats
    }

    /// Runs to the end and returns every row's generation.
    pub fn run(mut self) -> Result<Vec<Generation>> {
        while !self.finished() {
            self.step()?;
        }
        Ok(self.into_generations())
    }

    /// The generations of every row (call when finished).
    pub fn into_generations(self) -> Vec<Generation> {
        let stats = self.stats;
        self.rows
            .into_iter()
            .map(|row| Generation {
                text: row.output,
                token_ids: row.ids[row.prompt_len..].to_vec(),
                finish_reason: row.finish.unwrap_or(FinishReason::Cancelled),
                stats: stats.clone(),
            })
            .collect()
    }
}

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

/// Logits with NaN or infinity would be sampled into garbage: they are an error.
fn finite(logits: Vec<f32>) -> Result<Vec<f32>> {
    match logits.iter().position(|x| !x.is_finite()) {
        None => Ok(logits),
        Some(index) => Err(Error::NonFinite {
            name: "logits".into(),
            index,
            value: logits[index].to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let mut m = StopMatcher {
            stops: vec!["\n\nUser".into()],
            held: String::new(),
        };
        assert_eq!(m.push("Hello"), ("Hello".into(), false));
        assert_eq!(m.push(" there\n"), (" there".into(), false));
        assert_eq!(m.push("\nUs"), (String::new(), false));
        assert_eq!(m.push("er: hi"), (String::new(), true));
        let mut m = StopMatcher {
            stops: vec!["END".into()],
            held: String::new(),
        };
        assert_eq!(m.push("ab E"), ("ab ".into(), false));
        assert_eq!(m.push("x"), ("Ex".into(), false));
    }

    struct Bytes;
    impl Detokenize for Bytes {
        fn decode(&self, ids: &[u32]) -> Result<String> {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    #[test]
    fn incremental_text_never_splits_a_character() {
        let ids: Vec<u32> = "a€b".bytes().map(u32::from).collect();
        let mut inc = IncrementalText::new(0);
        let mut out = Vec::new();
        for n in 1..=ids.len() {
            out.push(inc.next(&Bytes, &ids[..n]).unwrap());
        }
        assert_eq!(out, ["a", "", "", "€", "b"]);
    }

    #[test]
    fn defaults_come_from_the_package() {
        let info = GenerationInfo {
            eos_token_ids: vec![2],
            defaults: crate::manifest::GenerationDefaults {
                do_sample: Some(true),
                temperature: Some(0.7),
                top_p: Some(0.9),
                max_new_tokens: Some(64),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Sampling::resolve(&GenerateOptions::default(), Some(&info)).unwrap();
        assert_eq!(
            (
                s.temperature,
                s.top_p,
                s.max_new_tokens,
                s.eos_token_ids.clone()
            ),
            (0.7, Some(0.9), 64, vec![2])
        );
        let greedy = GenerateOptions {
            temperature: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            Sampling::resolve(&greedy, Some(&info)).unwrap().temperature,
            0.0
        );
        let bad = GenerateOptions {
            temperature: Some(-1.0),
            ..Default::default()
        };
        assert!(Sampling::resolve(&bad, None).is_err());
    }
}
