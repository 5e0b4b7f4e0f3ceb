//! One worker thread per served model. It owns the [`LoadedModel`] (so requests need no lock
//! around it), takes jobs from a bounded queue, and runs together what can share a forward pass:
//! embedding requests that arrive within `max_wait` of each other form one batch of at most
//! `max_batch_tokens` tokens, and generation requests waiting together decode as one batch, each
//! row with its own sampling settings, and each row stopped on its own when its client leaves.

use super::metrics::Metrics;
use crate::chat::ChatMessage;
use crate::generate::{FinishReason, GenerateOptions, Generator};
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

/// The queue of one model's worker, and whether the worker still runs.
pub(crate) struct Queue {
    tx: Mutex<Option<SyncSender<Job>>>,
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
    /// Queues `job` without waiting.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Whether the worker is running.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Stops taking jobs; the worker ends once the queued ones are done.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Starts the worker thread of `model`.
pub(crate) fn spawn(
    name: &str,
    model: LoadedModel,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Queue, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(batching.queue.max(1));
    let alive = Arc::new(AtomicBool::new(true));
    let mut worker = Worker {
        model,
        rx,
        batching,
        name: name.to_string(),
        metrics: metrics.clone(),
        held: None,
    };
    let flag = alive.clone();
    let handle = std::thread::Builder::new()
        .name(format!("model {name}"))
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
    Ok((
        Queue {
            tx: Mutex::new(Some(tx)),
            alive,
            model: name.to_string(),
            metrics,
        },
        handle,
    ))
}

struct Worker {
    model: LoadedModel,
    rx: Receiver<Job>,
    batching: Batching,
    name: String,
    metrics: Arc<Metrics>,
    /// A job taken while gathering a batch of another kind; it runs next.
    held: Option<Job>,
}

impl Worker {
    fn run(&mut self) {
        while let Some(job) = self.next(None) {
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

    /// The next job: the held one, else from the queue (until `deadline`, or waiting as long as
    /// the queue is open).
    fn next(&mut self, deadline: Option<Instant>) -> Option<Job> {
        if let Some(job) = self.held.take() {
            return Some(job);
        }
        let job = match deadline {
            None => self.rx.recv().ok(),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                self.rx.recv_timeout(wait).ok()
            }
        };
        if job.is_some() {
            self.metrics.queue_depth(&self.name).dec();
        }
        job
    }

    fn infer(&mut self, input: InferInput) -> Result<NamedTensors> {
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
                    match self.next(Some(deadline)) {
                        Some(Job::Embed { texts, reply }) => (texts, reply),
                        Some(other) => {
                            self.held = Some(other);
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
        self.metrics.batch(&self.name, "embeddings", jobs.len());
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

    fn count_tokens(&mut self, texts: &[String]) -> Result<usize> {
        if texts.is_empty() {
            return Err(Error::InvalidArgument("input: no texts given".into()));
        }
        let mut n = 0;
        for text in texts {
            n += self.model.tokenize(text, true)?.len();
        }
        Ok(n)
    }

    fn prompt_ids(&mut self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Text(text) => self.model.tokenize(text, true),
            Prompt::Chat(messages) => {
                let text = self.model.chat_prompt(messages)?;
                // The template already holds the special tokens.
                self.model.tokenize(&text, false)
            }
        }
    }

    /// Gathers the generation requests waiting (those arriving within `max_wait`, up to
    /// `max_streams`), and decodes them as one batch until every row has finished.
    fn generate(&mut self, first: GenerateJob) {
        let deadline = Instant::now() + self.batching.max_wait;
        let mut rows = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let prepared = self.prompt_ids(&job.prompt).and_then(|ids| {
                let sampling = self.model.sampling(&job.options)?;
                Ok((ids, sampling))
            });
            match prepared {
                Ok((ids, sampling)) => rows.push((job.events, ids, sampling)),
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e));
                }
            }
            if rows.len() < self.batching.max_streams.max(1) {
                match self.next(Some(deadline)) {
                    Some(Job::Generate(job)) => next = Some(job),
                    Some(other) => self.held = Some(other),
                    None => {}
                }
            }
        }
        if rows.is_empty() {
            return;
        }
        self.metrics.batch(&self.name, "generation", rows.len());
        let (events, requests): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .map(|(events, ids, sampling)| (events, (ids, sampling)))
            .unzip();
        let prompt_tokens: Vec<usize> = requests.iter().map(|(ids, _)| ids.len()).collect();
        if let Err(e) = self.decode(&events, requests, &prompt_tokens) {
            let message = e.to_string();
            for events in &events {
                let _ = events.send(Event::Failed(Error::Unsupported(message.clone())));
            }
        }
    }

    fn decode(
        &mut self,
        events: &[mpsc::UnboundedSender<Event>],
        requests: Vec<(Vec<u32>, crate::generate::Sampling)>,
        prompt_tokens: &[usize],
    ) -> Result<()> {
        let (decoder, tokenizer) = self.model.generation_parts()?;
        let mut generator = Generator::for_requests(decoder, tokenizer, requests)?;
        let mut done = vec![false; events.len()];
        let started = Instant::now();
        let mut first_token = true;
        while !generator.finished() {
            for (row, tx) in events.iter().enumerate() {
                if tx.is_closed() {
                    generator.finish_row(row, FinishReason::Cancelled);
                }
            }
            let pieces = generator.step()?;
            if first_token {
                first_token = false;
                self.metrics
                    .time_to_first_token(&self.name, started.elapsed());
            }
            for (row, piece) in pieces.into_iter().enumerate() {
                if !piece.is_empty() {
                    let _ = events[row].send(Event::Text(piece));
                }
                if let (Some(finish), false) = (generator.finish_reason(row), done[row]) {
                    done[row] = true;
                    let completion_tokens = generator.generated(row);
                    self.metrics.generated(&self.name, completion_tokens);
                    let _ = events[row].send(Event::Done {
                        finish,
                        prompt_tokens: prompt_tokens[row],
                        completion_tokens,
                    });
                }
            }
        }
        let stats = generator.stats();
        if stats.decode_seconds > 0.0 {
            self.metrics.tokens_per_second(
                &self.name,
                stats.generated_tokens as f64 / (stats.prompt_seconds + stats.decode_seconds),
            );
        }
        Ok(())
    }
}
