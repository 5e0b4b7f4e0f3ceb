//! `inferox generate` and `inferox chat`.

use super::print_json;
use anyhow::Context;
use inferox::LoadPackage;
use inferox::LoadedModel;
use inferox::chat::ChatMessage;
use inferox::generate::{GenerateOptions, Generation, GenerationStats, TextStream};
use std::io::{BufRead, IsTerminal, Write};

/// Options shared by `generate` and `chat`.
#[derive(clap::Args)]
pub struct Sampling {
    /// Package directory, or the id of a package in the store (`inferox packages`). A bundle
    /// (`inferox bundle`) runs the package it carries when none is given.
    package: Option<String>,
    /// Most tokens to generate (default: the package's generation_config, else 256).
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (default: the package's, else greedy).
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Sample among the K most likely tokens.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Sample among the most likely tokens that together reach probability P.
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Penalise tokens already in the text (1.0 = off).
    #[arg(long, value_name = "R")]
    repetition_penalty: Option<f64>,
    /// Random seed; the same seed gives the same sample.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop", value_name = "TEXT")]
    stops: Vec<String>,
    /// Print one JSON document (text, token_ids, finish_reason, stats) instead of streaming.
    #[arg(long)]
    json: bool,
    /// Do not stop at end-of-sequence tokens (for benchmarks: always generate --max-tokens).
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    placement: super::Placement,
}

impl Sampling {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: self.stops.clone(),
            eos_token_ids: self.ignore_eos.then(Vec::new),
        }
    }

    fn load(&self) -> anyhow::Result<LoadedModel> {
        let package = super::open_package(self.package.as_deref())?;
        Ok(package.load(&self.placement.options()?)?)
    }
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    sampling: Sampling,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
}

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    sampling: Sampling,
    /// Answer this one user message and exit (default: read messages from standard input).
    #[arg(long)]
    prompt: Option<String>,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
}

fn print_stats(stats: &GenerationStats, finish: &str) {
    eprintln!(
        "[{} prompt tokens at {:.1} tok/s; {} generated at {:.1} tok/s; first token after {:.0} ms; {finish}]",
        stats.prompt_tokens,
        stats.prompt_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_tokens_per_second(),
        stats.time_to_first_token * 1e3,
    );
}

/// Prints a stream as it comes; returns the finished generation.
fn stream_out(mut stream: TextStream<'_>) -> anyhow::Result<Generation> {
    let mut out = std::io::stdout().lock();
    for piece in stream.by_ref() {
        out.write_all(piece?.as_bytes())?;
        out.flush()?;
    }
    writeln!(out)?;
    let generation = stream.into_generation();
    print_stats(
        &generation.stats,
        &format!("{:?}", generation.finish_reason).to_lowercase(),
    );
    Ok(generation)
}

fn print_generation(g: &Generation) -> anyhow::Result<()> {
    print_json(g)
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let model = args.sampling.load()?;
    let options = args.sampling.options();
    if args.sampling.json {
        return print_generation(&model.generate(&args.prompt, &options)?);
    }
    stream_out(model.stream(&args.prompt, &options)?)?;
    Ok(())
}

pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let model = args.sampling.load()?;
    let options = args.sampling.options();
    let mut history: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s))
        .collect();
    if let Some(prompt) = &args.prompt {
        history.push(ChatMessage::new("user", prompt));
        if args.sampling.json {
            return print_generation(&model.chat(&history, &options)?);
        }
        stream_out(model.stream_chat(&history, &options)?)?;
        return Ok(());
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chatting with {} (/reset clears the conversation, /exit or Ctrl-D quits)",
            model.package().root().display()
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.retain(|m| m.role == "system");
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", &line));
        let reply = if args.sampling.json {
            let g = model.chat(&history, &options)?;
            print_generation(&g)?;
            g
        } else {
            stream_out(model.stream_chat(&history, &options)?)?
        };
        history.push(ChatMessage::new("assistant", &reply.text));
    }
    Ok(())
}
