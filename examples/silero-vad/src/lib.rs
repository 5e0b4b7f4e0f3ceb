//! Silero VAD (<https://github.com/snakers4/silero-vad>), the 16 kHz voice-activity detector,
//! as an architecture registered from outside inferox.
//!
//! This crate describes the model type `silero-vad` (config, I/O schema, a candle model) and
//! registers it with [`inferox::register!`]; its packages then import, load and run through
//! inferox's normal loader like the built-in architectures. The weights are the
//! `silero_vad_16k.safetensors` file the `silero-vad` package on PyPI ships; [`import`] turns it
//! into an inferox package.
//!
//! The network, per chunk of 64 samples of context and 512 new ones (the layers of the
//! `silero-vad` package's `tinygrad_model.py`, whose names the weights carry): the chunk padded
//! by reflection to 640 samples, an STFT as a strided convolution (256-sample window, hop 128,
//! 129 bins as real and imaginary channels) and its magnitude, four Conv1d + ReLU layers, an
//! LSTM cell whose state carries over from chunk to chunk, and a 1×1 convolution with a sigmoid.

use inferox::backends::candle::packed::{self, PackedWeight};
use inferox::backends::candle::{
    self as backend, Weights, candle_core as candle, candle_nn, to_host,
};
use inferox::manifest::ArtifactRole;
use inferox::registry::{Description, Implementation, ImportSource, ModelType};
use inferox::schema::{Dim, DynamicDim, IoSchema, TensorSpec};
use inferox::{
    DType, Error, ExecutionFormat, Family, HostTensor, LoadRequest, LoadedModel, Model,
    NamedTensors, Result,
};
use std::path::Path;

/// The model type this crate registers.
pub const MODEL_TYPE: &str = "silero-vad";
/// Sampling rate of the 16 kHz model.
pub const SAMPLE_RATE: u32 = 16_000;
/// New samples per chunk.
pub const CHUNK: usize = 512;
/// Samples of the previous chunk that come before each chunk.
pub const CONTEXT: usize = 64;
/// The LSTM's size.
pub const HIDDEN: usize = 128;
/// STFT window (the convolution's kernel) and hop.
const WINDOW: usize = 256;
const HOP: usize = 128;
/// Reflection padding after the chunk.
const PAD: usize = 64;
/// Frequency bins (real and imaginary halves of the STFT convolution's channels).
const BINS: usize = WINDOW / 2 + 1;

/// config.json of a `silero-vad` package.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct Config {
    /// Must be `silero-vad`.
    pub model_type: String,
    /// Must be 16000: the 8 kHz model has other sizes.
    pub sampling_rate: u32,
}

fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: Config = src.parse_config()?;
    if cfg.sampling_rate != SAMPLE_RATE {
        return Err(Error::Config {
            path: src.config_path.to_path_buf(),
            message: format!(
                "field `sampling_rate` is {}; this architecture is the 16000 Hz model",
                cfg.sampling_rate
            ),
        });
    }
    let batch = Dim::named("batch");
    let state = vec![Dim::Fixed(2), batch.clone(), Dim::Fixed(HIDDEN)];
    Ok(Description {
        io: IoSchema {
            inputs: vec![
                TensorSpec::new(
                    "audio",
                    DType::Float32,
                    vec![batch.clone(), Dim::Fixed(CONTEXT + CHUNK)],
                    "the previous chunk's last 64 samples (zeros at the start), then 512 new \
                     samples, 16 kHz mono in [-1, 1]",
                ),
                TensorSpec {
                    optional: true,
                    ..TensorSpec::new(
                        "state",
                        DType::Float32,
                        state.clone(),
                        "the LSTM's h and c after the previous chunk (zeros when left out)",
                    )
                },
            ],
            outputs: vec![
                TensorSpec::new(
                    "speech_probability",
                    DType::Float32,
                    vec![batch, Dim::Fixed(1)],
                    "probability that the chunk holds speech",
                ),
                TensorSpec::new(
                    "next_state",
                    DType::Float32,
                    state,
                    "the state to give with the next chunk",
                ),
            ],
            dims: [(
                "batch".to_string(),
                DynamicDim {
                    max: None,
                    description: "independent audio streams".into(),
                },
            )]
            .into(),
        },
        tasks: vec!["voice-activity-detection".into()],
    })
}

/// A Conv1d with bias.
struct Conv {
    weight: candle::Tensor,
    bias: candle::Tensor,
    stride: usize,
}

impl Conv {
    fn load(
        vb: &candle_nn::VarBuilder,
        name: &str,
        shape: (usize, usize, usize),
        stride: usize,
    ) -> candle::Result<Conv> {
        Ok(Conv {
            weight: vb.get(shape, &format!("{name}.weight"))?,
            bias: vb
                .get(shape.0, &format!("{name}.bias"))?
                .reshape((1, shape.0, 1))?,
            stride,
        })
    }

    fn forward(&self, x: &candle::Tensor) -> candle::Result<candle::Tensor> {
        let padding = self.weight.dim(2)? / 2;
        x.conv1d(&self.weight, padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// Silero VAD on candle.
struct SileroVad {
    stft: candle::Tensor,
    convs: [Conv; 4],
    /// `weight_ih` and `weight_hh` transposed, `[128, 512]` each, and their biases summed.
    lstm: (candle::Tensor, candle::Tensor, candle::Tensor),
    head: Conv,
    /// The same layers packed for the backend's CPU kernel, when it runs here (f32 on a CPU
    /// with AVX-512): the network is small enough that candle's per-op overhead (im2col, the
    /// GEMM packing its operands on every call) would cost more than the arithmetic.
    packed: Option<PackedLayers>,
    dtype: candle::DType,
    device: candle::Device,
}

/// A layer as a product with a packed weight and a bias.
struct Product {
    weight: PackedWeight,
    bias: Vec<f32>,
}

impl Product {
    /// `x · wᵀ + b` for `rows` rows of `x`, on this thread (the products are tiny).
    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.weight.matmul_slices_here(x, rows, Some(&self.bias))
    }
}

/// The layers for the packed CPU kernel. Activations are row-major `[batch × frames,
/// channels]`; a convolution is a product over its im2col rows (taps outer, channels inner).
struct PackedLayers {
    stft: Product,
    /// Conv1d (kernel 3, padding 1) weights as `[out, 3 × in]`, their input channels and stride.
    convs: Vec<(Product, usize, usize)>,
    /// `[x, h] · [W_ih | W_hh]ᵀ + b_ih + b_hh`.
    lstm: Product,
    /// The 1×1 head: weight and bias.
    head: (Vec<f32>, f32),
}

/// A tensor's values as f32 on the host.
fn host(t: &candle::Tensor) -> candle::Result<Vec<f32>> {
    t.to_dtype(candle::DType::F32)?.flatten_all()?.to_vec1()
}

impl PackedLayers {
    fn new(m: &SileroVad) -> candle::Result<PackedLayers> {
        let product = |w: Vec<f32>, k: usize, n: usize, bias: Vec<f32>| Product {
            weight: PackedWeight::pack_transposed(&w, k, n, false),
            bias,
        };
        let stft = product(host(&m.stft)?, WINDOW, 2 * BINS, vec![0.0; 2 * BINS]);
        let mut convs = Vec::new();
        for conv in &m.convs {
            let (out, inp, taps) = conv.weight.dims3()?;
            let w = host(&conv.weight)?;
            // [out, in, taps] → [out, taps × in].
            let mut wt = vec![0f32; w.len()];
            for o in 0..out {
                for c in 0..inp {
                    for j in 0..taps {
                        wt[o * taps * inp + j * inp + c] = w[(o * inp + c) * taps + j];
                    }
                }
            }
            convs.push((
                product(wt, taps * inp, out, host(&conv.bias)?),
                inp,
                conv.stride,
            ));
        }
        let (w_ih, w_hh, bias) = &m.lstm;
        // Stored transposed ([128, 512]); the packed product wants [512, 256] rows.
        let (w_ih, w_hh) = (
            host(&w_ih.t()?.contiguous()?)?,
            host(&w_hh.t()?.contiguous()?)?,
        );
        let gates = 4 * HIDDEN;
        let mut w = Vec::with_capacity(gates * 2 * HIDDEN);
        for g in 0..gates {
            w.extend_from_slice(&w_ih[g * HIDDEN..(g + 1) * HIDDEN]);
            w.extend_from_slice(&w_hh[g * HIDDEN..(g + 1) * HIDDEN]);
        }
        let lstm = product(w, 2 * HIDDEN, gates, host(bias)?);
        let head = (host(&m.head.weight)?, host(&m.head.bias)?[0]);
        Ok(PackedLayers {
            stft,
            convs,
            lstm,
            head,
        })
    }

    /// Speech probabilities `[batch]` and the next state `[2, batch, 128]` of reflection-padded
    /// audio rows (`batch × (CONTEXT + CHUNK + PAD)`) from `state` (zeros when `None`).
    fn forward(&self, padded: &[f32], batch: usize, state: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let len = CONTEXT + CHUNK + PAD;
        let mut frames = (len - WINDOW) / HOP + 1;
        let mut x = Vec::with_capacity(batch * frames * WINDOW);
        for row in padded.chunks_exact(len) {
            for t in 0..frames {
                x.extend_from_slice(&row[t * HOP..t * HOP + WINDOW]);
            }
        }
        let spectrum = self.stft.forward(&x, batch * frames);
        let mut x: Vec<f32> = spectrum
            .chunks_exact(2 * BINS)
            .flat_map(|s| (0..BINS).map(move |f| (s[f] * s[f] + s[BINS + f] * s[BINS + f]).sqrt()))
            .collect();
        for &(ref conv, inp, stride) in &self.convs {
            let out_frames = (frames + 2 - 3) / stride + 1;
            let mut cols = vec![0f32; batch * out_frames * 3 * inp];
            for b in 0..batch {
                for t in 0..out_frames {
                    let dst = &mut cols[(b * out_frames + t) * 3 * inp..][..3 * inp];
                    for j in 0..3 {
                        // Input frame t·stride + j − 1; zeros outside (padding 1).
                        let src = (t * stride + j).checked_sub(1).filter(|&s| s < frames);
                        if let Some(s) = src {
                            dst[j * inp..(j + 1) * inp]
                                .copy_from_slice(&x[(b * frames + s) * inp..][..inp]);
                        }
                    }
                }
            }
            x = conv.forward(&cols, batch * out_frames);
            for v in &mut x {
                *v = v.max(0.0);
            }
            frames = out_frames;
        }
        // One frame is left: [batch, 128].
        let zeros = vec![0f32; 2 * batch * HIDDEN];
        let state = state.unwrap_or(&zeros);
        let (h, c) = state.split_at(batch * HIDDEN);
        let mut xh = Vec::with_capacity(batch * 2 * HIDDEN);
        for b in 0..batch {
            xh.extend_from_slice(&x[b * HIDDEN..(b + 1) * HIDDEN]);
            xh.extend_from_slice(&h[b * HIDDEN..(b + 1) * HIDDEN]);
        }
        let gates = self.lstm.forward(&xh, batch);
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let mut next = vec![0f32; 2 * batch * HIDDEN];
        let (h_next, c_next) = next.split_at_mut(batch * HIDDEN);
        let mut probabilities = Vec::with_capacity(batch);
        for b in 0..batch {
            let g = &gates[b * 4 * HIDDEN..(b + 1) * 4 * HIDDEN];
            let mut logit = self.head.1;
            for u in 0..HIDDEN {
                let (i, f, gg, o) = (g[u], g[HIDDEN + u], g[2 * HIDDEN + u], g[3 * HIDDEN + u]);
                let cu = sigmoid(f) * c[b * HIDDEN + u] + sigmoid(i) * gg.tanh();
                let hu = sigmoid(o) * cu.tanh();
                c_next[b * HIDDEN + u] = cu;
                h_next[b * HIDDEN + u] = hu;
                logit += self.head.0[u] * hu.max(0.0);
            }
            probabilities.push(sigmoid(logit));
        }
        (probabilities, next)
    }
}

fn load(req: &LoadRequest<'_>) -> Result<Box<dyn Model>> {
    let _: Config = req.config()?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let device = backend::device(req.options.device)?;
    let dtype = backend::dtype(req.dtype())?;
    if !matches!(dtype, candle::DType::F32 | candle::DType::F64) {
        return Err(Error::InvalidArgument(format!(
            "silero-vad computes in float32 or float64, not {}",
            req.dtype()
        )));
    }
    let vb = weights.var_builder(dtype, &device);
    let build = || -> candle::Result<SileroVad> {
        let lstm = vb.pp("lstm_cell");
        let gates = 4 * HIDDEN;
        Ok(SileroVad {
            stft: vb.get((2 * BINS, 1, WINDOW), "stft_conv.weight")?,
            convs: [
                Conv::load(&vb, "conv1", (128, BINS, 3), 1)?,
                Conv::load(&vb, "conv2", (64, 128, 3), 2)?,
                Conv::load(&vb, "conv3", (64, 64, 3), 2)?,
                Conv::load(&vb, "conv4", (HIDDEN, 64, 3), 1)?,
            ],
            lstm: (
                lstm.get((gates, HIDDEN), "weight_ih")?.t()?.contiguous()?,
                lstm.get((gates, HIDDEN), "weight_hh")?.t()?.contiguous()?,
                (lstm.get(gates, "bias_ih")? + lstm.get(gates, "bias_hh")?)?,
            ),
            head: Conv::load(&vb, "final_conv", (1, HIDDEN, 1), 1)?,
            packed: None,
            dtype,
            device: device.clone(),
        })
    };
    let mut model = build().map_err(|e| weights.explain(e))?;
    if dtype == candle::DType::F32 && device.is_cpu() && packed::supported() {
        model.packed = Some(PackedLayers::new(&model).map_err(|e| weights.explain(e))?);
    }
    Ok(Box::new(model))
}

impl SileroVad {
    fn outputs(
        &self,
        audio: &HostTensor,
        state: Option<&HostTensor>,
    ) -> backend::Result<NamedTensors> {
        let batch = audio.shape()[0];
        let samples = audio.as_f32().expect("checked against the schema");
        // Reflection padding after each chunk (PyTorch's "reflect": the edge not repeated).
        let n = CONTEXT + CHUNK;
        let mut padded = Vec::with_capacity(batch * (n + PAD));
        for row in samples.chunks_exact(n) {
            padded.extend_from_slice(row);
            padded.extend((0..PAD).map(|i| row[n - 2 - i]));
        }
        if let Some(p) = &self.packed {
            let (probabilities, next) =
                p.forward(&padded, batch, state.map(|s| s.as_f32().expect("checked")));
            let mut out = NamedTensors::new();
            out.insert(
                "speech_probability",
                HostTensor::from_f32(vec![batch, 1], probabilities)?,
            );
            out.insert(
                "next_state",
                HostTensor::from_f32(vec![2, batch, HIDDEN], next)?,
            );
            return Ok(out);
        }
        let x = candle::Tensor::from_vec(padded, (batch, 1, n + PAD), &self.device)?
            .to_dtype(self.dtype)?;
        let spectrum = x.conv1d(&self.stft, 0, HOP, 1, 1)?;
        let magnitude = (spectrum.narrow(1, 0, BINS)?.sqr()?
            + spectrum.narrow(1, BINS, BINS)?.sqr()?)?
        .sqrt()?;
        let mut x = magnitude;
        for conv in &self.convs {
            x = conv.forward(&x)?.relu()?;
        }
        // One frame is left: [batch, 128, 1].
        let x = x.squeeze(2)?;
        let (h, c) = match state {
            Some(s) => {
                let s = candle::Tensor::from_slice(
                    s.as_f32().expect("checked"),
                    (2, batch, HIDDEN),
                    &self.device,
                )?
                .to_dtype(self.dtype)?;
                (s.get(0)?, s.get(1)?)
            }
            None => {
                let z = candle::Tensor::zeros((batch, HIDDEN), self.dtype, &self.device)?;
                (z.clone(), z)
            }
        };
        let (w_ih, w_hh, bias) = &self.lstm;
        let gates = (x.matmul(w_ih)? + h.matmul(w_hh)?)?.broadcast_add(bias)?;
        let gate = |i: usize| gates.narrow(1, i * HIDDEN, HIDDEN);
        let sigmoid = candle_nn::ops::sigmoid;
        let c = ((sigmoid(&gate(1)?)? * c)? + (sigmoid(&gate(0)?)? * gate(2)?.tanh()?)?)?;
        let h = (sigmoid(&gate(3)?)? * c.tanh()?)?;
        let logit = self.head.forward(&h.relu()?.unsqueeze(2)?)?;
        let probability = sigmoid(&logit)?.reshape((batch, 1))?;
        let mut out = NamedTensors::new();
        let f32 = |t: candle::Tensor| t.to_dtype(candle::DType::F32);
        out.insert("speech_probability", to_host(&f32(probability)?)?);
        out.insert(
            "next_state",
            to_host(&f32(candle::Tensor::stack(&[h, c], 0)?)?)?,
        );
        Ok(out)
    }
}

impl Model for SileroVad {
    fn forward(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let audio = inputs.get("audio").expect("checked against the schema");
        Ok(self.outputs(audio, inputs.get("state"))?)
    }
}

inferox::register!(
    ModelType::new(MODEL_TYPE, Family::Recurrent, describe)
        .tasks(&["voice-activity-detection"])
        .reference(
            "https://github.com/snakers4/silero-vad/blob/master/src/silero_vad/tinygrad_model.py"
        ),
    Implementation::new(
        MODEL_TYPE,
        inferox::backends::candle::NAME,
        &[ExecutionFormat::Safetensors],
        load
    ),
);

/// Imports `weights` (the `silero_vad_16k.safetensors` of the `silero-vad` PyPI package) into
/// a package at `output`.
pub fn import(weights: &Path, output: &Path) -> Result<inferox::Package> {
    let src = tempfile_dir(output)?;
    let config = Config {
        model_type: MODEL_TYPE.into(),
        sampling_rate: SAMPLE_RATE,
    };
    let written = std::fs::write(
        src.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("a plain struct serialises"),
    )
    .and_then(|_| std::fs::copy(weights, src.join("model.safetensors")).map(drop));
    let result = written
        .map_err(|e| Error::Io {
            path: weights.to_path_buf(),
            error: e,
        })
        .and_then(|_| {
            inferox::import(
                &src,
                output,
                &inferox::ImportOptions::default(),
                &mut |_| {},
            )
        });
    let _ = std::fs::remove_dir_all(&src);
    result
}

/// A directory beside `output` for the import's source (removed after).
fn tempfile_dir(output: &Path) -> Result<std::path::PathBuf> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let dir = parent.join(format!(".{name}.silero-vad-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        path: dir.clone(),
        error: e,
    })?;
    Ok(dir)
}

/// Streams audio through a loaded `silero-vad` model a chunk at a time, carrying the context
/// samples and the LSTM state from chunk to chunk, as the `silero-vad` package's wrappers do.
pub struct Detector {
    model: LoadedModel,
    state: Option<HostTensor>,
    context: Vec<f32>,
}

impl Detector {
    /// A detector at the start of a stream.
    pub fn new(model: LoadedModel) -> Detector {
        Detector {
            model,
            state: None,
            context: vec![0.0; CONTEXT],
        }
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.state = None;
        self.context = vec![0.0; CONTEXT];
    }

    /// The speech probability of the next chunk of up to [`CHUNK`] samples (a shorter last
    /// chunk is padded with zeros).
    pub fn push(&mut self, chunk: &[f32]) -> Result<f32> {
        if chunk.len() > CHUNK {
            return Err(Error::InvalidArgument(format!(
                "a chunk is at most {CHUNK} samples, not {}",
                chunk.len()
            )));
        }
        let mut audio = std::mem::take(&mut self.context);
        audio.extend_from_slice(chunk);
        audio.resize(CONTEXT + CHUNK, 0.0);
        self.context = audio[CHUNK..].to_vec();
        let mut inputs = NamedTensors::new();
        inputs.insert(
            "audio",
            HostTensor::from_f32(vec![1, CONTEXT + CHUNK], audio)?,
        );
        if let Some(state) = self.state.take() {
            inputs.insert("state", state);
        }
        let mut out = self.model.run(&inputs)?;
        self.state = out.remove("next_state");
        let p = out
            .get("speech_probability")
            .and_then(|t| t.as_f32())
            .and_then(|v| v.first().copied())
            .expect("checked against the schema");
        Ok(p)
    }

    /// The speech probability of every chunk of `samples`, from the start of a stream.
    pub fn probabilities(&mut self, samples: &[f32]) -> Result<Vec<f32>> {
        self.reset();
        samples.chunks(CHUNK).map(|c| self.push(c)).collect()
    }
}

/// Reads a WAV file as 16 kHz mono samples in [-1, 1] (channels averaged; integer samples
/// divided by 2^(bits − 1)). Other rates are refused: resample first (e.g.
/// `sox in.wav -r 16000 out.wav`).
pub fn read_wav(path: &Path) -> Result<Vec<f32>> {
    let err = |message: String| Error::Input {
        name: path.display().to_string(),
        message,
    };
    let mut reader =
        hound::WavReader::open(path).map_err(|e| err(format!("not a readable WAV file: {e}")))?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE {
        return Err(err(format!(
            "sampled at {} Hz; the model takes {SAMPLE_RATE} Hz (resample first, e.g. `sox {} -r 16000 out.wav`)",
            spec.sample_rate,
            path.display()
        )));
    }
    let channels = spec.channels.max(1) as usize;
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
        }
    }
    .map_err(|e| err(format!("damaged sample data: {e}")))?;
    Ok(samples
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect())
}
