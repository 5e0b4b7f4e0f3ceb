//! The generator end to end on a fake decoder and a fake tokenizer: no model, no tokenizer file.

use super::*;
use crate::model::{Cache, DecodeStep, Decoder, DecoderState};
use crate::{Error, Result};

/// The fake vocabulary: id `i` is `WORDS[i]`; id 0 is the end token (a special token, so
/// decoding skips it).
const WORDS: [&str; 8] = ["</s>", "Hello", " world", ",", " how", " are", " you", "?"];
const EOS: u32 = 0;

/// The scripted continuation: each word is followed by the next, "?" by the end token.
fn next_after(token: u32) -> u32 {
    match token {
        1..=6 => token + 1,
        _ => EOS,
    }
}

/// Decodes by concatenating the words, the end token skipped.
struct Words;

impl Detokenize for Words {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .filter(|&&id| id != EOS)
            .map(|&id| {
                WORDS
                    .get(id as usize)
                    .copied()
                    .ok_or_else(|| Error::InvalidArgument(format!("no token {id}")))
            })
            .collect()
    }
}

/// A decoder whose logits always favour the scripted successor of each row's last real token.
/// It checks what a real one relies on: the mask covers the cache and the new tokens, each real
/// token's position is the count of real tokens before it, and the last position of a row that
/// is still generating is a real token (so left padding); a padded last position gets flat
/// logits, which greedy decoding reads as the end token.
struct FakeDecoder {
    max_positions: usize,
}

impl FakeDecoder {
    fn new(max_positions: usize) -> Self {
        FakeDecoder { max_positions }
    }
}

/// The fake decoder's state.
#[derive(Default)]
struct FakeCache {
    /// The real (unmasked) tokens each row has seen.
    rows: Vec<Vec<u32>>,
    cached: usize,
    /// The positions it was made with room for (0: not said); a step past them is an error,
    /// so that every test checks the generator sizes caches for the whole generation.
    room: usize,
}

impl Cache for FakeCache {
    fn cached(&self) -> usize {
        self.cached
    }
}

impl Decoder for FakeDecoder {
    fn vocab_size(&self) -> usize {
        WORDS.len()
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn new_state(&self) -> DecoderState {
        DecoderState::new(self, FakeCache::default())
    }

    fn new_state_with_room(&self, positions: usize) -> DecoderState {
        let room = positions.min(self.max_positions);
        DecoderState::new(
            self,
            FakeCache {
                room,
                ..Default::default()
            },
        )
    }

    fn resizable(&self) -> bool {
        true
    }

    fn append_rows(&self, state: &mut DecoderState, mut rows: DecoderState) -> Result<()> {
        let more = std::mem::take(rows.cache_mut::<FakeCache, _>(self)?);
        let cache = state.cache_mut::<FakeCache, _>(self)?;
        cache.rows.extend(more.rows);
        cache.cached = cache.cached.max(more.cached);
        cache.room = cache.room.max(more.room);
        Ok(())
    }

    fn retain_rows(&self, state: &mut DecoderState, rows: &[usize], from: usize) -> Result<()> {
        let cache = state.cache_mut::<FakeCache, _>(self)?;
        cache.rows = rows.iter().map(|&i| cache.rows[i].clone()).collect();
        cache.cached -= from;
        Ok(())
    }

    fn step(&self, state: &mut DecoderState, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
        let cache = state.cache_mut::<FakeCache, _>(self)?;
        let (batch, seq, vocab) = (step.batch, step.seq(), WORDS.len());
        if cache.rows.is_empty() {
            cache.rows = vec![Vec::new(); batch];
        }
        let width = cache.cached + seq;
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if cache.room != 0 && width > cache.room {
            return bad(format!(
                "{width} positions in a cache made with room for {}",
                cache.room
            ));
        }
        if cache.rows.len() != batch
            || step.tokens.len() != batch * seq
            || step.positions.len() != batch * seq
            || step.mask.len() != batch * width
        {
            return bad(format!(
                "batch {batch}, {} tokens, {} positions, mask of {} after {} cached",
                step.tokens.len(),
                step.positions.len(),
                step.mask.len(),
                cache.cached
            ));
        }
        let mut logits = vec![0f32; batch * vocab];
        for (b, row) in cache.rows.iter_mut().enumerate() {
            let mask = &step.mask[b * width + cache.cached..(b + 1) * width];
            for (j, &m) in mask.iter().enumerate() {
                if m == 0 {
                    continue;
                }
                let position = step.positions[b * seq + j];
                if position as usize != row.len() {
                    return bad(format!(
                        "row {b}: token {j} at position {position}, not {}",
                        row.len()
                    ));
                }
                row.push(step.tokens[b * seq + j]);
            }
            if mask[seq - 1] != 0 {
                let next = next_after(*row.last().expect("a real token"));
                logits[b * vocab + next as usize] = 10.0;
            }
        }
        cache.cached = width;
        Ok(logits)
    }
}

/// A new cache has room for the longest prompt (or the batch it joins) and the longest
/// generation, up to a bound past which it grows instead.
#[test]
fn caches_are_sized_for_the_whole_generation() {
    let rows = |lens: &[(usize, usize)]| -> Vec<generator::Row> {
        lens.iter()
            .map(|&(prompt, max_new)| {
                generator::Row::new(vec![1; prompt], sampling(max_new, &[]), 0, false)
            })
            .collect()
    };
    assert_eq!(generator::room(&rows(&[(5, 100), (9, 20)]), 0), 109);
    assert_eq!(generator::room(&rows(&[(5, 100)]), 30), 130);
    assert_eq!(generator::room(&rows(&[(9, usize::MAX)]), 0), 9 + 4096);
}

fn sampling(max_new_tokens: usize, stop: &[&str]) -> Sampling {
    Sampling::resolve(
        &GenerateOptions {
            max_new_tokens: Some(max_new_tokens),
            stop: stop.iter().map(|s| s.to_string()).collect(),
            eos_token_ids: Some(vec![EOS]),
            ..Default::default()
        },
        None,
    )
    .unwrap()
}

fn generate(prompts: &[Vec<u32>], sampling: Sampling) -> Vec<Generation> {
    let decoder = FakeDecoder::new(64);
    Generator::new(&decoder, &Words, prompts, sampling)
        .unwrap()
        .run()
        .unwrap()
}

#[test]
fn greedy_generation_follows_the_script_and_stops_at_eos() {
    let g = generate(&[vec![1]], sampling(32, &[])).remove(0);
    assert_eq!(g.token_ids, [2, 3, 4, 5, 6, 7, EOS]);
    assert_eq!(g.text, " world, how are you?");
    assert_eq!(g.finish_reason, FinishReason::Eos);
    assert_eq!((g.stats.prompt_tokens, g.stats.generated_tokens), (1, 7));
}

#[test]
fn eos_is_whichever_ids_the_options_name() {
    // With "?" as the end token the generation ends there, and the end token is not text.
    let s = Sampling {
        eos_token_ids: vec![7],
        ..sampling(32, &[])
    };
    let g = generate(&[vec![1]], s).remove(0);
    assert_eq!(g.token_ids, [2, 3, 4, 5, 6, 7]);
    assert_eq!(g.text, " world, how are you");
    assert_eq!(g.finish_reason, FinishReason::Eos);
}

#[test]
fn max_new_tokens_ends_the_generation() {
    let g = generate(&[vec![1]], sampling(3, &[])).remove(0);
    assert_eq!(g.token_ids, [2, 3, 4]);
    assert_eq!(g.text, " world, how");
    assert_eq!(g.finish_reason, FinishReason::Length);
    let g = generate(&[vec![1]], sampling(0, &[])).remove(0);
    assert_eq!((g.token_ids.len(), g.text.as_str()), (0, ""));
    assert_eq!(g.finish_reason, FinishReason::Length);
}

#[test]
fn the_context_limit_ends_the_generation() {
    let decoder = FakeDecoder::new(4);
    let g = Generator::new(&decoder, &Words, &[vec![1]], sampling(32, &[]))
        .unwrap()
        .run()
        .unwrap()
        .remove(0);
    assert_eq!(g.token_ids, [2, 3, 4]);
    assert_eq!(g.finish_reason, FinishReason::Context);
    let decoder = FakeDecoder::new(2);
    assert!(Generator::new(&decoder, &Words, &[vec![1, 2]], sampling(32, &[])).is_err());
}

#[test]
fn stop_strings_cut_the_text() {
    // A stop string inside one token.
    let g = generate(&[vec![1]], sampling(32, &[" are"])).remove(0);
    assert_eq!(g.text, " world, how");
    assert_eq!(g.token_ids, [2, 3, 4, 5]);
    assert_eq!(g.finish_reason, FinishReason::Stop);
    // One spanning two tokens: " how" is held back until " are" completes it.
    let g = generate(&[vec![1]], sampling(32, &["how a"])).remove(0);
    assert_eq!(g.text, " world, ");
    assert_eq!(g.finish_reason, FinishReason::Stop);
    // A prefix of a stop string that never completes is given back at the end.
    let g = generate(&[vec![1]], sampling(32, &["?!"])).remove(0);
    assert_eq!(g.text, " world, how are you?");
    assert_eq!(g.finish_reason, FinishReason::Eos);
}

#[test]
fn a_left_padded_batch_gives_each_prompt_its_own_continuation() {
    let prompts = [vec![1], vec![3, 4]];
    let batch = generate(&prompts, sampling(32, &[]));
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].text, " world, how are you?");
    assert_eq!(batch[0].token_ids, [2, 3, 4, 5, 6, 7, EOS]);
    assert_eq!(batch[1].text, " are you?");
    assert_eq!(batch[1].token_ids, [5, 6, 7, EOS]);
    assert!(batch.iter().all(|g| g.finish_reason == FinishReason::Eos));
    assert_eq!(batch[0].stats.generated_tokens, 7 + 4);
    // The same as each prompt alone.
    for (prompt, batched) in prompts.iter().zip(&batch) {
        let alone = generate(std::slice::from_ref(prompt), sampling(32, &[])).remove(0);
        assert_eq!(alone.text, batched.text);
        assert_eq!(alone.token_ids, batched.token_ids);
    }
}

#[test]
fn streamed_pieces_concatenate_to_the_final_text() {
    let decoder = FakeDecoder::new(64);
    let generator = Generator::new(&decoder, &Words, &[vec![1]], sampling(32, &[])).unwrap();
    let mut stream = TextStream::new(generator);
    let pieces: Vec<String> = stream.by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(pieces, [" world", ",", " how", " are", " you", "?"]);
    let g = stream.into_generation();
    assert_eq!(pieces.concat(), g.text);
    assert_eq!(g.finish_reason, FinishReason::Eos);

    // With a stop string, held-back text is streamed once it is known not to stop.
    let decoder = FakeDecoder::new(64);
    let generator =
        Generator::new(&decoder, &Words, &[vec![1]], sampling(32, &["how?", "you"])).unwrap();
    let mut stream = TextStream::new(generator);
    let pieces: Vec<String> = stream.by_ref().collect::<Result<_>>().unwrap();
    let g = stream.into_generation();
    // " how" holds back "how" (it could start "how?"), released with " are"; " you" gives its
    // space and stops.
    assert_eq!(pieces, [" world", ",", " ", "how are", " "]);
    assert_eq!(pieces.concat(), g.text);
    assert_eq!(g.text, " world, how are ");
    assert_eq!(g.finish_reason, FinishReason::Stop);
}

#[test]
fn a_cancelled_stream_ends_without_text() {
    let decoder = FakeDecoder::new(64);
    let generator = Generator::new(&decoder, &Words, &[vec![1]], sampling(32, &[])).unwrap();
    let mut stream = TextStream::new(generator);
    assert_eq!(stream.next().unwrap().unwrap(), " world");
    stream
        .cancel_handle()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(stream.next().is_none());
    let g = stream.into_generation();
    assert_eq!(
        (g.text.as_str(), g.finish_reason),
        (" world", FinishReason::Cancelled)
    );
    assert_eq!(g.token_ids, [2]);
}

/// Continuous batching: requests join a running batch and finished rows leave it, and every
/// request gets the text it gets alone (the fake decoder checks each step's positions and mask).
#[test]
fn requests_join_and_leave_a_running_batch() {
    let decoder = FakeDecoder::new(64);
    let mut g =
        Generator::for_requests(&decoder, &Words, vec![(vec![1], sampling(32, &[]))]).unwrap();
    assert!(!g.joinable(), "not before the first step");
    let mut texts = vec![String::new(); 5];
    let mut rows = vec![0];
    let mut steps = 0;
    while !g.finished() {
        match steps {
            // A prompt longer than the cache: the running row is padded in front.
            1 => {
                g.join(vec![(vec![2, 3, 4], sampling(32, &[]))]).unwrap();
                rows.push(4);
            }
            2 => {
                g.join(vec![
                    (vec![3, 4], sampling(32, &[])),
                    (vec![5], sampling(2, &[])),
                ])
                .unwrap();
                rows.extend([1, 2]);
            }
            // After the third request has finished and left.
            5 => {
                assert_eq!(rows, [0, 1], "the finished rows left");
                g.join(vec![(vec![2], sampling(32, &[]))]).unwrap();
                rows.push(3);
            }
            _ => {}
        }
        for (row, piece) in g.step().unwrap().into_iter().enumerate() {
            texts[rows[row]].push_str(&piece);
        }
        let keep = g.retain_unfinished().unwrap();
        rows = keep.iter().map(|&k| rows[k]).collect();
        steps += 1;
    }
    let alone = |prompt: Vec<u32>, s| generate(&[prompt], s).remove(0).text;
    assert_eq!(texts[0], alone(vec![1], sampling(32, &[])));
    assert_eq!(texts[1], alone(vec![3, 4], sampling(32, &[])));
    assert_eq!(texts[2], alone(vec![5], sampling(2, &[])));
    assert_eq!(texts[3], alone(vec![2], sampling(32, &[])));
    assert_eq!(texts[4], alone(vec![2, 3, 4], sampling(32, &[])));
    assert_eq!(
        texts,
        [
            " world, how are you?",
            " are you?",
            " you?",
            ", how are you?",
            " are you?"
        ]
    );
}
