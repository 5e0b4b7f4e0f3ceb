//! Golden tests: tiny random BERT-family models made by transformers (tests/golden/generate_bert.py)
//! are imported as packages and run on candle; every output must be within 1e-4 of PyTorch's.

mod common;

use common::{assert_matches_json_schemas, bert_cases, import, max_abs_diff, read_npy_dir};
use inferox::LoadPackage;
use inferox::{DType, LoadOptions, NamedTensors};

const TOLERANCE: f32 = 1e-4;

fn check_outputs(case: &str, outputs: &NamedTensors, expected_dir: &std::path::Path, tol: f32) {
    let expected = read_npy_dir(expected_dir);
    assert!(!expected.is_empty());
    for (name, want) in &expected {
        let got = outputs
            .get(name)
            .unwrap_or_else(|| panic!("{case}: output `{name}` missing"));
        let err = max_abs_diff(got, want);
        assert!(err <= tol, "{case}: `{name}` max abs error {err} > {tol}");
    }
    assert_eq!(
        outputs.len(),
        expected.len(),
        "{case}: outputs {:?} but PyTorch gave {:?}",
        outputs.names().collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}

#[test]
fn every_case_matches_transformers() {
    for case in bert_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (_dir, package) = import(&case.join("model"));
        assert_matches_json_schemas(package.root());
        package.verify().unwrap();
        let model = package.load(&LoadOptions::default()).unwrap();
        assert_eq!(model.backend(), "candle");
        let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
        let outputs = model.run(&inputs).unwrap();
        check_outputs(&name, &outputs, &case.join("expected"), TOLERANCE);
    }
}

#[test]
fn text_preprocessing_matches_transformers() {
    let case = common::fixtures().join("bert/bert_gelu_pooler");
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(case.join("texts.json")).unwrap()).unwrap();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (_dir, package) = import(&case.join("model"));
    let model = package.load(&LoadOptions::default()).unwrap();
    // The tokenizer file pads to 16 and truncates at 8; the package's settings must win.
    let encoded = model.encode(&texts, true).unwrap();
    let expected: NamedTensors = read_npy_dir(&case.join("text_inputs"))
        .into_iter()
        .collect();
    for (name, want) in expected.iter() {
        assert_eq!(
            encoded.inputs.get(name),
            Some(want),
            "input `{name}` differs from transformers"
        );
    }
    assert_eq!(
        encoded.inputs.len(),
        3,
        "every input of the schema is created"
    );
    assert!(encoded.truncated.is_empty());
    let outputs = model.run(&encoded.inputs).unwrap();
    check_outputs("text", &outputs, &case.join("text_expected"), TOLERANCE);
}

#[test]
fn optional_inputs_default_like_transformers() {
    // Leaving out token_type_ids means zeros, and leaving out attention_mask means all ones.
    let case = common::fixtures().join("bert/bert_gelu_pooler");
    let (_dir, package) = import(&case.join("model"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let mut inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    let full = model.run(&inputs).unwrap();
    let types = inputs.remove("token_type_ids").unwrap();
    let zeros =
        inferox::HostTensor::from_i64(types.shape().to_vec(), vec![0; types.len()]).unwrap();
    let without = model.run(&inputs).unwrap();
    inputs.insert("token_type_ids", zeros);
    let with_zeros = model.run(&inputs).unwrap();
    assert_eq!(without, with_zeros);
    assert_ne!(without, full, "token types must matter in this fixture");
}

#[test]
fn half_precision_is_selectable_and_close() {
    let case = common::fixtures().join("bert/bert_gelu_pooler");
    let (_dir, package) = import(&case.join("model"));
    let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    for dtype in [DType::Float16, DType::BFloat16] {
        let options = LoadOptions {
            dtype: Some(dtype),
            ..Default::default()
        };
        let model = package.load(&options).unwrap();
        let outputs = model.run(&inputs).unwrap();
        assert_eq!(
            outputs.get("last_hidden_state").unwrap().dtype(),
            DType::Float32
        );
        // bf16 keeps 8 bits of mantissa: errors of a few 1e-2 on values around 1 are expected.
        check_outputs(&format!("{dtype}"), &outputs, &case.join("expected"), 0.15);
    }
}

#[test]
fn labels_and_heads_are_described() {
    let case = common::fixtures().join("bert/bert_gelu_new_classifier");
    let (_dir, package) = import(&case.join("model"));
    let info = package.info();
    assert_eq!(info.labels.get(&2).map(String::as_str), Some("positive"));
    assert!(info.tasks.contains(&"text-classification".to_string()));
    assert_eq!(
        info.io.output("logits").unwrap().shape_string(),
        "[batch, 3]"
    );
    assert_eq!(info.architectures, ["BertForSequenceClassification"]);

    let roberta = common::fixtures().join("bert/roberta_gelu");
    let (_dir2, package) = import(&roberta.join("model"));
    let info = package.info();
    assert!(
        info.io.input("token_type_ids").is_none(),
        "type_vocab_size 1 has no segment input"
    );
    assert_eq!(
        info.io.dims["sequence"].max,
        Some(40),
        "RoBERTa positions start after pad_token_id"
    );
}
