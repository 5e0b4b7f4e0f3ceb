//! The real all-MiniLM-L6-v2 (fetched by scripts/fetch-models.sh) against sentence-transformers'
//! embeddings committed in tests/fixtures/minilm (tests/golden/minilm_reference.py).

mod common;

use common::{assert_matches_json_schemas, fixtures, minilm_dir};
use inferox::LoadPackage;
use inferox::manifest::Pooling;
use inferox::pipeline::cosine;
use inferox::{EmbedOptions, LoadOptions, Package};
use std::sync::OnceLock;

fn package() -> &'static Package {
    static PACKAGE: OnceLock<(tempfile::TempDir, Package)> = OnceLock::new();
    &PACKAGE.get_or_init(|| common::import(&minilm_dir())).1
}

fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let dir = fixtures().join("minilm");
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.join("texts.json")).unwrap()).unwrap();
    let emb = inferox::npy::read_npy(&dir.join("embeddings.npy")).unwrap();
    let dim = emb.shape()[1];
    let rows = emb
        .as_f32()
        .unwrap()
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect();
    (texts, rows)
}

#[test]
fn manifest_follows_sentence_transformers_configs() {
    let package = package();
    assert_matches_json_schemas(package.root());
    let info = package.info();
    assert_eq!(info.model_type, "bert");
    let st = info
        .sentence_embedding
        .as_ref()
        .expect("sentence-embedding settings");
    assert_eq!(st.pooling, Pooling::Mean);
    assert!(st.normalize);
    assert_eq!(st.max_seq_length, 256);
    assert_eq!(st.dimension, 384);
    // Every text input is made by the tokenizer, truncating at 256 (not the file's 128).
    let names: Vec<&str> = info.io.inputs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    for spec in &info.io.inputs {
        assert_eq!(spec.tokenization().unwrap().max_length, 256);
    }
    assert_eq!(info.parameters, 22_713_216);
    assert!(info.tasks.contains(&"sentence-similarity".to_string()));
    assert_eq!(info.backends["candle"].dtype, inferox::DType::Float32);
}

#[test]
fn embeddings_match_sentence_transformers() {
    let (texts, expected) = reference();
    assert!(texts.len() >= 8);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let model = package().load(&LoadOptions::default()).unwrap();
    // Small batches, and all texts in one call (grouped by length into batches of their own):
    // batching and padding are exercised as well.
    for batch_size in [3, 32] {
        let options = EmbedOptions {
            batch_size,
            ..Default::default()
        };
        let result = model.embed_with(&texts, &options).unwrap();
        assert_eq!(result.vectors.len(), texts.len());
        for (i, (got, want)) in result.vectors.iter().zip(&expected).enumerate() {
            let c = cosine(got, want);
            assert!(
                c >= 0.99999,
                "batch size {batch_size}, text {i}: cosine {c} with sentence-transformers"
            );
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-5,
                "text {i} is not normalised: {norm}"
            );
        }
        let long = texts.iter().position(|t| t.len() > 2000).unwrap();
        assert_eq!(
            result.truncated,
            [long],
            "the long text is reported as truncated"
        );
    }
    let result = model.embed(&texts).unwrap();
    // Batch composition must not change a text's embedding (padding is masked).
    let alone = model.embed(&texts[..1]).unwrap();
    assert!(cosine(&alone[0], &result[0]) > 0.999999);
}

#[test]
fn golden_cosine_from_the_guide() {
    let model = package().load(&LoadOptions::default()).unwrap();
    let e = model
        .embed(&["A man is eating food.", "A man is eating a piece of bread."])
        .unwrap();
    let c = cosine(&e[0], &e[1]);
    assert!((c - 0.7553).abs() < 5e-5, "cosine {c}, expected 0.7553");
}

#[test]
fn over_long_text_is_refused_when_truncation_is_off() {
    let (texts, _) = reference();
    let long = texts.iter().find(|t| t.len() > 2000).unwrap();
    let model = package().load(&LoadOptions::default()).unwrap();
    let options = EmbedOptions {
        truncate: false,
        ..Default::default()
    };
    let err = model.embed_with(&["short", long], &options).unwrap_err();
    match err {
        inferox::Error::TextTooLong { index, length, max } => {
            assert_eq!((index, max), (1, 256));
            assert!(length > 256);
        }
        other => panic!("expected TextTooLong, got {other}"),
    }
}

#[test]
fn texts_past_the_first_window_keep_their_places() {
    // With batch size 1 a window holds 64 texts: 70 texts span two windows.
    let (texts, _) = reference();
    let long = texts.iter().find(|t| t.len() > 2000).unwrap();
    let short: Vec<&str> = texts
        .iter()
        .filter(|t| t.len() < 2000)
        .map(String::as_str)
        .collect();
    let many: Vec<&str> = (0..70).map(|i| short[i % short.len()]).collect();
    let model = package().load(&LoadOptions::default()).unwrap();
    let one = EmbedOptions {
        batch_size: 1,
        ..Default::default()
    };
    let windowed = model.embed_with(&many, &one).unwrap().vectors;
    let whole = model.embed(&many).unwrap();
    for (i, (a, b)) in windowed.iter().zip(&whole).enumerate() {
        assert!(cosine(a, b) > 0.999999, "text {i}");
    }
    // An error in the second window names the caller's index.
    let mut with_long = many.clone();
    with_long[67] = long;
    let strict = EmbedOptions {
        truncate: false,
        ..one
    };
    match model.embed_with(&with_long, &strict).unwrap_err() {
        inferox::Error::TextTooLong { index, .. } => assert_eq!(index, 67),
        other => panic!("expected TextTooLong, got {other}"),
    }
    // Truncation reports it too.
    let cut = model.embed_with(&with_long, &one).unwrap();
    assert_eq!(cut.truncated, [67]);
}

#[test]
fn bf16_weights_stay_within_cosine_0_9999_of_f32() {
    let (texts, _) = reference();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let f32_model = package().load(&LoadOptions::default()).unwrap();
    let want = f32_model.embed(&texts).unwrap();
    let bf16_model = package()
        .load(&LoadOptions {
            dtype: Some(inferox::DType::BFloat16),
            ..Default::default()
        })
        .unwrap();
    let got = bf16_model.embed(&texts).unwrap();
    let mut differs = false;
    let mut lowest = 1f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        assert!(c >= 0.9999, "text {i}: cosine {c} between bf16 and f32");
        differs |= g != w;
        lowest = lowest.min(c);
    }
    eprintln!(
        "bf16 against f32 on {} texts: lowest cosine {lowest}",
        texts.len()
    );
    // The weights really were rounded: bf16 is not f32 under another name.
    assert!(differs, "bf16 embeddings are bit-identical to f32");
}
