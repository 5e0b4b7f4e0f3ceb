//! `silero-vad`: voice-activity detection on a WAV file with the Silero VAD model, through
//! inferox's loader and an architecture this crate registers from outside inferox.
//!
//!   silero-vad import silero_vad_16k.safetensors --output vad.pkg
//!   silero-vad detect vad.pkg speech.wav
//!   silero-vad bench vad.pkg speech.wav --threads 1

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
        /// Threads for tensor work (default: one per physical core).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
    /// Times the model over a 16 kHz WAV file, chunk by chunk as `detect` runs it, and prints
    /// JSON: the audio's length, the median processing time of the runs and the real-time
    /// factor (processing time / audio time; below 1 is faster than real time).
    Bench {
        /// The package `import` wrote.
        package: PathBuf,
        /// A 16 kHz WAV file.
        audio: PathBuf,
        /// Timed runs over the whole file, after one untimed run.
        #[arg(short, long, default_value_t = 5)]
        runs: usize,
        /// Threads for tensor work (default: one per physical core).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
}

/// Opens and loads the package with `threads`.
fn load(package: &std::path::Path, threads: Option<usize>) -> anyhow::Result<inferox::LoadedModel> {
    let package = inferox::Package::open(package)?;
    let options = inferox::LoadOptions {
        threads,
        ..Default::default()
    };
    Ok(package.load(&options)?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Detect {
        threads: Some(n), ..
    }
    | Command::Bench {
        threads: Some(n), ..
    } = &cli.command
    {
        // candle sizes its worker pool once, from these, when it first runs.
        // SAFETY: no other thread exists yet.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
    match cli.command {
        Command::Import { weights, output } => {
            let package = silero_vad::import(&weights, &output)
                .with_context(|| format!("importing {}", weights.display()))?;
            println!("{}", package.root().display());
        }
        Command::Detect {
            package,
            audio,
            threshold,
            threads,
        } => {
            let model = load(&package, threads)?;
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
        Command::Bench {
            package,
            audio,
            runs,
            threads,
        } => {
            anyhow::ensure!(runs > 0, "--runs must be at least 1");
            let mut detector = Detector::new(load(&package, threads)?);
            let samples = silero_vad::read_wav(&audio)?;
            let chunks = samples.len().div_ceil(CHUNK);
            let mut times = Vec::with_capacity(runs);
            let mut speech = 0;
            for run in 0..=runs {
                let start = std::time::Instant::now();
                let probabilities = detector.probabilities(&samples)?;
                let elapsed = start.elapsed().as_secs_f64();
                anyhow::ensure!(
                    probabilities.len() == chunks
                        && probabilities.iter().all(|p| (0.0..=1.0).contains(p)),
                    "the model gave {} probabilities for {chunks} chunks, or one outside [0, 1]",
                    probabilities.len()
                );
                speech = probabilities.iter().filter(|&&p| p >= 0.5).count();
                if run > 0 {
                    times.push(elapsed);
                }
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let audio_seconds = samples.len() as f64 / SAMPLE_RATE as f64;
            println!(
                "{}",
                serde_json::json!({
                    "audio_seconds": audio_seconds,
                    "chunks": chunks,
                    "speech_chunks": speech,
                    "runs": runs,
                    "seconds": median,
                    "real_time_factor": median / audio_seconds,
                })
            );
        }
    }
    Ok(())
}
