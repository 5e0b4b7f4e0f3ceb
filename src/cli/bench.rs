//! `inferox bench`: what llama-bench is to llama.cpp, for every package.

use super::print_json;
use anyhow::{Context, bail};
use inferox::model::DecodeStep;
use inferox::schema::{Dim, TensorSpec, TokenField};
use inferox::{DType, HostTensor, LoadPackage, LoadedModel, NamedTensors};
use serde_json::json;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Package directory, or the id of a package in the store (`inferox packages`). A bundle
    /// runs the package it carries when none is given.
    package: Option<String>,
    /// Decoders: prompt tokens processed in one pass from an empty cache (0 skips the test).
    /// Encoder–decoder models: source tokens, encoded in every run of both tests.
    #[arg(short = 'p', long, default_value_t = 512, value_name = "N")]
    prompt_tokens: usize,
    /// Decoders: tokens generated one at a time from an empty cache (0 skips the test).
    /// Encoder–decoder models: the source is encoded, then the tokens are decoded one at a
    /// time, as a generation does.
    #[arg(short = 'n', long, default_value_t = 128, value_name = "N")]
    gen_tokens: usize,
    /// Encoders, vision and recurrent models: rows (texts, images, sequences) per forward pass.
    #[arg(long, default_value_t = 1, value_name = "B")]
    batch: usize,
    /// Encoders that take text: tokens per row (special tokens included); recurrent models:
    /// steps per sequence.
    #[arg(long, default_value_t = 128, value_name = "S")]
    seq: usize,
    /// Timed runs of each test; the figures are their mean ± standard deviation.
    #[arg(short = 'r', long, default_value_t = 5, value_name = "R")]
    repetitions: usize,
    /// Untimed runs before the timed ones (caches, thread pools, page faults).
    #[arg(long, default_value_t = 1, value_name = "W")]
    warmup: usize,
    #[command(flatten)]
    placement: super::Placement,
    /// Print one JSON document on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Mean and sample standard deviation of timed runs.
#[derive(serde::Serialize)]
struct Stat {
    mean: f64,
    stddev: f64,
    samples: Vec<f64>,
}

impl Stat {
    fn of(samples: Vec<f64>) -> Stat {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = if samples.len() > 1 {
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Stat {
            mean,
            stddev: var.sqrt(),
            samples,
        }
    }

    fn show(&self) -> String {
        let digits = if self.mean >= 100.0 { 1 } else { 2 };
        format!("{:.digits$} ± {:.digits$}", self.mean, self.stddev)
    }
}

/// Runs `f` `warmup` times untimed, then `repetitions` times, returning the seconds of each.
fn time(
    warmup: usize,
    repetitions: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..repetitions)
        .map(|_| {
            let start = Instant::now();
            f()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    let package = super::open_package(args.package.as_deref())?;
    let model = package.load(&args.placement.options()?)?;
    let threads = super::threads_in_effect().0;
    let mut report = json!({
        "package": package.root().display().to_string(),
        "model_type": model.info().model_type,
        "backend": model.backend(),
        "device": args.placement.device,
        "dtype": args.placement.dtype,
        "threads": threads,
        "repetitions": args.repetitions,
    });
    let header = format!(
        "{} ({}) on {} {}, threads: {}, runs: {}",
        package.root().display(),
        model.info().model_type,
        model.backend(),
        args.placement.dtype,
        threads,
        args.repetitions
    );
    let rows = if model.decoder().is_some() {
        bench_decoder(&model, &args, &mut report)?
    } else {
        bench_encoder(&model, &args, &mut report)?
    };
    if args.json {
        return print_json(&report);
    }
    println!("{header}");
    println!();
    println!("| test | {} |", rows.0.join(" | "));
    println!("|---|{}", "---|".repeat(rows.0.len()));
    for (test, values) in rows.1 {
        println!("| {test} | {} |", values.join(" | "));
    }
    Ok(())
}

/// Column titles, then one row per test.
type Table = (Vec<&'static str>, Vec<(String, Vec<String>)>);

/// Prompt processing (`pp N`) and generation (`tg N`) in tokens/s, as llama-bench measures
/// them: each from an empty cache, the generation one token per pass. For an encoder–decoder
/// model, `pp N` encodes an N-token source and runs the decoder's first step, and every
/// `tg` run encodes that source before decoding: the work of one generation.
fn bench_decoder(
    model: &LoadedModel,
    args: &Args,
    report: &mut serde_json::Value,
) -> anyhow::Result<Table> {
    let decoder = model.decoder().expect("checked by the caller");
    let max = decoder.max_positions();
    for (flag, n) in [
        ("--prompt-tokens", args.prompt_tokens),
        ("--gen-tokens", args.gen_tokens),
    ] {
        if n > max {
            bail!("{flag} {n} is longer than the model's context of {max} tokens");
        }
    }
    let vocab = decoder.vocab_size() as u64;
    if vocab == 0 {
        bail!("the model reports an empty vocabulary: nothing to feed it");
    }
    // Fixed pseudo-random token ids, as llama-bench feeds: the same work on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut token = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % vocab) as u32
    };
    let prompt: Vec<u32> = (0..args.prompt_tokens).map(|_| token()).collect();
    let generated: Vec<u32> = (0..args.gen_tokens).map(|_| token()).collect();
    let start = decoder.decoder_start();
    if start.is_some() && prompt.is_empty() {
        bail!("an encoder–decoder model decodes from a source: give --prompt-tokens N above 0");
    }
    let source_mask = vec![1u8; prompt.len()];
    let mut rows = Vec::new();
    let stat =
        |seconds: Vec<f64>, n: usize| Stat::of(seconds.iter().map(|s| n as f64 / s).collect());
    report["prompt_tokens"] = json!(args.prompt_tokens);
    report["gen_tokens"] = json!(args.gen_tokens);
    report["prompt_tokens_per_s"] = serde_json::Value::Null;
    report["decode_tokens_per_s"] = serde_json::Value::Null;
    if !prompt.is_empty() {
        let positions: Vec<u32> = (0..prompt.len() as u32).collect();
        let mask = vec![1u8; prompt.len()];
        let seconds = time(args.warmup, args.repetitions, || {
            let mut state = decoder.new_state_with_room(prompt.len());
            let logits = match start {
                Some(start) => {
                    decoder.encode(&mut state, &prompt, 1, &source_mask)?;
                    decoder.step(
                        &mut state,
                        &DecodeStep {
                            tokens: &[start],
                            batch: 1,
                            positions: &[0],
                            mask: &[1],
                            all_positions: false,
                        },
                    )?
                }
                None => decoder.step(
                    &mut state,
                    &DecodeStep {
                        tokens: &prompt,
                        batch: 1,
                        positions: &positions,
                        mask: &mask,
                        all_positions: false,
                    },
                )?,
            };
            check_logits(&logits, vocab)
        })?;
        let s = stat(seconds, prompt.len());
        rows.push((format!("pp{}", prompt.len()), vec![s.show()]));
        report["prompt_tokens_per_s"] = serde_json::to_value(&s)?;
    }
    if !generated.is_empty() {
        let mask = vec![1u8; generated.len()];
        let seconds = time(args.warmup, args.repetitions, || {
            let mut state = decoder.new_state_with_room(generated.len());
            if start.is_some() {
                decoder.encode(&mut state, &prompt, 1, &source_mask)?;
            }
            for (i, &t) in generated.iter().enumerate() {
                let logits = decoder.step(
                    &mut state,
                    &DecodeStep {
                        tokens: &[t],
                        batch: 1,
                        positions: &[i as u32],
                        mask: &mask[..=i],
                        all_positions: false,
                    },
                )?;
                check_logits(&logits, vocab)?;
            }
            Ok(())
        })?;
        let s = stat(seconds, generated.len());
        rows.push((format!("tg{}", generated.len()), vec![s.show()]));
        report["decode_tokens_per_s"] = serde_json::to_value(&s)?;
    }
    Ok((vec!["tokens/s"], rows))
}

/// A pass must give one finite logits row: a timing of garbage is not a benchmark.
fn check_logits(logits: &[f32], vocab: u64) -> anyhow::Result<()> {
    if logits.len() as u64 != vocab || !logits.iter().all(|x| x.is_finite()) {
        bail!(
            "the model returned {} logits (expected {vocab}), or non-finite ones",
            logits.len()
        );
    }
    Ok(())
}

/// Forward passes over `--batch` rows of `--seq` tokens (or of images at the package's size),
/// in items/s and milliseconds per pass.
fn bench_encoder(
    model: &LoadedModel,
    args: &Args,
    report: &mut serde_json::Value,
) -> anyhow::Result<Table> {
    if args.batch == 0 || args.seq == 0 {
        bail!("--batch and --seq must be at least 1");
    }
    let inputs = synthetic_inputs(model, args.batch, args.seq)?;
    // Text, and float sequences (recurrent networks), are sized by --seq as well.
    let takes_text = model.info().io.inputs.iter().any(|s| {
        s.tokenization().is_some()
            || s.shape
                .iter()
                .any(|d| matches!(d, Dim::Named(n) if n == "sequence"))
    });
    let seconds = time(args.warmup, args.repetitions, || {
        let outputs = model.run(&inputs)?;
        if outputs.iter().next().is_none() {
            bail!("the model returned no outputs");
        }
        Ok(())
    })?;
    let items = Stat::of(seconds.iter().map(|s| args.batch as f64 / s).collect());
    let latency = Stat::of(seconds.iter().map(|s| s * 1e3).collect());
    let test = if takes_text {
        format!("b{} s{}", args.batch, args.seq)
    } else {
        format!("b{}", args.batch)
    };
    report["batch"] = json!(args.batch);
    report["seq"] = if takes_text {
        json!(args.seq)
    } else {
        serde_json::Value::Null
    };
    report["items_per_s"] = serde_json::to_value(&items)?;
    report["latency_ms"] = serde_json::to_value(&latency)?;
    Ok((
        vec!["items/s", "latency (ms)"],
        vec![(test, vec![items.show(), latency.show()])],
    ))
}

/// Inputs for `batch` rows: real token ids of an English text cut to `seq` tokens (its last
/// special token kept) for tokenized inputs, a smooth pattern for float inputs (images,
/// feature sequences); optional inputs are left out. The sizes come from the schema's
/// dimensions.
fn synthetic_inputs(model: &LoadedModel, batch: usize, seq: usize) -> anyhow::Result<NamedTensors> {
    let specs: Vec<TensorSpec> = model.info().io.inputs.clone();
    let mut inputs = NamedTensors::new();
    for spec in &specs {
        let image = spec.image().and_then(|i| i.fixed_size());
        let shape = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Ok(*n),
                Dim::Named(name) => match name.as_str() {
                    "batch" | "images" | "texts" => Ok(batch),
                    "sequence" | "tokens" => Ok(seq),
                    "height" | "width" if image.is_some() => {
                        let size = image.expect("checked");
                        Ok(if name == "height" {
                            size.height
                        } else {
                            size.width
                        })
                    }
                    other => bail!(
                        "input `{}`: no size for its dimension `{other}` (bench sizes batch, \
                         sequence and images of a fixed size)",
                        spec.name
                    ),
                },
            })
            .collect::<anyhow::Result<Vec<usize>>>()?;
        let count: usize = shape.iter().product();
        let data = if let Some(t) = spec.tokenization() {
            if seq > t.max_length {
                bail!(
                    "--seq {seq} is longer than the model's maximum of {} tokens",
                    t.max_length
                );
            }
            let row: Vec<i64> = match t.field {
                TokenField::Ids => text_ids(model, seq)?,
                TokenField::AttentionMask => vec![1; seq],
                TokenField::TypeIds => vec![0; seq],
            };
            let values = row.iter().copied().cycle().take(count);
            match spec.dtype {
                DType::Int32 => inferox::TensorData::Int32(values.map(|v| v as i32).collect()),
                _ => inferox::TensorData::Int64(values.collect()),
            }
        } else if spec.optional {
            continue;
        } else if spec.dtype == DType::Float32 {
            // Normalised pixels, and the features recurrent networks read, lie around [-2, 2]:
            // a smooth pattern, not constant.
            inferox::TensorData::Float32(
                (0..count).map(|i| ((i % 97) as f32 / 48.0) - 1.0).collect(),
            )
        } else {
            bail!(
                "input `{}` has no preprocessing hint, so bench cannot make it; time such a \
                 model with `inferox run --input` instead",
                spec.name
            );
        };
        inputs.insert(spec.name.clone(), HostTensor::new(shape, data)?);
    }
    Ok(inputs)
}

/// `seq` token ids of an English text, the tokenizer's special tokens included and the last
/// one kept at the end.
fn text_ids(model: &LoadedModel, seq: usize) -> anyhow::Result<Vec<i64>> {
    const TEXT: &str = "The quick brown fox jumps over the lazy dog while the river runs \
                        past the old mill and the children count the boats. ";
    let mut repeat = 1;
    loop {
        let ids = model
            .tokenize(&TEXT.repeat(repeat), true)
            .context("tokenizing the benchmark text")?;
        if ids.len() >= seq {
            let mut row: Vec<i64> = ids[..seq - 1].iter().map(|&i| i64::from(i)).collect();
            row.push(i64::from(*ids.last().expect("not empty")));
            return Ok(row);
        }
        if repeat > seq {
            bail!("the tokenizer makes too few tokens of the benchmark text");
        }
        repeat *= 2;
    }
}
