//! An image file → `RgbImage::decode_limited` (every format inferox reads, JPEG through
//! mozjpeg), then the ViT-style preprocessing steps (resize, crop, normalise) on what decoded.
#![no_main]

use inferox::image::{ImagePreprocessor, RgbImage};
use inferox::schema::{Dim, IoSchema, Preprocessing, TensorSpec};
use inferox::tensor::DType;
use inferox::vision::ImagePreprocessing;
use inferox_fuzz::touch_error;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// Four megapixels: decoded images stay within the harness's allocation limit.
const LIMIT: u64 = 4 << 20;

fn preprocessor() -> &'static ImagePreprocessor {
    static PRE: OnceLock<ImagePreprocessor> = OnceLock::new();
    PRE.get_or_init(|| {
        let config = serde_json::json!({"image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": 20}, "crop_size": {"height": 16, "width": 18}});
        let steps = ImagePreprocessing::from_processor_config(
            &config,
            Path::new("preprocessor_config.json"),
            "preprocessor_config.json",
        )
        .unwrap();
        let io = IoSchema {
            inputs: vec![TensorSpec {
                preprocessing: Some(Preprocessing::Image(steps)),
                ..TensorSpec::new(
                    "pixel_values",
                    DType::Float32,
                    vec![
                        Dim::named("b"),
                        Dim::Fixed(3),
                        Dim::named("h"),
                        Dim::named("w"),
                    ],
                    "",
                )
            }],
            ..Default::default()
        };
        ImagePreprocessor::from_schema(&io).unwrap().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    inferox_fuzz::guard_panics();
    match RgbImage::decode_limited(data, Path::new("input"), LIMIT) {
        Ok(image) => {
            assert_eq!(image.data.len(), image.width * image.height * 3);
            let t = preprocessor()
                .preprocess(std::slice::from_ref(&image))
                .unwrap();
            assert_eq!(t.shape(), [1, 3, 16, 18]);
        }
        Err(e) => touch_error(&e),
    }
});
