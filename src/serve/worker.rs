//! Two worker threads per served model, sharing its [`LoadedModel`] (a model runs through
//! `&self`, so they need no lock around it): one for forward passes and embeddings, one for
//! generation, so that a long generation never holds up an embedding request on the same model.
//! Each takes jobs from a bounded queue of its own and runs together what can share a forward
//! pass: embedding requests that arrive within `max_wait` of each other form one batch of at
//! most `max_batch_tokens` tokens, and generation requests waiting together decode as one
//! batch, each row with its own sampling settings, and each row stopped on its own when its
//! client leaves.

use super::metrics::Metrics;
use crate::chat::ChatMessage;
use crate::generate::{FinishReason, GenerateOptions, Generator, Sampling};
use crate::loader::LoadedModel;
use crate::pipeline::EmbedOptions;
use crate::tensor::NamedTensors;
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How a worker batches.
#[derive(Clone, Debug)]
pub struct Batching {
    /// Jobs waiting per model; beyond it requests are refused with 429.
    pub queue: usize,
    /// The most tokens one embedding batch holds.
    pub max_batch_tokens: usize,
    /// How long the first request of a batch waits for others to join it.
    pub max_wait: Duration,
    /// The most generation requests decoded together.
    pub max_streams: usize,
    /// Let generation requests join a batch that is already decoding (for models whose cache
    /// can grow): their prompts run on their own, then they decode with the batch.
    pub continuous: bool,
}

/// What a model's request asks for.
pub(crate) enum Job {
    /// Tensors, texts or images through the model's forward pass.
    Infer {
        input: InferInput,
        reply: oneshot::Sender<Result<NamedTensors>>,
    },
    /// Pooled sentence embeddings, not normalised (the caller normalises as it was asked).
    Embed {
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Embedded>>,
    },
    /// A completion or a chat reply, streamed as events.
    Generate(GenerateJob),
}

/// The input of an infer request.
pub(crate) enum InferInput {
    Tensors(NamedTensors),
    Texts(Vec<String>),
    #[cfg(feature = "image")]
    Images(Vec<Vec<u8>>),
}

/// Embeddings of one request, with its token count.
pub(crate) struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// A prompt: plain text (with the tokenizer's special tokens) or chat messages (through the
/// package's chat template).
pub(crate) enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

pub(crate) struct GenerateJob {
    pub prompt: Prompt,
    pub options: GenerateOptions,
    /// Text as it is made, then `Done` or `Failed`; a closed receiver cancels the generation.
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a generation sends back.
pub(crate) enum Event {
    Text(String),
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(Error),
}

/// The queues of one model's workers (forward passes and embeddings; generation), and whether
/// both still run.
pub(crate) struct Queue {
    lanes: [Mutex<Option<SyncSender<Job>>>; 2],
    alive: Arc<AtomicBool>,
    model: String,
    metrics: Arc<Metrics>,
}

/// Why a job was not queued.
pub(crate) enum Refused {
    Full,
    Stopped,
}

impl Queue {
    /// Queues `job` on its worker without waiting.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        let lane = usize::from(matches!(job, Job::Generate(_)));
        let guard = self.lanes[lane].lock().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(Refused::Stopped)?;
        match tx.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth(&self.model).inc();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        }
    }

    /// Whether both workers are running.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Stops taking jobs; the workers end once the queued ones are done.
    pub fn close(&self) {
        for lane in &self.lanes {
            lane.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

/// Starts the worker threads of `model`: forward passes and embeddings on one, generation on
/// the other, both on the same weights.
pub(crate) fn spawn(
    name: &str,
    model: LoadedModel,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Queue, Vec<std::thread::JoinHandle<()>>)> {
    let model = Arc::new(model);
    let alive = Arc::new(AtomicBool::new(true));
    let mut lanes = Vec::new();
    let mut handles = Vec::new();
    for lane in ["infer", "generate"] {
        let (tx, rx) = sync_channel(batching.queue.max(1));
        lanes.push(Mutex::new(Some(tx)));
        let mut worker = Worker {
            model: model.clone(),
            inbox: Inbox {
                rx,
                held: None,
                name: name.to_string(),
                metrics: metrics.clone(),
            },
            batching: batching.clone(),
            prompter: None,
        };
        let flag = alive.clone();
        let handle = std::thread::Builder::new()
            .name(format!("model {name} ({lane})"))
            .spawn(move || {
                struct Down(Arc<AtomicBool>);
                impl Drop for Down {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Relaxed);
                    }
                }
                let _down = Down(flag);
                worker.run();
            })?;
        handles.push(handle);
    }
    let lanes = <[_; 2]>::try_from(lanes).unwrap_or_else(|_| unreachable!("two lanes"));
    Ok((
        Queue {
            lanes,
            alive,
            model: name.to_string(),
            metrics,
        },
        handles,
    ))
}

/// The worker's side of the queue.
struct Inbox {
    rx: Receiver<Job>,
    /// A job taken while gathering a batch of another kind; it runs next.
    held: Option<Job>,
    name: String,
    metrics: Arc<Metrics>,
}

impl Inbox {
    /// The next job: the held one, else from the queue (until `deadline`, or as long as the
    /// queue is open).
    fn next(&mut self, deadline: Option<Instant>) -> Option<Job> {
        if let Some(job) = self.held.take() {
            return Some(job);
        }
        let job = match deadline {
            None => self.rx.recv().ok(),
            Some(at) => self
                .rx
                .recv_timeout(at.saturating_duration_since(Instant::now()))
                .ok(),
        };
        self.taken(job)
    }

    /// A job waiting now, if any and if none is held (a held job keeps its place in line).
    fn try_next(&mut self) -> Option<Job> {
        if self.held.is_some() {
            return None;
        }
        let job = self.rx.try_recv().ok();
        self.taken(job)
    }

    fn taken(&self, job: Option<Job>) -> Option<Job> {
        if job.is_some() {
            self.metrics.queue_depth(&self.name).dec();
        }
        job
    }
}

/// Turns generation requests into token ids and settings (with the model's tokenizer, which
/// may run while the model decodes) and the chat template, read once.
struct Prompter {
    model: Arc<LoadedModel>,
    chat: Option<crate::chat::ChatTemplate>,
}

impl Prompter {
    fn new(model: &Arc<LoadedModel>) -> Prompter {
        Prompter {
            model: model.clone(),
            chat: model.chat_template().ok(),
        }
    }

    fn prepare(&self, job: &GenerateJob) -> Result<(Vec<u32>, Sampling)> {
        let ids = match &job.prompt {
            Prompt::Text(text) => self.model.tokenize(text, true)?,
            Prompt::Chat(messages) => {
                let chat = self.chat.as_ref().ok_or_else(|| {
                    Error::Unsupported("this package has no chat template".into())
                })?;
                // The template already holds the special tokens.
                self.model.tokenize(&chat.prompt(messages)?, false)?
            }
        };
        Ok((ids, self.model.sampling(&job.options)?))
    }
}

/// A request being generated.
struct Stream {
    events: mpsc::UnboundedSender<Event>,
    prompt_tokens: usize,
    done: bool,
}

struct Worker {
    model: Arc<LoadedModel>,
    inbox: Inbox,
    batching: Batching,
    /// Made on the first generation request.
    prompter: Option<Prompter>,
}

impl Worker {
    fn run(&mut self) {
        while let Some(job) = self.inbox.next(None) {
            match job {
                Job::Infer { input, reply } => {
                    let result = self.infer(input);
                    let _ = reply.send(result);
                }
                Job::Embed { texts, reply } => self.embed(texts, reply),
                Job::Generate(job) => self.generate(job),
            }
        }
    }

    fn infer(&self, input: InferInput) -> Result<NamedTensors> {
        match input {
            InferInput::Tensors(tensors) => self.model.run(&tensors),
            InferInput::Texts(texts) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                self.model.run_text(&texts, true)
            }
            #[cfg(feature = "image")]
            InferInput::Images(images) => {
                let decoded = images
                    .iter()
                    .enumerate()
                    .map(|(i, bytes)| {
                        crate::image::RgbImage::decode(
                            bytes,
                            std::path::Path::new(&format!("image[{i}]")),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let inputs = self.model.preprocess_images(&decoded)?;
                self.model.run(&inputs)
            }
        }
    }

    /// Gathers embedding requests that arrive within `max_wait`, up to `max_batch_tokens`, and
    /// embeds them in one call.
    fn embed(&mut self, texts: Vec<String>, reply: oneshot::Sender<Result<Embedded>>) {
        let deadline = Instant::now() + self.batching.max_wait;
        let mut jobs = Vec::new();
        let mut tokens = 0;
        let mut first = Some((texts, reply));
        loop {
            let (texts, reply) = match first.take() {
                Some(job) => job,
                None => {
                    if tokens >= self.batching.max_batch_tokens {
                        break;
                    }
                    match self.inbox.next(Some(deadline)) {
                        Some(Job::Embed { texts, reply }) => (texts, reply),
                        Some(other) => {
                            self.inbox.held = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
            };
            match self.count_tokens(&texts) {
                Ok(n) => {
                    tokens += n;
                    jobs.push((texts, n, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if jobs.is_empty() {
            return;
        }
        self.inbox
            .metrics
            .batch(&self.inbox.name, "embeddings", jobs.len());
        let all: Vec<&str> = jobs
            .iter()
            .flat_map(|(texts, _, _)| texts.iter().map(String::as_str))
            .collect();
        let options = EmbedOptions {
            normalize: Some(false),
            ..EmbedOptions::default()
        };
        match self.model.embed_with(&all, &options) {
            Ok(embeddings) => {
                let mut vectors = embeddings.vectors.into_iter();
                for (texts, tokens, reply) in jobs {
                    let vectors = vectors.by_ref().take(texts.len()).collect();
                    let _ = reply.send(Ok(Embedded { vectors, tokens }));
                }
            }
            // One request's error must not fail the others: run each alone to say whose it is.
            Err(_) if jobs.len() > 1 => {
                for (texts, tokens, reply) in jobs {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let result = self.model.embed_with(&texts, &options);
                    let _ = reply.send(result.map(|e| Embedded {
                        vectors: e.vectors,
                        tokens,
                    }));
                }
            }
            Err(e) => {
                if let Some((_, _, reply)) = jobs.pop() {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    fn count_tokens(&self, texts: &[String]) -> Result<usize> {
        if texts.is_empty() {
            return Err(Error::InvalidArgument("input: no texts given".into()));
        }
        let mut n = 0;
        for text in texts {
            n += self.model.tokenize(text, true)?.len();
        }
        Ok(n)
    }

    /// Decodes generation requests together: those waiting when the first arrives (within
    /// `max_wait`) start the batch; while it runs, requests that arrive join it at the next step
    /// (continuous batching, where the model's cache can grow), and finished rows leave it.
    fn generate(&mut self, first: GenerateJob) {
        let prompter = &*self
            .prompter
            .get_or_insert_with(|| Prompter::new(&self.model));
        let inbox = &mut self.inbox;
        let max_streams = self.batching.max_streams.max(1);
        let deadline = Instant::now() + self.batching.max_wait;
        let mut streams = Vec::new();
        let mut requests = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match prompter.prepare(&job) {
                Ok(request) => {
                    streams.push(Stream {
                        events: job.events,
                        prompt_tokens: request.0.len(),
                        done: false,
                    });
                    requests.push(request);
                }
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e));
                }
            }
            if streams.len() < max_streams {
                match inbox.next(Some(deadline)) {
                    Some(Job::Generate(job)) => next = Some(job),
                    Some(other) => inbox.held = Some(other),
                    None => {}
                }
            }
        }
        if streams.is_empty() {
            return;
        }
        inbox
            .metrics
            .batch(&inbox.name, "generation", streams.len());
        let joins = if self.batching.continuous {
            max_streams
        } else {
            0
        };
        let result = self
            .model
            .generation_parts()
            .and_then(|(decoder, tokenizer)| {
                let generator = Generator::for_requests(decoder, tokenizer, requests)?;
                decode(generator, &mut streams, inbox, prompter, joins)
            });
        if let Err(e) = result {
            let message = e.to_string();
            for stream in streams.iter().filter(|s| !s.done) {
                let _ = stream
                    .events
                    .send(Event::Failed(Error::Unsupported(message.clone())));
            }
        }
    }
}

/// Runs a generation batch to its end, taking in the requests that arrive meanwhile while it
/// has fewer than `max_streams` rows (0: none join).
fn decode(
    mut generator: Generator<'_>,
    streams: &mut Vec<Stream>,
    inbox: &mut Inbox,
    prompter: &Prompter,
    max_streams: usize,
) -> Result<()> {
    let started = Instant::now();
    let mut first_token = true;
    while !generator.finished() {
        // Requests waiting now join at this step.
        while generator.joinable() && streams.len() < max_streams {
            let Some(job) = inbox.try_next() else { break };
            let Job::Generate(job) = job else {
                inbox.held = Some(job);
                break;
            };
            match prompter.prepare(&job).and_then(|(ids, sampling)| {
                let n = ids.len();
                generator.join(vec![(ids, sampling)]).map(|()| n)
            }) {
                Ok(prompt_tokens) => {
                    inbox.metrics.batch(&inbox.name, "join", 1);
                    streams.push(Stream {
                        events: job.events,
                        prompt_tokens,
                        done: false,
                    });
                }
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e));
                }
            }
        }
        for (row, stream) in streams.iter().enumerate() {
            if stream.events.is_closed() {
                generator.finish_row(row, FinishReason::Cancelled);
            }
        }
        let pieces = generator.step()?;
        if first_token {
            first_token = false;
            inbox
                .metrics
                .time_to_first_token(&inbox.name, started.elapsed());
        }
        for (row, piece) in pieces.into_iter().enumerate() {
            let stream = &mut streams[row];
            if !piece.is_empty() {
                let _ = stream.events.send(Event::Text(piece));
            }
            if let (Some(finish), false) = (generator.finish_reason(row), stream.done) {
                stream.done = true;
                let completion_tokens = generator.generated(row);
                inbox.metrics.generated(&inbox.name, completion_tokens);
                let _ = stream.events.send(Event::Done {
                    finish,
                    prompt_tokens: stream.prompt_tokens,
                    completion_tokens,
                });
            }
        }
        // Finished rows leave a batch that others can join (without joins they stay, masked:
        // dropping them changes the shape of the computation under the others).
        if max_streams == 0 {
            continue;
        }
        let keep = generator.retain_unfinished()?;
        if keep.len() < streams.len() {
            let mut index = 0;
            let mut kept = keep.iter().peekable();
            streams.retain(|_| {
                let hit = kept.next_if_eq(&&index).is_some();
                index += 1;
                hit
            });
        }
    }
    let stats = generator.stats();
    let seconds = stats.prompt_seconds + stats.decode_seconds;
    if seconds > 0.0 {
        inbox
            .metrics
            .tokens_per_second(&inbox.name, stats.generated_tokens as f64 / seconds);
    }
    Ok(())
}
