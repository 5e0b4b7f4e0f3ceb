//! The torch backend (libtorch through tch): one package, the same weight files, two backends.
//! Every tiny golden BERT-family model and the real all-MiniLM-L6-v2 must give the same outputs
//! on torch as on candle (max abs <= 1e-4) and as transformers; a TorchScript export
//! (tests/golden/generate_torchscript.py) must match the outputs Python computed with it.
//! Vision models, recurrent networks (LSTM, GRU, RNN) and T5 agree across backends the same way.

mod common;

use common::{bert_cases, fixtures, import, max_abs_diff, minilm_dir, read_npy_dir};
use inferox::LoadPackage;
use inferox::import::TorchScriptExport;
use inferox::{Error, ImportOptions, LoadOptions, NamedTensors, Package};
use sha2::Digest;
use std::path::Path;

const TOLERANCE: f32 = 1e-4;

fn on(backend: &str) -> LoadOptions {
    LoadOptions {
        backend: Some(backend.into()),
        ..Default::default()
    }
}

fn assert_close(what: &str, a: &NamedTensors, b: &NamedTensors, tol: f32) {
    let names = |t: &NamedTensors| {
        let mut v: Vec<String> = t.names().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "{what}: output names differ");
    for (name, x) in a.iter() {
        let err = max_abs_diff(x, b.get(name).unwrap());
        assert!(
            err <= tol,
            "{what}: `{name}` max abs difference {err} > {tol}"
        );
    }
}

/// Every file under `backends/` in the package.
fn backend_files(package: &Package) -> Vec<String> {
    let root = package.root().join("backends");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            files.push(
                f.strip_prefix(package.root())
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
    }
    files.sort();
    files
}

#[test]
fn tiny_goldens_agree_across_backends_and_with_transformers() {
    for case in bert_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (_dir, package) = import(&case.join("model"));
        let info = package.info();
        // One copy of the weights: both backends list the same files, all under candle's folder.
        assert_eq!(
            info.backends["torch"].artifacts, info.backends["candle"].artifacts,
            "{name}"
        );
        assert!(
            backend_files(&package)
                .iter()
                .all(|f| f.starts_with("backends/candle/")),
            "{name}: {:?}",
            backend_files(&package)
        );
        let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
        let candle = package.load(&on("candle")).unwrap();
        let torch = package.load(&on("torch")).unwrap();
        assert_eq!(torch.backend(), "torch");
        let a = candle.run(&inputs).unwrap();
        let b = torch.run(&inputs).unwrap();
        assert_close(&format!("{name} candle vs torch"), &a, &b, TOLERANCE);
        let expected: NamedTensors = read_npy_dir(&case.join("expected")).into_iter().collect();
        assert_close(
            &format!("{name} torch vs transformers"),
            &b,
            &expected,
            TOLERANCE,
        );
    }
}

#[test]
fn text_with_padding_agrees_across_backends() {
    let case = fixtures().join("bert/bert_gelu_pooler");
    let (_dir, package) = import(&case.join("model"));
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(case.join("texts.json")).unwrap()).unwrap();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let torch = package.load(&on("torch")).unwrap();
    let encoded = torch.encode(&texts, true).unwrap();
    let mask = encoded.inputs.get("attention_mask").unwrap();
    assert!(mask.as_i64().unwrap().contains(&0), "the batch is padded");
    let b = torch.run(&encoded.inputs).unwrap();
    let a = package
        .load(&on("candle"))
        .unwrap()
        .run(&encoded.inputs)
        .unwrap();
    assert_close("text candle vs torch", &a, &b, TOLERANCE);
    let expected: NamedTensors = read_npy_dir(&case.join("text_expected"))
        .into_iter()
        .collect();
    assert_close("text torch vs transformers", &b, &expected, TOLERANCE);
}

#[test]
fn minilm_agrees_across_backends() {
    let (_dir, package) = import(&minilm_dir());
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(fixtures().join("minilm/texts.json")).unwrap())
            .unwrap();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let candle = package.load(&on("candle")).unwrap();
    let torch = package.load(&on("torch")).unwrap();
    // Each text alone (no padding; the long one truncated to 256 tokens): every value agrees.
    for text in &texts {
        let encoded = candle.encode(&[text], true).unwrap();
        let a = candle.run(&encoded.inputs).unwrap();
        let b = torch.run(&encoded.inputs).unwrap();
        assert_close("MiniLM, one text", &a, &b, TOLERANCE);
    }
    // A padded batch: every real token agrees. (The rows of padding tokens are computed but
    // meaningless, and the backends' attention kernels round them differently: ~3e-4.)
    let encoded = candle.encode(&texts, true).unwrap();
    let mask = encoded.inputs.get("attention_mask").unwrap();
    let a = candle.run(&encoded.inputs).unwrap();
    let b = torch.run(&encoded.inputs).unwrap();
    let (x, y) = (
        a.get("last_hidden_state").unwrap(),
        b.get("last_hidden_state").unwrap(),
    );
    let hidden = x.shape()[2];
    let mut worst = 0.0f32;
    for (token, _) in mask
        .as_i64()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, m)| **m == 1)
    {
        let rows = token * hidden..(token + 1) * hidden;
        let (p, q) = (
            &x.as_f32().unwrap()[rows.clone()],
            &y.as_f32().unwrap()[rows],
        );
        worst = p
            .iter()
            .zip(q)
            .map(|(p, q)| (p - q).abs())
            .fold(worst, f32::max);
    }
    assert!(
        worst <= TOLERANCE,
        "padded batch: real tokens differ by {worst}"
    );
    // And the sentence embeddings built on them.
    let ea = candle.embed(&texts).unwrap();
    let eb = torch.embed(&texts).unwrap();
    let worst = ea
        .iter()
        .flatten()
        .zip(eb.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= TOLERANCE, "embeddings differ by {worst}");
}

#[test]
fn a_package_listing_only_candle_runs_on_torch_from_the_same_files() {
    // A candle-only build writes a manifest without a torch entry; the torch build reads the
    // same config.json + safetensors through the candle entry's artifacts.
    let case = fixtures().join("bert/bert_gelu_pooler");
    let (_dir, package) = import(&case.join("model"));
    let path = package.root().join("model_info.json");
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    info["backends"].as_object_mut().unwrap().remove("torch");
    let bytes = serde_json::to_vec_pretty(&info).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    // Keep metadata.json's record of model_info.json true, as a candle-only import writes it.
    let meta_path = package.root().join("metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    for file in meta["files"].as_array_mut().unwrap() {
        if file["path"] == "model_info.json" {
            file["size"] = bytes.len().into();
            file["sha256"] = format!("{:x}", sha2::Sha256::digest(&bytes)).into();
        }
    }
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let package = Package::open(package.root()).unwrap();
    assert!(!package.info().backends.contains_key("torch"));
    let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    let out = package.load(&on("torch")).unwrap().run(&inputs).unwrap();
    let expected: NamedTensors = read_npy_dir(&case.join("expected")).into_iter().collect();
    assert_close("candle-only manifest on torch", &out, &expected, TOLERANCE);
}

fn torchscript_package(dir: &Path) -> Package {
    let case = fixtures().join("torchscript/bert_gelu_pooler");
    #[derive(serde::Deserialize)]
    struct Order {
        inputs: Vec<String>,
        outputs: Vec<String>,
    }
    let order: Order =
        serde_json::from_slice(&std::fs::read(case.join("torchscript.json")).unwrap()).unwrap();
    let options = ImportOptions {
        torchscript: Some(TorchScriptExport {
            path: case.join("model.pt"),
            inputs: order.inputs,
            outputs: order.outputs,
        }),
        ..Default::default()
    };
    inferox::import(
        &fixtures().join("bert/bert_gelu_pooler/model"),
        &dir.join("pkg"),
        &options,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn torchscript_artifact_matches_python() {
    let dir = tempfile::tempdir().unwrap();
    let package = torchscript_package(dir.path());
    package.verify().unwrap();
    let torch = &package.info().backends["torch"];
    assert_eq!(torch.format, inferox::ExecutionFormat::Torchscript);
    assert_eq!(
        torch.inputs,
        ["input_ids", "attention_mask", "token_type_ids"]
    );
    assert_eq!(torch.outputs, ["last_hidden_state", "pooler_output"]);
    let case = fixtures().join("torchscript/bert_gelu_pooler");
    let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    let model = package.load(&on("torch")).unwrap();
    let out = model.run(&inputs).unwrap();
    let expected: NamedTensors = read_npy_dir(&case.join("expected")).into_iter().collect();
    assert_close("TorchScript vs Python", &out, &expected, 1e-5);
    // The candle backend of the same package reads the safetensors and agrees too.
    let candle = package.load(&on("candle")).unwrap().run(&inputs);
    assert_close("TorchScript vs candle", &out, &candle.unwrap(), TOLERANCE);
    // Positional inputs cannot be left out: a clear error, not a wrong call.
    let mut partial = inputs.clone();
    partial.remove("token_type_ids");
    let e = model.run(&partial).unwrap_err();
    assert!(
        matches!(&e, Error::Input { name, .. } if name == "token_type_ids"),
        "{e}"
    );
}

#[test]
fn torchscript_order_must_name_schema_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let case = fixtures().join("torchscript/bert_gelu_pooler");
    let options = ImportOptions {
        torchscript: Some(TorchScriptExport {
            path: case.join("model.pt"),
            inputs: vec!["input_ids".into(), "pixel_values".into()],
            outputs: vec!["last_hidden_state".into()],
        }),
        ..Default::default()
    };
    let e = inferox::import(
        &fixtures().join("bert/bert_gelu_pooler/model"),
        &dir.path().join("pkg"),
        &options,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`pixel_values` is not in the model's I/O schema"),
        "{e}"
    );
    assert!(!dir.path().join("pkg").exists(), "no half package is left");
}

#[test]
fn damaged_torchscript_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let package = torchscript_package(dir.path());
    let pt = package.root().join("backends/torch/model.pt");
    let bytes = std::fs::read(&pt).unwrap();
    std::fs::write(&pt, &bytes[..bytes.len() / 2]).unwrap();
    let e = package
        .load(&on("torch"))
        .err()
        .expect("a truncated module fails to load");
    let text = e.to_string();
    assert!(
        text.contains("model.pt") && text.contains("not a loadable TorchScript module"),
        "{text}"
    );
}

#[test]
fn threads_and_devices_are_checked() {
    let case = fixtures().join("bert/bert_gelu_pooler");
    let (_dir, package) = import(&case.join("model"));
    let threads = LoadOptions {
        threads: Some(1),
        ..on("torch")
    };
    assert!(package.load(&threads).is_ok());
    let e = package
        .load(&LoadOptions {
            threads: Some(1),
            ..on("candle")
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("RAYON_NUM_THREADS"), "{e}");
    if inferox::backends::torch::tch::Cuda::device_count() == 0 {
        let e = package
            .load(&LoadOptions {
                device: inferox::Device::Cuda(0),
                ..on("torch")
            })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cuda:0") && e.contains("0 CUDA device"), "{e}");
    }
}

/// The tiny ViTs and ResNets: one package, both backends (ViTs also at another size, position
/// embeddings interpolated), against each other and against transformers.
#[test]
fn vision_goldens_agree_across_backends_and_with_transformers() {
    for name in [
        "vit_classifier",
        "vit_pooler",
        "resnet_basic",
        "resnet_bottleneck",
    ] {
        let case = fixtures().join("vision").join(name);
        let (_dir, package) = import(&case.join("model"));
        let candle = package.load(&on("candle")).unwrap();
        let torch = package.load(&on("torch")).unwrap();
        let sizes: &[(&str, &str)] = match name.starts_with("vit") {
            true => &[("inputs", "expected"), ("inputs_48x40", "expected_48x40")],
            false => &[("inputs", "expected")],
        };
        for &(inputs, expected) in sizes {
            let inputs: NamedTensors = read_npy_dir(&case.join(inputs)).into_iter().collect();
            let a = candle.run(&inputs).unwrap();
            let b = torch.run(&inputs).unwrap();
            assert_close(
                &format!("{name} {expected} candle vs torch"),
                &a,
                &b,
                TOLERANCE,
            );
            for (out, want) in read_npy_dir(&case.join(expected)) {
                let err = max_abs_diff(b.get(&out).unwrap(), &want);
                assert!(err <= TOLERANCE, "{name} {expected} torch `{out}`: {err}");
            }
        }
    }
}

/// LSTM, GRU and RNN: the same package on libtorch's own recurrent operators and on candle,
/// both against torch.nn's outputs (tests/golden/generate_recurrent.py).
#[test]
fn recurrent_goldens_agree_across_backends_and_with_torch_nn() {
    let dir = fixtures().join("recurrent");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 8, "the generator's eight cases");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (_dir, package) = import(&case.join("model"));
        let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
        let a = package.load(&on("candle")).unwrap().run(&inputs).unwrap();
        let b = package.load(&on("torch")).unwrap().run(&inputs).unwrap();
        assert_close(&format!("{name} candle vs torch"), &a, &b, 1e-5);
        for (out, want) in read_npy_dir(&case.join("expected")) {
            let err = max_abs_diff(b.get(&out).unwrap(), &want);
            assert!(err <= 1e-5, "{name} torch `{out}`: {err}");
        }
    }
}

/// T5 and mT5 (tests/golden/generate_t5.py) on torch: teacher-forced logits against
/// transformers and against candle, greedy generations equal to `model.generate`, and the
/// decoder's KV cache against a full recompute, through the same generation engine.
#[test]
fn t5_goldens_agree_across_backends_and_with_transformers() {
    use inferox::generate::GenerateOptions;
    use inferox::model::DecodeStep;
    for case in ["t5", "t5-v1_1", "mt5", "t5-legacy"] {
        let root = fixtures().join("t5").join(case);
        let (_dir, package) = import(&root.join("model"));
        let reference = root.join("reference");
        let read = |n: &str| inferox::npy::read_npy(&reference.join(format!("{n}.npy"))).unwrap();
        let inputs: NamedTensors = [
            "input_ids",
            "attention_mask",
            "decoder_input_ids",
            "decoder_attention_mask",
        ]
        .into_iter()
        .map(|n| (n, read(n)))
        .collect();
        let torch = package.load(&on("torch")).unwrap();
        let a = package.load(&on("candle")).unwrap().run(&inputs).unwrap();
        let b = torch.run(&inputs).unwrap();
        // Padded target positions included: both backends compute them the same way.
        assert_close(&format!("{case} candle vs torch"), &a, &b, TOLERANCE);
        let (got, want) = (b.get("logits").unwrap(), read("logits"));
        let vocab = want.shape()[2];
        let mask = read("decoder_attention_mask");
        let mut worst = 0f32;
        for (pos, &m) in mask.as_i64().unwrap().iter().enumerate() {
            if m == 1 {
                let rows = pos * vocab..(pos + 1) * vocab;
                let (g, w) = (got.as_f32().unwrap(), want.as_f32().unwrap());
                for (x, y) in g[rows.clone()].iter().zip(&w[rows]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
        assert!(worst <= TOLERANCE, "{case} torch vs transformers: {worst}");

        let greedy: serde_json::Value =
            serde_json::from_slice(&std::fs::read(reference.join("greedy.json")).unwrap()).unwrap();
        let prompts: Vec<String> = serde_json::from_value(greedy["prompts"].clone()).unwrap();
        let want: Vec<Vec<u32>> = serde_json::from_value(greedy["greedy"].clone()).unwrap();
        let options = GenerateOptions {
            max_new_tokens: Some(20),
            temperature: Some(0.0),
            ..Default::default()
        };
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let got = torch.generate_batch(&prompts, &options).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(&g.token_ids, w, "{case} torch: prompt {i}");
        }

        let decoder = torch.decoder().unwrap();
        let vocab = decoder.vocab_size();
        let source: Vec<u32> = (0..20).map(|i| (i * 13 % 150) as u32 + 3).collect();
        let target: Vec<u32> = (0..24).map(|i| (i * 29 % 150) as u32 + 3).collect();
        let step = |state: &mut inferox::model::DecoderState, tokens: &[u32], total, all| {
            decoder
                .step(
                    state,
                    &DecodeStep {
                        tokens,
                        batch: 1,
                        positions: &[],
                        mask: &vec![1; total],
                        all_positions: all,
                    },
                )
                .unwrap()
        };
        let mut state = decoder.new_state();
        decoder.encode(&mut state, &source, 1, &[1; 20]).unwrap();
        let full = step(&mut state, &target, target.len(), true);
        let mut state = decoder.new_state();
        decoder.encode(&mut state, &source, 1, &[1; 20]).unwrap();
        let mut incremental = Vec::new();
        for t in 0..target.len() {
            incremental.extend(step(&mut state, &target[t..=t], t + 1, false));
        }
        assert_eq!(incremental.len(), target.len() * vocab);
        let worst = full
            .iter()
            .zip(&incremental)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= TOLERANCE, "{case} torch: cached vs full {worst}");
    }
}

/// Every combination of the options that change a recurrent network's math (cell, layers,
/// directions, batch-first, bias, initial states given, LSTM projection), with random weights
/// made here: candle against libtorch's own LSTM / GRU / RNN operators (what torch.nn calls).
#[test]
fn every_recurrent_option_combination_agrees_with_libtorch() {
    use safetensors::tensor::{Dtype, TensorView};
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    };
    let (input, hidden, batch, steps) = (3usize, 4usize, 2usize, 5usize);
    let mut cases = 0;
    for (model_type, nonlinearity, gates) in [
        ("lstm", "tanh", 4),
        ("gru", "tanh", 3),
        ("rnn", "tanh", 1),
        ("rnn", "relu", 1),
    ] {
        for bits in 0..64u32 {
            let flag = |i: u32| bits & (1 << i) != 0;
            let (layers, bidirectional, batch_first, bias, states, projected) = (
                1 + flag(0) as usize,
                flag(1),
                flag(2),
                flag(3),
                flag(4),
                flag(5),
            );
            if projected && model_type != "lstm" {
                continue;
            }
            let proj = if projected { 2 } else { 0 };
            let out = if projected { proj } else { hidden };
            let dirs = 1 + bidirectional as usize;
            let what = format!(
                "{model_type}/{nonlinearity} layers {layers} bidirectional {bidirectional} \
                 batch_first {batch_first} bias {bias} states {states} proj {proj}"
            );
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            std::fs::create_dir(&src).unwrap();
            let config = serde_json::json!({
                "model_type": model_type, "input_size": input, "hidden_size": hidden,
                "num_layers": layers, "bidirectional": bidirectional, "batch_first": batch_first,
                "bias": bias, "proj_size": proj, "nonlinearity": nonlinearity,
            });
            std::fs::write(src.join("config.json"), config.to_string()).unwrap();
            let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
            for l in 0..layers {
                for d in 0..dirs {
                    let sfx = format!("_l{l}{}", if d == 1 { "_reverse" } else { "" });
                    let layer_in = if l == 0 { input } else { dirs * out };
                    let mut shapes = vec![
                        ("weight_ih", vec![gates * hidden, layer_in]),
                        ("weight_hh", vec![gates * hidden, out]),
                    ];
                    if bias {
                        shapes.push(("bias_ih", vec![gates * hidden]));
                        shapes.push(("bias_hh", vec![gates * hidden]));
                    }
                    if projected {
                        shapes.push(("weight_hr", vec![proj, hidden]));
                    }
                    for (kind, shape) in shapes {
                        let n = shape.iter().product();
                        let bytes = random(n)
                            .iter()
                            .flat_map(|v| (2.0 * v).to_le_bytes())
                            .collect();
                        tensors.push((format!("{kind}{sfx}"), shape, bytes));
                    }
                }
            }
            let views: Vec<(String, TensorView<'_>)> = tensors
                .iter()
                .map(|(n, s, b)| {
                    (
                        n.clone(),
                        TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                    )
                })
                .collect();
            std::fs::write(
                src.join("model.safetensors"),
                safetensors::serialize(views, None).unwrap(),
            )
            .unwrap();
            let package = inferox::import(
                &src,
                &dir.path().join("pkg"),
                &ImportOptions::default(),
                &mut |_| {},
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let x_shape = if batch_first {
                vec![batch, steps, input]
            } else {
                vec![steps, batch, input]
            };
            let mut inputs = NamedTensors::new();
            let x = random(batch * steps * input)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            inputs.insert("input", inferox::HostTensor::from_f32(x_shape, x).unwrap());
            if states {
                let s = layers * dirs;
                let h0 = random(s * batch * out);
                inputs.insert(
                    "h0",
                    inferox::HostTensor::from_f32(vec![s, batch, out], h0).unwrap(),
                );
                if model_type == "lstm" {
                    let c0 = random(s * batch * hidden);
                    let c0 = inferox::HostTensor::from_f32(vec![s, batch, hidden], c0).unwrap();
                    inputs.insert("c0", c0);
                }
            }
            let a = package.load(&on("candle")).unwrap().run(&inputs).unwrap();
            let b = package.load(&on("torch")).unwrap().run(&inputs).unwrap();
            assert_close(&what, &a, &b, 1e-5);
            cases += 1;
        }
    }
    assert_eq!(cases, 4 * 32 + 32, "every combination ran");
}
