//! Registering an architecture from outside inferox.
//!
//! A crate of your own describes its model type once — config, I/O schema, candle model — and
//! registers it with `inferox::register!`: a model type, then its implementation per backend. Packages of that type then import, load
//! and run through inferox's normal loader, like the built-in architectures: no plugin library,
//! no dlopen.
//!
//! Run with `cargo run --example custom_architecture`.

use inferox::LoadPackage;
use inferox::backends::candle::{self as backend, Weights, candle_core as candle, to_host};
use inferox::manifest::ArtifactRole;
use inferox::registry::{Description, Implementation, ImportSource, ModelType};
use inferox::schema::{Dim, IoSchema, TensorSpec};
use inferox::{DType, ExecutionFormat, Family, LoadRequest, Model, NamedTensors, Result};

/// config.json of the model type `linear-classifier`.
#[derive(serde::Deserialize)]
struct Config {
    in_features: usize,
    num_labels: usize,
}

/// logits = features · weightᵀ + bias
struct LinearClassifier {
    weight: candle::Tensor,
    bias: candle::Tensor,
    device: candle::Device,
}

fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: Config = src.parse_config()?;
    let batch = Dim::named("batch");
    Ok(Description {
        io: IoSchema {
            inputs: vec![TensorSpec::new(
                "features",
                DType::Float32,
                vec![batch.clone(), Dim::Fixed(cfg.in_features)],
                "feature vectors",
            )],
            outputs: vec![TensorSpec::new(
                "logits",
                DType::Float32,
                vec![batch, Dim::Fixed(cfg.num_labels)],
                "one score per label",
            )],
            dims: Default::default(),
        },
        tasks: vec!["tabular-classification".into()],
    })
}

fn load(req: &LoadRequest<'_>) -> Result<Box<dyn Model>> {
    let cfg: Config = req.config()?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let device = inferox::backends::candle::device(req.options.device)?;
    let vb = weights.var_builder(candle::DType::F32, &device);
    let build = || -> candle::Result<LinearClassifier> {
        Ok(LinearClassifier {
            weight: vb.get((cfg.num_labels, cfg.in_features), "weight")?,
            bias: vb.get(cfg.num_labels, "bias")?,
            device: device.clone(),
        })
    };
    let model = build().map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl LinearClassifier {
    /// The logits for `features`. Inside a model, errors are the backend's: `?` takes both
    /// candle's and inferox's.
    fn logits(&self, features: &inferox::HostTensor) -> backend::Result<inferox::HostTensor> {
        let x = candle::Tensor::from_slice(
            features.as_f32().expect("checked against the schema"),
            features.shape(),
            &self.device,
        )?;
        let logits = x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        to_host(&logits)
    }
}

impl Model for LinearClassifier {
    fn forward(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let features = inputs.get("features").expect("checked against the schema");
        // `?` turns the backend's error into inferox's (a candle error becomes `Error::Backend`).
        Ok([("logits", self.logits(features)?)].into_iter().collect())
    }
}

// The model type (used at import), then its implementation on candle (used at load).
inferox::register!(
    ModelType::new("linear-classifier", Family::EncoderOnly, describe)
        .tasks(&["tabular-classification"])
        .reference("https://en.wikipedia.org/wiki/Linear_classifier"),
    Implementation::new(
        "linear-classifier",
        inferox::backends::candle::NAME,
        &[ExecutionFormat::Safetensors],
        load
    ),
);

/// Writes a Hugging Face-style model directory for the `linear-classifier` type.
pub fn write_model(dir: &std::path::Path) -> std::io::Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "linear-classifier", "in_features": 3, "num_labels": 2, "id2label": {"0": "no", "1": "yes"}}"#,
    )?;
    let weight: Vec<u8> = [1.0f32, 0.0, -1.0, 0.5, 0.5, 0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bias: Vec<u8> = [0.0f32, -1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = [
        (
            "weight",
            TensorView::new(Dtype::F32, vec![2, 3], &weight).unwrap(),
        ),
        ("bias", TensorView::new(Dtype::F32, vec![2], &bias).unwrap()),
    ];
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(tensors, None).unwrap(),
    )
}

#[allow(dead_code)]
fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    write_model(&dir.path().join("model"))?;
    let package = inferox::import(
        &dir.path().join("model"),
        &dir.path().join("linear.pkg"),
        &Default::default(),
        &mut |_| {},
    )?;
    let model = package.load(&Default::default())?;
    let features = inferox::HostTensor::from_f32(vec![1, 3], vec![2.0, 1.0, 0.0])?;
    let outputs = model.run(&[("features", features)].into_iter().collect())?;
    println!("labels {:?}", package.info().labels);
    println!(
        "logits {:?}",
        outputs.get("logits").unwrap().as_f32().unwrap()
    );
    Ok(())
}
