//! `silero-vad`: voice-activity detection on a WAV file with the Silero VAD model, through
//! inferox's loader and an architecture this crate registers from outside inferox.
//!
//!   silero-vad import silero_vad_16k.safetensors --output vad.pkg
//!   silero-vad detect vad.pkg speech.wav

use anyhow::Context;
use clap::{Parser, Subcommand};
use inferox::LoadPackage;
use silero_vad::{CHUNK, Detector, SAMPLE_RATE};
use std::path::PathBuf;

/// Voice-activity detection with Silero VAD on inferox.
///
/// The model's weights are the `silero_vad_16k.safetensors` file of the `silero-vad` package on
/// PyPI (`scripts/fetch-models.sh silero` puts it under ~/.cache/inferox/models/silero-vad/).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Makes an inferox package of the model's safetensors file.
    Import {
        /// `silero_vad_16k.safetensors`.
        weights: PathBuf,
        /// The package directory to write (must not exist).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Prints the speech probability of every 32 ms chunk of a 16 kHz WAV file.
    ///
    /// The file is cut into chunks of 512 samples (the last padded with zeros) and streamed
    /// through the model with its recurrent state carried from chunk to chunk. Standard output
    /// gets one line per chunk, its start time in seconds and the probability; standard error
    /// the speech segments, runs of chunks at or above --threshold.
    Detect {
        /// The package `import` wrote.
        package: PathBuf,
        /// A 16 kHz WAV file (channels are averaged; other rates are refused).
        audio: PathBuf,
        /// Probability from which a chunk counts as speech.
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Import { weights, output } => {
            let package = silero_vad::import(&weights, &output)
                .with_context(|| format!("importing {}", weights.display()))?;
            println!("{}", package.root().display());
        }
        Command::Detect {
            package,
            audio,
            threshold,
        } => {
            let package = inferox::Package::open(&package)?;
            let model = package.load(&inferox::LoadOptions::default())?;
            let samples = silero_vad::read_wav(&audio)?;
            let probabilities = Detector::new(model).probabilities(&samples)?;
            let seconds = |chunk: usize| (chunk * CHUNK) as f64 / SAMPLE_RATE as f64;
            let mut segments = Vec::new();
            let mut start = None;
            for (i, p) in probabilities.iter().enumerate() {
                println!("{:.3}\t{p:.6}", seconds(i));
                match (start, *p >= threshold) {
                    (None, true) => start = Some(i),
                    (Some(s), false) => {
                        segments.push((s, i));
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                segments.push((s, probabilities.len()));
            }
            for (s, e) in segments {
                eprintln!("speech {:.3}s to {:.3}s", seconds(s), seconds(e));
            }
        }
    }
    Ok(())
}
