//! Golden tests for recurrent networks: small random `torch.nn.LSTM`, `GRU` and `RNN` modules
//! exported as docs/package-format.md says (tests/golden/generate_recurrent.py), imported and
//! run on candle, in f32 (the backend's packed CPU kernel) and in f64 (candle's tensor ops, the
//! path of other devices); outputs and final states within 1e-5 of PyTorch's, for every option
//! that changes the math.

mod common;

use common::{assert_matches_json_schemas, copy_dir, fixtures, import, max_abs_diff, read_npy_dir};
use inferox::{DType, Error, Family, ImportOptions, LoadOptions, LoadPackage, NamedTensors};

const TOLERANCE: f32 = 1e-5;

const CASES: &[&str] = &[
    "lstm_one_layer",
    "lstm_deep_bidirectional_batch_first",
    "lstm_projected_bidirectional",
    "lstm_no_bias_batch_first",
    "gru_deep_bidirectional",
    "gru_no_bias_batch_first",
    "rnn_tanh_deep",
    "rnn_relu_bidirectional_batch_first",
];

#[test]
fn recurrent_networks_match_torch_nn() {
    for name in CASES {
        let case = fixtures().join("recurrent").join(name);
        let (_dir, package) = import(&case.join("model"));
        assert_matches_json_schemas(package.root());
        let info = package.info();
        assert_eq!(info.family, Some(Family::Recurrent), "{name}");
        assert!(name.starts_with(info.model_type.as_str()), "{name}");
        let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
        let expected = read_npy_dir(&case.join("expected"));
        let mut want: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        want.sort();
        for dtype in [DType::Float32, DType::Float64] {
            let options = LoadOptions {
                dtype: Some(dtype),
                ..Default::default()
            };
            let model = package.load(&options).unwrap();
            let outputs = model.run(&inputs).unwrap();
            let mut names: Vec<&str> = outputs.names().collect();
            names.sort();
            assert_eq!(names, want, "{name}: outputs");
            for (out, want) in &expected {
                let err = max_abs_diff(outputs.get(out).unwrap(), want);
                assert!(
                    err <= TOLERANCE,
                    "{name} {dtype}: `{out}` max abs error {err}"
                );
            }
        }
    }
}

/// `t` with its batch axis (`axis`) repeated `times` times: the copies one after another.
fn tile_batch(t: &inferox::HostTensor, axis: usize, times: usize) -> inferox::HostTensor {
    let shape = t.shape();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    let data = t.as_f32().unwrap();
    let mut out = Vec::with_capacity(data.len() * times);
    for o in 0..outer {
        for _ in 0..times {
            out.extend_from_slice(&data[o * inner..(o + 1) * inner]);
        }
    }
    let mut shape = shape.to_vec();
    shape[axis] *= times;
    inferox::HostTensor::from_f32(shape, out).unwrap()
}

/// A batch large enough that every worker steps its own rows through the sequence (the
/// kernel's other schedule): the fixtures' batches repeated, each copy equal to PyTorch's.
#[test]
fn a_large_batch_split_across_workers_matches_torch_nn() {
    for name in CASES {
        let case = fixtures().join("recurrent").join(name);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(case.join("model/config.json")).unwrap())
                .unwrap();
        let batch_first = config["batch_first"].as_bool().unwrap_or(false);
        let axis = |tensor: &str| match tensor {
            "input" | "output" if batch_first => 0,
            _ => 1,
        };
        let (_dir, package) = import(&case.join("model"));
        let inputs: NamedTensors = read_npy_dir(&case.join("inputs"))
            .into_iter()
            .map(|(n, t)| {
                let tiled = tile_batch(&t, axis(&n), 16);
                (n, tiled)
            })
            .collect();
        let model = package.load(&LoadOptions::default()).unwrap();
        let outputs = model.run(&inputs).unwrap();
        for (out, want) in read_npy_dir(&case.join("expected")) {
            let want = tile_batch(&want, axis(&out), 16);
            let err = max_abs_diff(outputs.get(&out).unwrap(), &want);
            assert!(err <= TOLERANCE, "{name} ×16: `{out}` max abs error {err}");
        }
    }
}

#[test]
fn the_schema_has_pytorchs_shapes() {
    let case = fixtures().join("recurrent/lstm_projected_bidirectional/model");
    let (_dir, package) = import(&case);
    let io = &package.info().io;
    let shape = |name: &str| {
        io.input(name)
            .or_else(|| io.output(name))
            .unwrap()
            .shape_string()
    };
    assert_eq!(shape("input"), "[sequence, batch, 5]");
    assert_eq!(shape("h0"), "[4, batch, 3]");
    assert_eq!(shape("c0"), "[4, batch, 8]");
    assert_eq!(shape("output"), "[sequence, batch, 6]");
    assert_eq!(shape("h_n"), "[4, batch, 3]");
    assert_eq!(shape("c_n"), "[4, batch, 8]");
    assert!(io.input("h0").unwrap().optional);

    let case = fixtures().join("recurrent/gru_no_bias_batch_first/model");
    let (_dir, package) = import(&case);
    let io = &package.info().io;
    assert_eq!(
        io.input("input").unwrap().shape_string(),
        "[batch, sequence, 5]"
    );
    assert!(io.input("c0").is_none() && io.output("c_n").is_none());
}

/// A config edited by `edit`, imported: the error.
fn import_edited(case: &str, edit: impl Fn(&mut serde_json::Value)) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_dir(&fixtures().join("recurrent").join(case).join("model"), &src);
    let path = src.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    inferox::import(
        &src,
        &dir.path().join("pkg"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
}

#[test]
fn configs_that_do_not_describe_the_weights_are_refused() {
    // More layers than the weights hold: the first missing tensor is named.
    let err = import_edited("rnn_tanh_deep", |c| c["num_layers"] = 4.into());
    assert!(
        matches!(&err, Error::MissingTensor { tensor, .. } if tensor == "weight_ih_l3"),
        "{err}"
    );
    // Fewer: the weights left over are named.
    let err = import_edited("rnn_tanh_deep", |c| c["num_layers"] = 2.into()).to_string();
    assert!(err.contains("_l2`") && err.contains("not part of"), "{err}");
    // A different size: the tensor and the fields.
    let err = import_edited("gru_deep_bidirectional", |c| c["hidden_size"] = 5.into()).to_string();
    assert!(
        err.contains("weight_ih_l0") && err.contains("hidden_size 5"),
        "{err}"
    );
    // Options PyTorch refuses.
    let err = import_edited("gru_deep_bidirectional", |c| c["proj_size"] = 2.into()).to_string();
    assert!(
        err.contains("proj_size") && err.contains("only an LSTM"),
        "{err}"
    );
    let err = import_edited("lstm_one_layer", |c| c["proj_size"] = 7.into()).to_string();
    assert!(err.contains("smaller than hidden_size"), "{err}");
    let err = import_edited("lstm_one_layer", |c| c["num_layers"] = 0.into()).to_string();
    assert!(err.contains("num_layers"), "{err}");
    let err = import_edited("rnn_tanh_deep", |c| c["nonlinearity"] = "gelu".into()).to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn states_of_the_wrong_shape_are_input_errors() {
    let case = fixtures().join("recurrent/lstm_deep_bidirectional_batch_first");
    let (_dir, package) = import(&case.join("model"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let mut inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    // h0 for another batch size.
    let h0 = inferox::HostTensor::from_f32(vec![4, 3, 6], vec![0.0; 72]).unwrap();
    inputs.insert("h0", h0);
    let err = model.run(&inputs).unwrap_err().to_string();
    assert!(err.contains("h0") && err.contains("batch"), "{err}");
}
