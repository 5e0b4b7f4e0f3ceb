//! An architecture registered from outside the inferox crate (this test crate, reusing
//! examples/custom_architecture.rs) is found by the registry and runs through the normal loader.

#[path = "../examples/custom_architecture.rs"]
mod custom;

use inferox::LoadPackage;
use inferox::{HostTensor, ImportOptions, LoadOptions, registry};

#[test]
fn external_architecture_loads_through_the_normal_loader() {
    registry::check().unwrap();
    assert!(
        registry::find("linear-classifier", "candle").is_some(),
        "registered from outside"
    );
    let entry = registry::model_type("linear-classifier").expect("registered from outside");
    assert_eq!(entry.tasks, ["tabular-classification"]);
    assert!(
        registry::find("bert", "candle").is_some(),
        "built-in entries are still there"
    );

    let dir = tempfile::tempdir().unwrap();
    custom::write_model(&dir.path().join("model")).unwrap();
    let package = inferox::import(
        &dir.path().join("model"),
        &dir.path().join("pkg"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(package.info().labels[&1], "yes");
    assert_eq!(
        package.info().io.input("features").unwrap().shape_string(),
        "[batch, 3]"
    );
    let model = package.load(&LoadOptions::default()).unwrap();
    let features = HostTensor::from_f32(vec![2, 3], vec![2.0, 1.0, 0.0, 0.0, 0.0, 4.0]).unwrap();
    let out = model
        .run(&[("features", features)].into_iter().collect())
        .unwrap();
    // weight [[1, 0, -1], [0.5, 0.5, 0.5]], bias [0, -1]
    assert_eq!(
        out.get("logits").unwrap().as_f32().unwrap(),
        [2.0, 0.5, -4.0, 1.0]
    );
    // The schema still guards the boundary.
    let wrong = HostTensor::from_f32(vec![1, 4], vec![0.0; 4]).unwrap();
    let err = model
        .run(&[("features", wrong)].into_iter().collect())
        .unwrap_err();
    assert!(
        err.to_string().contains("dimension 1 is 4, expected 3"),
        "{err}"
    );
}
