//! Vision on candle (scripts/bench_vision.sh makes the model and runs this beside PyTorch):
//! * `vision_t{N}/vit_base_batch8`: a ViT-B/16-sized model (transformers' default ViTConfig,
//!   random weights, 224×224) on a batch of 8 preprocessed photos (images/s);
//! * `vision_t{N}/preprocess`: decoding, resizing (bilinear, 224×224) and normalising the eight
//!   real photographs of `scripts/fetch-models.sh images` into one batch, as `inferox run
//!   --image ...` does (images/s).
//!
//! INFEROX_BENCH_VIT_DIR names the Hugging Face directory of the model; threads are pinned with
//! INFEROX_BENCH_THREADS (default 1).

use criterion::{Criterion, Throughput};
use inferox::image::RgbImage;
use inferox::{ImportOptions, LoadOptions, LoadPackage, NamedTensors};
use std::path::PathBuf;
use std::time::Duration;

/// The inferox binary's allocator and its settings, so the numbers are what its users see.
#[path = "../src/allocator.rs"]
mod allocator;

/// The photographs of the vision tests (eight files, JPEG, PNG and GIF).
pub const PHOTOS: &[&str] = &[
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "rocket.jpg",
    "retina.jpg",
    "logo.png",
    "no_time_for_that_tiny.gif",
];

fn main() {
    allocator::keep_freed_memory();
    let threads = std::env::var("INFEROX_BENCH_THREADS").unwrap_or_else(|_| "1".into());
    // SAFETY: single-threaded here; candle and rayon read these when their pools start.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", &threads);
        std::env::set_var("CANDLE_NUM_THREADS", &threads);
    }
    let src = PathBuf::from(
        std::env::var_os("INFEROX_BENCH_VIT_DIR").expect("set INFEROX_BENCH_VIT_DIR"),
    );
    let models = std::env::var_os("INFEROX_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/inferox/models")
        });
    let photos: Vec<PathBuf> = PHOTOS
        .iter()
        .map(|p| models.join("images/skimage/data").join(p))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let package = inferox::import(
        &src,
        &dir.path().join("vit"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let model = package.load(&LoadOptions::default()).unwrap();
    let pre = model.image_preprocessor().unwrap();
    let batch: Vec<RgbImage> = photos[..8]
        .iter()
        .map(|p| RgbImage::open(p).unwrap())
        .collect();
    let inputs: NamedTensors = model.preprocess_images(&batch).unwrap();
    assert_eq!(
        pre.preprocess_files(&photos).unwrap().shape(),
        [8, 3, 224, 224]
    );
    let hidden = model.run(&inputs).unwrap();
    assert_eq!(
        hidden.get("last_hidden_state").unwrap().shape(),
        [8, 197, 768]
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let mut group = c.benchmark_group(format!("vision_t{threads}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(8));
    group.bench_function("vit_base_batch8", |b| {
        b.iter(|| model.run(&inputs).unwrap())
    });
    group.throughput(Throughput::Elements(photos.len() as u64));
    group.bench_function("preprocess", |b| {
        b.iter(|| pre.preprocess_files(&photos).unwrap())
    });
    group.finish();
    c.final_summary();
}
