//! The [`Generator`]: a batch of sequences advancing together through a [`Decoder`] — prefill
//! (for an encoder–decoder model: encoding the prompts, then the start token), then one
//! KV-cached step per token — each sampled, detokenised and checked for stop strings and end
//! tokens on its own.

use super::detokenize::{Detokenize, IncrementalText};
use super::sampler::{row_rng, sample};
use super::stop::StopMatcher;
use super::{FinishReason, Generation, GenerationStats, Sampling};
use crate::model::{DecodeStep, Decoder, DecoderState};
use crate::{Error, Result};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// One sequence being generated.
pub(super) struct Row {
    ids: Vec<u32>,
    prompt_len: usize,
    text: IncrementalText,
    stop: StopMatcher,
    output: String,
    rng: ChaCha8Rng,
    finish: Option<FinishReason>,
    /// This row's settings: every row of a batch of requests may sample differently.
    sampling: Sampling,
    /// Joined a running batch and not fed yet: the next step runs its prompt on its own and
    /// appends its cache to the batch's. Fresh rows are always the last ones.
    fresh: bool,
}

impl Row {
    /// A row continuing `ids`, sampling with the `stream`-th generator of its seed; `fresh` when
    /// it joins a running batch.
    pub(super) fn new(ids: Vec<u32>, sampling: Sampling, stream: usize, fresh: bool) -> Row {
        Row {
            prompt_len: ids.len(),
            text: IncrementalText::new(ids.len()),
            ids,
            stop: StopMatcher::new(sampling.stop.clone()),
            output: String::new(),
            rng: row_rng(sampling.seed, stream),
            // With nothing to generate, a row is done before the model runs.
            finish: (sampling.max_new_tokens == 0).then_some(FinishReason::Length),
            sampling,
            fresh,
        }
    }
}

/// A batch of sequences advancing together (left-padded; finished rows keep feeding their last
/// token, masked out).
pub struct Generator<'a> {
    decoder: &'a dyn Decoder,
    /// The batch's KV cache (its own: other generations on the same model have theirs).
    state: DecoderState,
    tokenizer: &'a dyn Detokenize,
    rows: Vec<Row>,
    /// The prompts, for an encoder–decoder model (they go to the encoder; the rows start from
    /// the decoder's start token).
    sources: Vec<Vec<u32>>,
    mask: Vec<Vec<u8>>,
    next: Vec<u32>,
    started: Instant,
    stats: GenerationStats,
    first_token_at: Option<Instant>,
    cancel: Arc<AtomicBool>,
}

impl<'a> Generator<'a> {
    /// Prepares generation for `prompts` (token ids; at least one token each). Row `i` samples
    /// from the seed's `i`-th stream, so a batch is one reproducible draw.
    pub fn new(
        decoder: &'a dyn Decoder,
        tokenizer: &'a dyn Detokenize,
        prompts: &[Vec<u32>],
        sampling: Sampling,
    ) -> Result<Generator<'a>> {
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(i, _)| (sampling.clone(), i))
            .collect();
        Self::build(decoder, tokenizer, prompts, rows)
    }

    /// Prepares generation for independent requests batched together, each a prompt with its
    /// own settings. Each row samples as it would alone (the seed's first stream), so a request
    /// gets the same tokens whichever requests share its batch.
    pub fn for_requests(
        decoder: &'a dyn Decoder,
        tokenizer: &'a dyn Detokenize,
        requests: Vec<(Vec<u32>, Sampling)>,
    ) -> Result<Generator<'a>> {
        let (prompts, samplings): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        let rows = samplings.into_iter().map(|s| (s, 0)).collect();
        Self::build(decoder, tokenizer, &prompts, rows)
    }

    fn build(
        decoder: &'a dyn Decoder,
        tokenizer: &'a dyn Detokenize,
        prompts: &[Vec<u32>],
        samplings: Vec<(Sampling, usize)>,
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
        let start = decoder.decoder_start();
        let rows = prompts
            .iter()
            .zip(samplings)
            .map(|(p, (sampling, stream))| {
                let ids = start.map_or_else(|| p.clone(), |s| vec![s]);
                Row::new(ids, sampling, stream, false)
            })
            .collect::<Vec<Row>>();
        Ok(Generator {
            state: decoder.new_state(),
            decoder,
            tokenizer,
            rows,
            sources: match start {
                Some(_) => prompts.to_vec(),
                None => Vec::new(),
            },
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
        } else if self.rows.iter().any(|r| r.fresh) {
            self.join_step()?
        } else {
            self.decode(batch)?
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
            let token = sample(&mut logits, &row.ids, &row.sampling, &mut row.rng);
            row.ids.push(token);
            self.next.push(token);
            let generated = row.ids.len() - row.prompt_len;
            let mut piece = String::new();
            if row.sampling.eos_token_ids.contains(&token) {
                row.finish = Some(FinishReason::Eos);
            } else {
                let text = row.text.next(self.tokenizer, &row.ids)?;
                let (out, stopped) = row.stop.push(&text);
                piece = out;
                if stopped {
                    row.finish = Some(FinishReason::Stop);
                } else if generated >= row.sampling.max_new_tokens {
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
        if !self.sources.is_empty() {
            return self.encode();
        }
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
        self.state = self.decoder.new_state_with_room(room(&self.rows, 0));
        let start = Instant::now();
        let logits = self.decoder.step(
            &mut self.state,
            &DecodeStep {
                tokens: &tokens,
                batch,
                positions: &positions,
                mask: &flat_mask,
                all_positions: false,
            },
        )?;
        self.stats.prompt_seconds = start.elapsed().as_secs_f64();
        finite(logits)
    }

    /// The prefill of an encoder–decoder model: the prompts through the encoder (left-padded),
    /// then the start token of every row.
    fn encode(&mut self) -> Result<Vec<f32>> {
        let longest = self.stats.prompt_tokens;
        let batch = self.rows.len();
        let mut tokens = Vec::with_capacity(batch * longest);
        let mut mask = Vec::with_capacity(batch * longest);
        for source in &self.sources {
            let pad = longest - source.len();
            tokens.extend(std::iter::repeat_n(source[0], pad));
            tokens.extend_from_slice(source);
            mask.extend(std::iter::repeat_n(0u8, pad));
            mask.extend(std::iter::repeat_n(1u8, source.len()));
        }
        let start = Instant::now();
        self.decoder
            .encode(&mut self.state, &tokens, batch, &mask)?;
        self.mask = vec![vec![1]; batch];
        let first: Vec<u32> = self.rows.iter().map(|r| r.ids[0]).collect();
        let logits = self.decoder.step(
            &mut self.state,
            &DecodeStep {
                tokens: &first,
                batch,
                positions: &vec![0; batch],
                mask: &vec![1; batch],
                all_positions: false,
            },
        )?;
        self.stats.prompt_seconds = start.elapsed().as_secs_f64();
        finite(logits)
    }

    /// One token for each of the first `batch` rows (the others are fresh: not in the cache).
    fn decode(&mut self, batch: usize) -> Result<Vec<f32>> {
        let mut positions = Vec::with_capacity(batch);
        for (row, mask) in self.rows.iter().zip(self.mask.iter_mut()).take(batch) {
            positions.push(mask.iter().filter(|&&m| m != 0).count() as u32);
            mask.push(u8::from(row.finish.is_none()));
        }
        let flat_mask: Vec<u8> = self.mask[..batch].concat();
        finite(self.decoder.step(
            &mut self.state,
            &DecodeStep {
                tokens: &self.next[..batch],
                batch,
                positions: &positions,
                mask: &flat_mask,
                all_positions: false,
            },
        )?)
    }

    /// Why row `row` finished, once it has.
    pub fn finish_reason(&self, row: usize) -> Option<FinishReason> {
        self.rows.get(row).and_then(|r| r.finish)
    }

    /// Tokens row `row` has generated so far.
    pub fn generated(&self, row: usize) -> usize {
        self.rows.get(row).map_or(0, |r| r.ids.len() - r.prompt_len)
    }

    /// Ends row `row` with `reason` if it is still running (a request whose client went away);
    /// the others go on, and it is masked out of the steps that follow. Returns the text it
    /// still held.
    pub fn finish_row(&mut self, row: usize, reason: FinishReason) -> String {
        match self.rows.get_mut(row) {
            Some(r) if r.finish.is_none() => {
                r.finish = Some(reason);
                let rest = r.stop.flush();
                r.output.push_str(&rest);
                rest
            }
            _ => String::new(),
        }
    }

    /// Whether requests can join this batch while it runs ([`Generator::join`]): a decoder-only
    /// model whose cache can change its batch, once the first step has run.
    pub fn joinable(&self) -> bool {
        self.sources.is_empty() && !self.mask.is_empty() && self.decoder.resizable()
    }

    /// Adds requests to the running batch (continuous batching): the next step decodes the
    /// other rows' next tokens, runs the new prompts on their own (as they would run alone) and
    /// appends their caches to the batch's; from then on they decode with the rest. Each
    /// samples as it would alone (see [`Generator::for_requests`]).
    pub fn join(&mut self, requests: Vec<(Vec<u32>, Sampling)>) -> Result<()> {
        if !self.joinable() {
            return Err(Error::Unsupported(
                "this batch cannot take new rows (an encoder–decoder model, a cache that cannot \
                 grow, or no step run yet)"
                    .into(),
            ));
        }
        let vocab = self.decoder.vocab_size();
        for (i, (prompt, _)) in requests.iter().enumerate() {
            if prompt.is_empty() {
                return Err(Error::InvalidArgument(format!("prompt {i} has no tokens")));
            }
            if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::InvalidArgument(format!(
                    "token id {bad} is outside the vocabulary of {vocab}"
                )));
            }
            if prompt.len() >= self.decoder.max_positions() {
                return Err(Error::InvalidArgument(format!(
                    "the prompt has {} tokens; the model takes at most {} positions",
                    prompt.len(),
                    self.decoder.max_positions()
                )));
            }
        }
        for (prompt, sampling) in requests {
            // Even with nothing to generate, its prompt runs: the cache holds every row.
            self.rows.push(Row::new(prompt, sampling, 0, true));
            self.mask.push(Vec::new());
            self.next.push(0);
        }
        Ok(())
    }

    /// Drops the finished rows from the batch and from the model's cache, with the cached
    /// positions no remaining row attends to; returns the indices (before the call) of the rows
    /// kept, in order. Their generations are gone: a caller that needs them reads them first.
    pub fn retain_unfinished(&mut self) -> Result<Vec<usize>> {
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.rows[i].finish.is_none())
            .collect();
        let fresh = self.rows.iter().any(|r| r.fresh);
        if keep.len() == self.rows.len() || keep.is_empty() || fresh || !self.joinable() {
            return Ok((0..self.rows.len()).collect());
        }
        let from = keep
            .iter()
            .map(|&i| {
                let m = &self.mask[i];
                m.iter().position(|&x| x != 0).unwrap_or(m.len())
            })
            .min()
            .unwrap_or(0);
        self.decoder.retain_rows(&mut self.state, &keep, from)?;
        let mut index = 0;
        let mut kept = keep.iter().peekable();
        self.rows.retain(|_| {
            let hit = kept.next_if_eq(&&index).is_some();
            index += 1;
            hit
        });
        self.mask = keep
            .iter()
            .map(|&i| self.mask[i][from..].to_vec())
            .collect();
        self.next = keep.iter().map(|&i| self.next[i]).collect();
        Ok(keep)
    }

    /// A step with rows that just joined (the last ones): the other rows decode their next
    /// token; the new prompts run on a state of their own, left-padded to the longest of them
    /// (the backend attends each over its own positions, so that each computes bit for bit
    /// what it would alone: tests/gguf.rs and tests/golden_decoders.rs check it); then their
    /// cache is appended to the batch's, aligned at the last position, and the masks follow.
    fn join_step(&mut self) -> Result<Vec<f32>> {
        let old = self
            .rows
            .iter()
            .position(|r| r.fresh)
            .unwrap_or(self.rows.len());
        let mut logits = self.decode(old)?;
        let fresh = &self.rows[old..];
        let longest = fresh.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(fresh.len() * longest);
        let mut masks = Vec::with_capacity(fresh.len());
        for row in fresh {
            let pad = longest - row.ids.len();
            tokens.extend(std::iter::repeat_n(row.ids[0], pad));
            tokens.extend_from_slice(&row.ids);
            let mut m = vec![0u8; pad];
            m.extend(std::iter::repeat_n(1u8, row.ids.len()));
            masks.push(m);
        }
        let flat_mask: Vec<u8> = masks.concat();
        let positions = crate::model::positions_from_mask(&flat_mask, fresh.len(), &[]);
        let cached = self.mask.first().map_or(0, Vec::len);
        let mut state = self.decoder.new_state_with_room(room(fresh, cached));
        let joined = self.decoder.step(
            &mut state,
            &DecodeStep {
                tokens: &tokens,
                batch: fresh.len(),
                positions: &positions,
                mask: &flat_mask,
                all_positions: false,
            },
        )?;
        self.decoder.append_rows(&mut self.state, state)?;
        let len = cached.max(longest);
        for mask in &mut self.mask[..old] {
            mask.splice(0..0, std::iter::repeat_n(0, len - cached));
        }
        for (mask, mut m) in self.mask[old..].iter_mut().zip(masks) {
            m.splice(0..0, std::iter::repeat_n(0, len - longest));
            *mask = m;
        }
        for row in &mut self.rows[old..] {
            row.fresh = false;
        }
        logits.extend(finite(joined)?);
        Ok(logits)
    }

    /// Ends every unfinished row with `reason`; returns the text each one still held.
    pub(super) fn finish_all(&mut self, reason: FinishReason) -> Vec<String> {
        (0..self.rows.len())
            .map(|row| self.finish_row(row, reason))
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

/// Generated tokens a new cache makes room for at most: beyond them it grows, so that a request
/// asking for a huge `max_new_tokens` does not reserve the model's whole context up front.
const ROOM_AHEAD: usize = 4096;

/// Positions a new cache for `rows` makes room for: their longest prompt (or `cached`, the
/// positions of the batch they join, when longer) and the most tokens any of them may generate.
pub(super) fn room(rows: &[Row], cached: usize) -> usize {
    let prompt = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let ahead = rows.iter().map(|r| r.sampling.max_new_tokens).max();
    prompt.max(cached) + ahead.unwrap_or(0).min(ROOM_AHEAD)
}
