//! A second registration of an existing (model_type, backend) key is detected, and the loader
//! refuses to pick one at random.

use inferox::LoadPackage;
use inferox::registry::{self, Implementation};
use inferox::{Error, ExecutionFormat, Family, LoadRequest, Model, Result};

fn load(_: &LoadRequest<'_>) -> Result<Box<dyn Model>> {
    Err(Error::Unsupported("test double".into()))
}

inferox::register!(Implementation::new(
    "bert",
    "candle",
    &[ExecutionFormat::Safetensors],
    load
));

#[test]
fn duplicate_key_is_an_error() {
    match registry::check() {
        Err(Error::DuplicateRegistration {
            model_type,
            backend,
        }) => {
            assert_eq!((model_type.as_str(), backend.as_str()), ("bert", "candle"));
        }
        other => panic!("expected DuplicateRegistration, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bert/bert_gelu_pooler/model");
    let err = inferox::import(
        &fixture,
        &dir.path().join("p"),
        &Default::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::DuplicateRegistration { .. }), "{err}");

    // A package written by a sound build does not load either.
    let mut writer = inferox::package::PackageWriter::create(&dir.path().join("q"), false).unwrap();
    writer
        .copy_file(
            &fixture.join("config.json"),
            "backends/candle/config.json",
            &mut |_| {},
        )
        .unwrap();
    let info = inferox::ModelInfo {
        format_version: inferox::manifest::FORMAT_VERSION,
        model_type: "bert".into(),
        architectures: vec![],
        family: Some(Family::EncoderOnly),
        tasks: vec![],
        source: Default::default(),
        backends: [(
            "candle".to_string(),
            inferox::manifest::BackendArtifacts::new(
                ExecutionFormat::Safetensors,
                vec![inferox::manifest::Artifact {
                    path: "backends/candle/config.json".into(),
                    role: inferox::manifest::ArtifactRole::Config,
                }],
                inferox::DType::Float32,
            ),
        )]
        .into_iter()
        .collect(),
        io: Default::default(),
        parameters: 0,
        memory_estimate_bytes: 0,
        labels: Default::default(),
        sentence_embedding: None,
        generation: None,
    };
    let package = writer.finish(&info, Default::default()).unwrap();
    let err = package
        .load(&Default::default())
        .err()
        .expect("load refused");
    assert!(matches!(err, Error::DuplicateRegistration { .. }), "{err}");
}
