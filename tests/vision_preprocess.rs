//! Image preprocessing against transformers' PIL image processors and Pillow, on real
//! photographs (tests/golden/generate_vision.py made the references).

mod common;

use inferox::image::{ImagePreprocessor, RgbImage, resize};
use inferox::schema::{Dim, IoSchema, Preprocessing, TensorSpec};
use inferox::tensor::DType;
use inferox::vision::{ImagePreprocessing, Resample};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/preprocess")
}

fn preprocessor(config: &Path) -> ImagePreprocessor {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let steps =
        ImagePreprocessing::from_processor_config(&json, config, "preprocessor_config.json")
            .unwrap();
    let io = IoSchema {
        inputs: vec![TensorSpec {
            preprocessing: Some(Preprocessing::Image(steps)),
            ..TensorSpec::new(
                "pixel_values",
                DType::Float32,
                vec![
                    Dim::named("batch"),
                    Dim::Fixed(3),
                    Dim::named("height"),
                    Dim::named("width"),
                ],
                "",
            )
        }],
        ..Default::default()
    };
    ImagePreprocessor::from_schema(&io).unwrap().unwrap()
}

/// Every (photo, processor) pair: pixel values within one 8-bit step of transformers'.
#[test]
fn pixel_values_match_transformers_on_real_photos() {
    let images = common::images_dir();
    let mut cases = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some((photo, config)) = name.strip_suffix(".npy").and_then(|n| n.split_once("__"))
        else {
            continue;
        };
        let file = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_stem().unwrap() == photo)
            .unwrap();
        let pre = preprocessor(&fixtures().join(format!("{config}.json")));
        let got = pre.preprocess_files(&[file]).unwrap();
        let want = inferox::npy::read_npy(&path).unwrap();
        assert_eq!(&got.shape()[1..], want.shape(), "{name}");
        let steps = pre.steps();
        // One 8-bit step, in the units of the normalised values.
        let step = steps.rescale_factor / steps.std.iter().cloned().fold(f64::MAX, f64::min);
        let (got, want) = (got.as_f32().unwrap(), want.as_f32().unwrap());
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        assert!(
            worst <= step * 1.0001,
            "{name}: max diff {worst} > one step {step}"
        );
        cases += 1;
    }
    assert_eq!(cases, 64, "every reference was checked");
}

/// Our resampler is Pillow's: every filter, down and up, byte for byte.
#[test]
fn resize_is_pillow_byte_for_byte() {
    let images = common::images_dir();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("resize.json")).unwrap()).unwrap();
    let filters = [
        ("nearest", Resample::Nearest),
        ("lanczos", Resample::Lanczos),
        ("bilinear", Resample::Bilinear),
        ("bicubic", Resample::Bicubic),
        ("box", Resample::Box),
        ("hamming", Resample::Hamming),
    ];
    let mut mismatches = vec![];
    let mut checked = 0;
    for (key, want) in json["sha256"].as_object().unwrap() {
        let mut parts = key.split('/');
        let (photo, filter, size) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let (w, h) = size.split_once('x').unwrap();
        let resample = filters.iter().find(|f| f.0 == filter).unwrap().1;
        let image = RgbImage::open(&images.join(photo)).unwrap();
        let out = resize(&image, w.parse().unwrap(), h.parse().unwrap(), resample);
        let got = format!("{:x}", Sha256::digest(&out.data));
        checked += 1;
        if got != want.as_str().unwrap() {
            mismatches.push(key.clone());
        }
    }
    assert_eq!(checked, 8 * 6 * 2);
    assert!(mismatches.is_empty(), "differ from Pillow: {mismatches:?}");
}

fn decode_error(bytes: &[u8], name: &str) -> String {
    match RgbImage::decode(bytes, Path::new(name)) {
        Err(e @ inferox::Error::Image { .. }) => e.to_string(),
        other => panic!("{name}: expected an image error, got {other:?}"),
    }
}

/// A PNG header announcing `width` × `height`, with a valid CRC and no pixel data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32fast::hash(&ihdr).to_be_bytes());
    png
}

#[test]
fn bad_images_are_clear_errors() {
    let rocket = std::fs::read(common::images_dir().join("rocket.jpg")).unwrap();
    let e = decode_error(&rocket[..rocket.len() / 2], "half.jpg");
    assert!(e.contains("half.jpg") && e.contains("truncated"), "{e}");
    let e = decode_error(&rocket[..300], "header.jpg");
    assert!(e.contains("truncated"), "{e}");
    let e = decode_error(b"", "empty.png");
    assert!(e.contains("empty.png: the file is empty"), "{e}");
    let e = decode_error(b"hello, I am text\n", "text.png");
    assert!(e.contains("not an image in a format inferox reads"), "{e}");
    let started = std::time::Instant::now();
    let e = decode_error(&png_header(50_000, 50_000), "bomb.png");
    assert!(
        e.contains("50000×50000") && e.contains("decompression-bomb"),
        "{e}"
    );
    assert!(started.elapsed().as_secs() < 2, "refused before decoding");
    let e = decode_error(&png_header(64, 64), "nodata.png");
    assert!(e.contains("damaged or truncated"), "{e}");
    // Found by fuzzing: a palette whose length is not a multiple of 3 made the png crate panic.
    let palette = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/bad/palette-length.png"),
    )
    .unwrap();
    let e = decode_error(&palette, "palette-length.png");
    assert!(e.contains("damaged"), "{e}");
    let astronaut = std::fs::read(common::images_dir().join("astronaut.png")).unwrap();
    let e = decode_error(&astronaut[..astronaut.len() - 5000], "cut.png");
    assert!(e.contains("cut.png"), "{e}");
}

fn encode_png(
    width: usize,
    height: usize,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<(Vec<u8>, Vec<u8>)>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some((plte, trns)) = palette {
        enc.set_palette(plte);
        enc.set_trns(trns);
    }
    let mut w = enc.write_header().unwrap();
    w.write_image_data(data).unwrap();
    w.finish().unwrap();
    out
}

/// 16-bit and palette PNGs made from real photographs become the RGB that Pillow makes of
/// them: 16-bit samples keep their high byte (Pillow's PNG reader), palette entries are looked
/// up and transparency dropped (`convert("RGB")`).
#[test]
fn sixteen_bit_and_palette_pngs_become_pillows_rgb() {
    let dir = common::images_dir();
    let rgb = RgbImage::open(&dir.join("astronaut.png")).unwrap();
    let wide: Vec<u8> = rgb
        .data
        .iter()
        .enumerate()
        .flat_map(|(i, &v)| [v, (i * 7 % 256) as u8]) // big-endian: high byte, then noise
        .collect();
    let png16 = encode_png(
        rgb.width,
        rgb.height,
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        None,
        &wide,
    );
    assert_eq!(
        RgbImage::decode(&png16, Path::new("rgb16.png")).unwrap(),
        rgb
    );

    let gray = RgbImage::open(&dir.join("camera.png")).unwrap();
    let luma: Vec<u8> = gray.data.chunks(3).flat_map(|p| [p[0], 0x5a]).collect();
    let png16 = encode_png(
        gray.width,
        gray.height,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &luma,
    );
    assert_eq!(
        RgbImage::decode(&png16, Path::new("gray16.png")).unwrap(),
        gray
    );

    // A palette of the GIF's colours (the GIF itself was checked against transformers), one
    // entry marked transparent.
    let gif = RgbImage::open(&dir.join("no_time_for_that_tiny.gif")).unwrap();
    let mut colors: Vec<[u8; 3]> = gif.data.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
    colors.sort();
    colors.dedup();
    assert!(colors.len() <= 256);
    let index: Vec<u8> = gif
        .data
        .chunks(3)
        .map(|p| colors.binary_search(&[p[0], p[1], p[2]]).unwrap() as u8)
        .collect();
    let plte = colors.concat();
    let png8 = encode_png(
        gif.width,
        gif.height,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some((plte, vec![255, 0])),
        &index,
    );
    assert_eq!(
        RgbImage::decode(&png8, Path::new("palette.png")).unwrap(),
        gif
    );
}
