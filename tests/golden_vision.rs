//! Golden tests for vision models: tiny random ViTs and ResNets made by transformers
//! (tests/golden/generate_vision.py) are imported with their image processors and run on
//! candle, from the processor's pixel values and from the photographs themselves; outputs
//! within 1e-4 of PyTorch's.

mod common;

use common::{assert_matches_json_schemas, import, max_abs_diff, read_npy_dir};
use inferox::image::ImagePreprocessor;
use inferox::schema::Preprocessing;
use inferox::{LoadOptions, LoadPackage, NamedTensors};

const TOLERANCE: f32 = 1e-4;

fn check(case: &str, outputs: &NamedTensors, expected: &[(String, inferox::HostTensor)]) {
    assert!(!expected.is_empty());
    for (name, want) in expected {
        let got = outputs
            .get(name)
            .unwrap_or_else(|| panic!("{case}: output `{name}` missing"));
        let err = max_abs_diff(got, want);
        assert!(err <= TOLERANCE, "{case}: `{name}` max abs error {err}");
    }
}

#[test]
fn vision_models_match_transformers_from_pixels_and_from_photos() {
    for (name, model_type) in [
        ("vit_classifier", "vit"),
        ("vit_pooler", "vit"),
        ("resnet_basic", "resnet"),
        ("resnet_bottleneck", "resnet"),
    ] {
        let case = common::fixtures().join("vision").join(name);
        let (_dir, package) = import(&case.join("model"));
        assert_matches_json_schemas(package.root());
        let info = package.info();
        assert_eq!(info.model_type, model_type);
        let input = info.io.input("pixel_values").unwrap();
        assert!(matches!(input.preprocessing, Some(Preprocessing::Image(_))));
        let model = package.load(&LoadOptions::default()).unwrap();
        let expected = read_npy_dir(&case.join("expected"));

        let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
        check(name, &model.run(&inputs).unwrap(), &expected);

        // The same batch from the photographs, through the package's own preprocessing.
        let files = common::photos(&case);
        let pre = ImagePreprocessor::from_schema(&info.io).unwrap().unwrap();
        let pixels = pre.preprocess_files(&files).unwrap();
        assert_eq!(
            max_abs_diff(&pixels, inputs.get("pixel_values").unwrap()),
            0.0,
            "{name}: pixel values are transformers'"
        );
        let from_photos: NamedTensors = [("pixel_values", pixels)].into_iter().collect();
        check(name, &model.run(&from_photos).unwrap(), &expected);

        // ViT at another size: position embeddings interpolated as transformers does.
        if model_type != "vit" {
            continue;
        }
        let inputs: NamedTensors = read_npy_dir(&case.join("inputs_48x40"))
            .into_iter()
            .collect();
        let expected = read_npy_dir(&case.join("expected_48x40"));
        check(name, &model.run(&inputs).unwrap(), &expected);
    }
}

#[test]
fn labels_and_tasks_are_recorded() {
    let case = common::fixtures().join("vision/vit_classifier");
    let (_dir, package) = import(&case.join("model"));
    let info = package.info();
    assert_eq!(info.labels.len(), 5);
    assert_eq!(info.labels[&0], "label a");
    assert_eq!(info.labels[&4], "label e");
    assert!(info.tasks.contains(&"image-classification".to_string()));
    assert_eq!(
        info.io.output("logits").unwrap().shape_string(),
        "[batch, 5]"
    );
    let case = common::fixtures().join("vision/vit_pooler");
    let (_dir, package) = import(&case.join("model"));
    assert_eq!(package.info().tasks, ["image-feature-extraction"]);
    let case = common::fixtures().join("vision/resnet_basic");
    let (_dir, package) = import(&case.join("model"));
    let info = package.info();
    assert_eq!(info.labels[&3], "class 3");
    assert_eq!(info.family, Some(inferox::Family::Vision));
    // ConvNext's crop_pct: shortest edge to 48 / 0.875 = 54, then a 48×48 crop.
    let pre = ImagePreprocessor::from_schema(&info.io).unwrap().unwrap();
    assert_eq!(pre.steps().output_size(300, 451), (48, 48));
}

/// The library's image pipeline, `classify_images`: the photographs' logits are transformers',
/// and the predictions are its softmax, best first, with the package's labels.
#[test]
fn classify_images_gives_transformers_logits_and_its_softmax_ranking() {
    let case = common::fixtures().join("vision/vit_classifier");
    let (_dir, package) = import(&case.join("model"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let files = common::photos(&case);
    let result = model.classify_images(&files, 3).unwrap();
    let expected = read_npy_dir(&case.join("expected"));
    let (_, want) = expected.iter().find(|(n, _)| n == "logits").unwrap();
    assert!(max_abs_diff(&result.logits, want) <= TOLERANCE);
    let labels = &package.info().labels;
    let want = want.as_f32().unwrap();
    let classes = want.len() / files.len();
    assert_eq!(result.predictions.len(), files.len());
    for (row, predictions) in want.chunks(classes).zip(&result.predictions) {
        assert_eq!(predictions.len(), 3);
        let sum: f32 = row.iter().map(|v| v.exp()).sum();
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for (p, &id) in predictions.iter().zip(&order) {
            assert_eq!(p.id, id);
            assert_eq!(&p.label, &labels[&(id as u32)]);
            assert!((p.score - row[id].exp() / sum).abs() < 1e-4, "{p:?}");
        }
    }
    // A model without a classification head says so.
    let (_dir, pooler) = import(&common::fixtures().join("vision/vit_pooler/model"));
    let pooler = pooler.load(&LoadOptions::default()).unwrap();
    let err = pooler.classify_images(&files, 3).unwrap_err().to_string();
    assert!(err.contains("no classification head"), "{err}");
}

/// CLIP: text and image towers, projections and logit scale against transformers' CLIPModel,
/// from the saved inputs and from the labels and photos through the package's preprocessing.
#[test]
fn clip_matches_transformers() {
    let case = common::fixtures().join("vision/clip");
    let (_dir, package) = import(&case.join("model"));
    assert_matches_json_schemas(package.root());
    assert_eq!(package.info().model_type, "clip");
    let model = package.load(&LoadOptions::default()).unwrap();
    let inputs: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    let expected = read_npy_dir(&case.join("expected"));
    check("clip", &model.run(&inputs).unwrap(), &expected);

    // The same from the labels and the photos.
    let labels: Vec<String> =
        serde_json::from_slice(&std::fs::read(case.join("labels.json")).unwrap()).unwrap();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let files = common::photos(&case);
    let mut made = model.encode(&labels, false).unwrap().inputs;
    for name in ["input_ids", "attention_mask"] {
        assert_eq!(
            made.get(name).unwrap().as_i64(),
            inputs.get(name).unwrap().as_i64(),
            "{name}: our tokenization is transformers'"
        );
    }
    let pre = ImagePreprocessor::from_schema(model.io()).unwrap().unwrap();
    made.insert("pixel_values", pre.preprocess_files(&files).unwrap());
    check("clip from photos", &model.run(&made).unwrap(), &expected);

    // One tower at a time gives its embeddings alone.
    let text_only: NamedTensors = ["input_ids", "attention_mask"]
        .iter()
        .map(|n| (*n, inputs.get(n).unwrap().clone()))
        .collect();
    let out = model.run(&text_only).unwrap();
    assert_eq!(out.names().collect::<Vec<_>>(), ["text_embeds"]);
    check("clip text", &out, &expected[3..]);
    let image_only: NamedTensors = [("pixel_values", inputs.get("pixel_values").unwrap().clone())]
        .into_iter()
        .collect();
    let out = model.run(&image_only).unwrap();
    assert_eq!(out.names().collect::<Vec<_>>(), ["image_embeds"]);
    check("clip image", &out, &expected[..1]);
}
