//! `inferox run`.

use super::print_json;
use anyhow::{Context, bail};
use inferox::LoadPackage;
use inferox::manifest::Pooling;
use inferox::pipeline::cosine;
use inferox::{EmbedOptions, LoadOptions, LoadedModel, NamedTensors};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Package directory, or the id of a package in the store (`inferox packages`). A bundle
    /// (`inferox bundle`) runs the package it carries when none is given.
    package: Option<String>,
    /// Check every file's sha256 against metadata.json before loading.
    #[arg(long)]
    verify: bool,
    /// A text to run (repeat for a batch).
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    /// An image file to run (repeat for a batch): JPEG, PNG, GIF, BMP, TIFF or WebP, made into
    /// the model's pixel input as the package's image hint says (transformers' image
    /// processor). An image classifier prints its top labels with softmax scores.
    #[arg(long = "image", value_name = "FILE", conflicts_with_all = ["texts", "inputs"])]
    images: Vec<PathBuf>,
    /// With --image on a zero-shot model (CLIP): a candidate label (repeat); each image gets
    /// the labels ranked by the model's image-text similarity, as a classifier's would be.
    #[arg(long = "label", value_name = "TEXT", requires = "images")]
    labels: Vec<String>,
    /// With --image on an image classifier: labels to print per image, best first.
    #[arg(long, default_value_t = 5, value_name = "K")]
    top_k: usize,
    /// A raw input tensor from a NumPy file (repeat for each input).
    #[arg(long = "input", value_name = "NAME=FILE.npy", conflicts_with = "texts")]
    inputs: Vec<String>,
    #[command(flatten)]
    placement: super::Placement,
    /// Quantized models: take float32 inputs and return float32 outputs, (de)quantizing at the
    /// boundary with the scale and zero point in the schema.
    #[arg(long)]
    dequantize: bool,
    /// Print outputs even when they hold NaN or infinity (otherwise that is an error naming
    /// the output; in --json they print as null).
    #[arg(long)]
    allow_non_finite: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Also write every output as NAME.npy into this directory.
    #[arg(long, value_name = "DIR")]
    save_outputs: Option<PathBuf>,
    /// Write the tensors preprocessing made (input_ids, attention_mask, ... for texts; the
    /// tensors given with --input) as NAME.npy into this directory before the model runs:
    /// what to compare with Python's tokenizer when results differ. Texts are saved as one
    /// batch in the order given, padded to the longest.
    #[arg(long, value_name = "DIR")]
    save_inputs: Option<PathBuf>,
    /// Print the model's outputs by name, even for a sentence-embedding package or an image
    /// classifier.
    #[arg(long)]
    raw: bool,
    /// With embeddings: print the cosine similarity of every pair of texts.
    #[arg(long)]
    similarity: bool,
    /// Pooling for embeddings: mean, cls, max, mean_sqrt_len (default: the package's).
    #[arg(long)]
    pooling: Option<String>,
    /// L2-normalise embeddings (default: the package's setting).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    normalize: Option<bool>,
    /// Most texts per forward pass when embedding. Texts are tokenized first and grouped by
    /// token count, so short texts are not padded to a long one's length.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Refuse texts longer than the model's maximum instead of truncating them.
    #[arg(long)]
    no_truncate: bool,
}

fn read_inputs(specs: &[String]) -> anyhow::Result<NamedTensors> {
    let mut inputs = NamedTensors::new();
    for spec in specs {
        let (name, file) = spec
            .split_once('=')
            .with_context(|| format!("--input `{spec}`: expected NAME=FILE.npy"))?;
        if inputs.get(name).is_some() {
            bail!("--input `{name}` is given twice");
        }
        inputs.insert(name, inferox::npy::read_npy(file.as_ref())?);
    }
    Ok(inputs)
}

fn print_outputs(outputs: &NamedTensors, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        let map: serde_json::Map<String, serde_json::Value> = outputs
            .iter()
            .map(|(name, t)| {
                (
                    name.to_string(),
                    json!({"dtype": t.dtype(), "shape": t.shape(), "data": t.data().to_f64_vec()}),
                )
            })
            .collect();
        return print_json(&json!({ "outputs": map }));
    }
    for (name, t) in outputs.iter() {
        let values = t.data().to_f64_vec();
        let preview: Vec<String> = values.iter().take(6).map(|v| format!("{v:.5}")).collect();
        let more = if values.len() > 6 { ", ..." } else { "" };
        println!(
            "{name}: {} {:?} [{}{more}]",
            t.dtype(),
            t.shape(),
            preview.join(", ")
        );
    }
    Ok(())
}

/// Writes `tensors` as NAME.npy files into `dir` (created if missing).
fn save_tensors(dir: &std::path::Path, tensors: &NamedTensors) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    for (name, t) in tensors.iter() {
        let file = format!("{name}.npy");
        inferox::package::check_relative("tensor name", &file)?;
        inferox::npy::write_npy(&dir.join(file), t)?;
    }
    Ok(())
}

/// `--image`: preprocess, run, and for a classifier print the top labels.
fn images(model: &LoadedModel, args: &Args) -> anyhow::Result<()> {
    let decoded = args
        .images
        .iter()
        .map(|p| inferox::image::RgbImage::open(p))
        .collect::<inferox::Result<Vec<_>>>()?;
    let mut inputs = model.preprocess_images(&decoded)?;
    let zero_shot = !args.labels.is_empty();
    if zero_shot {
        if model.io().output("logits_per_image").is_none() {
            bail!(
                "--label: this {} package does not score images against texts (that takes a \
                 CLIP-like model with a `logits_per_image` output)",
                model.info().model_type
            );
        }
        let labels: Vec<&str> = args.labels.iter().map(String::as_str).collect();
        for (name, t) in model.encode(&labels, !args.no_truncate)?.inputs.iter() {
            inputs.insert(name, t.clone());
        }
    }
    if let Some(dir) = &args.save_inputs {
        save_tensors(dir, &inputs)?;
    }
    let outputs = model.run(&inputs)?;
    if let Some(dir) = &args.save_outputs {
        save_tensors(dir, &outputs)?;
    }
    let classifier = model
        .info()
        .tasks
        .iter()
        .any(|t| t == "image-classification");
    let (name, labels) = match (zero_shot, classifier) {
        _ if args.raw => return print_outputs(&outputs, args.json),
        (true, _) => (
            "logits_per_image",
            args.labels
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, l)| (i as u32, l))
                .collect(),
        ),
        (false, true) => ("logits", model.info().labels.clone()),
        (false, false) => match outputs.get("image_embeds") {
            Some(e) => {
                let names: Vec<String> = args
                    .images
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                return print_embeddings(e, &names, args.json);
            }
            None => return print_outputs(&outputs, args.json),
        },
    };
    let logits = outputs
        .get(name)
        .with_context(|| format!("the model gave no `{name}`"))?;
    let predictions = inferox::image::top_k(logits, &labels, args.top_k.max(1))?;
    if args.json {
        return print_json(&json!({
            "predictions": predictions,
            "outputs": {name: {"dtype": logits.dtype(), "shape": logits.shape(),
                                "data": logits.data().to_f64_vec()}},
        }));
    }
    for (path, preds) in args.images.iter().zip(&predictions) {
        println!("{}", path.display());
        for p in preds {
            println!("  {:.4}  {}", p.score, p.label);
        }
    }
    Ok(())
}

/// Embeddings (`[items, dimension]`) of the images or texts named in `items`, as `run --text`
/// prints sentence embeddings.
fn print_embeddings(
    embeddings: &inferox::HostTensor,
    items: &[impl std::fmt::Display],
    json_out: bool,
) -> anyhow::Result<()> {
    let values = embeddings.data().to_f64_vec();
    let dim = embeddings.shape().last().copied().unwrap_or(0).max(1);
    let rows: Vec<&[f64]> = values.chunks(dim).collect();
    if json_out {
        return print_json(&json!({"dimension": dim, "embeddings": rows}));
    }
    for (i, (item, v)) in items.iter().zip(&rows).enumerate() {
        let preview: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        println!(
            "[{i}] {dim} dims, norm {norm:.4}, [{}, ...]  {item}",
            preview.join(", ")
        );
    }
    Ok(())
}

fn embeddings(model: &LoadedModel, args: &Args, texts: &[&str]) -> anyhow::Result<()> {
    let options = EmbedOptions {
        pooling: args
            .pooling
            .as_deref()
            .map(str::parse::<Pooling>)
            .transpose()?,
        normalize: args.normalize,
        batch_size: args.batch_size,
        truncate: !args.no_truncate,
    };
    let result = model.embed_with(texts, &options)?;
    let max = model
        .info()
        .io
        .inputs
        .iter()
        .find_map(|s| s.tokenization())
        .map_or(0, |t| t.max_length);
    for &i in &result.truncated {
        eprintln!("note: text {i} was truncated to {max} tokens");
    }
    let vectors = &result.vectors;
    let similarity: Option<Vec<Vec<f32>>> = args.similarity.then(|| {
        vectors
            .iter()
            .map(|a| vectors.iter().map(|b| cosine(a, b)).collect())
            .collect()
    });
    if let Some(dir) = &args.save_outputs {
        let dim = vectors.first().map_or(0, Vec::len);
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let t = inferox::HostTensor::from_f32(vec![vectors.len(), dim], flat)?;
        save_tensors(dir, &[("embeddings", t)].into_iter().collect())?;
    }
    if args.json {
        let mut doc = json!({
            "model_type": model.info().model_type,
            "backend": model.backend(),
            "dimension": vectors.first().map_or(0, Vec::len),
            "embeddings": vectors,
        });
        if let Some(s) = similarity {
            doc["similarity"] = json!(s);
        }
        doc["truncated"] = json!(result.truncated);
        return print_json(&doc);
    }
    for (i, (text, v)) in texts.iter().zip(vectors).enumerate() {
        let preview: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let shown: String = text.chars().take(48).collect();
        let ellipsis = if text.chars().count() > 48 { "..." } else { "" };
        println!(
            "[{i}] {} dims, norm {norm:.4}, [{}, ...]  {shown:?}{ellipsis}",
            v.len(),
            preview.join(", ")
        );
    }
    if let Some(s) = similarity {
        println!("cosine similarity");
        let header: Vec<String> = (0..s.len())
            .map(|j| format!("{:>8}", format!("[{j}]")))
            .collect();
        println!("     {}", header.join(""));
        for (i, row) in s.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|x| format!("{x:>8.4}")).collect();
            println!("{:>4} {}", format!("[{i}]"), cells.join(""));
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.texts.is_empty() && args.inputs.is_empty() && args.images.is_empty() {
        bail!(
            "nothing to run: give --text TEXT, --image FILE or --input NAME=FILE.npy (see \
             `inferox run --help`)"
        );
    }
    let package = super::open_package(args.package.as_deref())?;
    if args.verify {
        package.verify()?;
    }
    let options = LoadOptions {
        dequantize: args.dequantize,
        allow_non_finite: args.allow_non_finite,
        ..args.placement.options()?
    };
    let model = package.load(&options)?;
    if !args.images.is_empty() {
        return images(&model, &args);
    }
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    if let Some(dir) = &args.save_inputs {
        let inputs = match args.inputs.is_empty() {
            true => model.encode(&texts, !args.no_truncate)?.inputs,
            false => read_inputs(&args.inputs)?,
        };
        save_tensors(dir, &inputs)?;
    }
    if !args.inputs.is_empty() {
        let inputs = read_inputs(&args.inputs)?;
        let outputs = model.run(&inputs)?;
        if let Some(dir) = &args.save_outputs {
            save_tensors(dir, &outputs)?;
        }
        return print_outputs(&outputs, args.json);
    }
    let embedding = model.info().sentence_embedding.is_some() || args.pooling.is_some();
    if embedding && !args.raw {
        return embeddings(&model, &args, &texts);
    }
    let encoded = model.encode(&texts, !args.no_truncate)?;
    let outputs = model.run(&encoded.inputs)?;
    if let Some(dir) = &args.save_outputs {
        save_tensors(dir, &outputs)?;
    }
    match outputs.get("text_embeds") {
        Some(e) if !args.raw => {
            let quoted: Vec<String> = texts.iter().map(|t| format!("{t:?}")).collect();
            print_embeddings(e, &quoted, args.json)
        }
        _ => print_outputs(&outputs, args.json),
    }
}
