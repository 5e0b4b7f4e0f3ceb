//! Image preprocessing driven by the manifest: images are decoded, made 8-bit RGB, resized,
//! center-cropped, rescaled and normalised exactly as the package's image hint says (the steps
//! transformers' PIL image processors take, see [`crate::vision`]), into one `[batch, 3, height,
//! width]` float32 tensor.
//!
//! Decoding reads JPEG, PNG (gray, RGB, RGBA, palette; 8 or 16 bits), GIF (first frame), BMP,
//! TIFF and WebP. Conversion to RGB follows Pillow's `convert("RGB")`: alpha is dropped (not
//! composited), palettes are looked up, gray is replicated, and 16-bit samples keep their high
//! byte as Pillow's PNG reader does for RGB. (Pillow clips 16-bit *gray* to 255 instead, which
//! turns most pictures white; we scale it like 16-bit RGB.) EXIF orientation is not applied,
//! as transformers does not apply it.

mod classify;
mod resample;

pub use classify::{Classification, Prediction, top_k};
pub use resample::resize;

use crate::schema::{IoSchema, Preprocessing};
use crate::tensor::{DType, HostTensor};
use crate::vision::ImagePreprocessing;
use crate::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use rayon::prelude::*;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Whether JPEG decoding runs libjpeg-turbo's SIMD code. It is built only when `nasm` was
/// found at build time (x86); without it the decoder falls back to C: the same pixels, but a
/// fifth more time for the benchmark photos of docs/benchmarks.md on one thread. `inferox
/// doctor` reports it.
pub fn jpeg_simd() -> bool {
    // libjpeg-turbo's own query, present in every build of it (`jsimd_none.c` answers 0).
    unsafe extern "C" {
        fn jsimd_can_idct_islow() -> std::ffi::c_int;
    }
    // SAFETY: a query without arguments into the statically linked libjpeg-turbo; it reads
    // the CPU's features and its own thread-local state only.
    unsafe { jsimd_can_idct_islow() != 0 }
}

/// Largest image decoded, in pixels: Pillow's decompression-bomb limit (`MAX_IMAGE_PIXELS`,
/// 89,478,485, about a quarter gigabyte of RGBA). Larger images are refused before decoding.
pub const MAX_PIXELS: u64 = 89_478_485;

/// Refuses empty images and images beyond `limit` pixels, before anything is allocated.
fn check_size(width: usize, height: usize, limit: u64, name: &Path) -> Result<()> {
    let pixels = width as u64 * height as u64;
    if pixels == 0 {
        return Err(image_error(name, format!("the image is {width}×{height}")));
    }
    if pixels > limit {
        return Err(image_error(
            name,
            format!(
                "the image is {width}×{height} ({pixels} pixels), more than the limit of \
                 {limit} (a decompression-bomb guard)"
            ),
        ));
    }
    Ok(())
}

/// Interleaved RGB from pixels of `step` samples each, through `f`.
fn to_rgb<T>(samples: &[T], step: usize, f: impl Fn(&[T]) -> [u8; 3]) -> Vec<u8> {
    let mut rgb = vec![0u8; samples.len() / step * 3];
    for (d, p) in rgb.chunks_exact_mut(3).zip(samples.chunks_exact(step)) {
        d.copy_from_slice(&f(p));
    }
    rgb
}

/// Decodes a JPEG with libjpeg-turbo's decoder (mozjpeg), as Pillow does: the same integer
/// IDCT and chroma upsampling, so the same pixels. A stream that stops before its end-of-image
/// marker is refused (libjpeg would fill the rest with gray; Pillow refuses it too).
fn decode_jpeg(bytes: &[u8], name: &Path, limit: u64) -> Result<RgbImage> {
    // Entropy-coded data has no 0xff but before 0x00 or a restart marker: every match is a
    // marker, and memchr finds the 0xff bytes from the end without reading the rest byte-wise.
    let last =
        |marker: u8| memchr::memrchr_iter(0xff, bytes).find(|&i| bytes.get(i + 1) == Some(&marker));
    if last(0xd9) < last(0xda) || last(0xd9).is_none() {
        return Err(image_error(
            name,
            "this JPEG stops before its end-of-image marker: the file is truncated",
        ));
    }
    let damaged = |e: String| image_error(name, format!("this JPEG is damaged: {e}"));
    crate::guard::guarded(
        || {
            let d = mozjpeg::Decompress::new_mem(bytes).map_err(|e| damaged(e.to_string()))?;
            let (width, height) = d.size();
            check_size(width, height, limit, name)?;
            let mut image = d.rgb().map_err(|e| damaged(e.to_string()))?;
            let rows: Vec<[u8; 3]> = image.read_scanlines().map_err(|e| damaged(e.to_string()))?;
            image.finish().map_err(|e| damaged(e.to_string()))?;
            if rows.len() != width * height {
                return Err(damaged(format!(
                    "{} pixels decoded of {width}×{height}",
                    rows.len()
                )));
            }
            Ok(RgbImage {
                width,
                height,
                data: rows.into_flattened(),
            })
        },
        damaged,
    )
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

fn image_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl RgbImage {
    /// Reads and decodes the image file at `path`.
    pub fn open(path: &Path) -> Result<RgbImage> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode(&bytes, path)
    }

    /// Decodes an encoded image (`name` says where it came from, for errors). The format is
    /// recognised from the bytes, not the name. Images over [`MAX_PIXELS`] are refused.
    pub fn decode(bytes: &[u8], name: &Path) -> Result<RgbImage> {
        Self::decode_limited(bytes, name, MAX_PIXELS)
    }

    /// [`RgbImage::decode`] with a limit of `max_pixels` (width × height) of its own, for hosts
    /// that must bound memory tighter than [`MAX_PIXELS`]; it is checked before decoding.
    pub fn decode_limited(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<RgbImage> {
        if bytes.is_empty() {
            return Err(image_error(name, "the file is empty"));
        }
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| image_error(name, e.to_string()))?;
        if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            return decode_jpeg(bytes, name, max_pixels);
        }
        // PNG: the size is in the first chunk; check it before the decoder reads further.
        if let Some(ihdr) = bytes.strip_prefix(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR")
            && ihdr.len() >= 8
        {
            let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            check_size(be(&ihdr[..4]), be(&ihdr[4..8]), max_pixels, name)?;
        }
        let Some(format) = reader.format() else {
            return Err(image_error(
                name,
                "not an image in a format inferox reads (JPEG, PNG, GIF, BMP, TIFF, WebP)",
            ));
        };
        let describe = |e: image::ImageError| {
            let what = match e {
                image::ImageError::Limits(_) => "too large to decode",
                image::ImageError::Unsupported(_) => "uses a feature inferox cannot decode",
                _ => "is damaged or truncated",
            };
            image_error(name, format!("this {format:?} image {what}: {e}"))
        };
        // The decoders panic on some damaged files (png 0.18 on a palette whose length is not
        // a multiple of 3, found by fuzzing): that is a damaged image, not a crash.
        let image = crate::guard::guarded(
            || {
                let mut decoder = reader.into_decoder().map_err(describe)?;
                let (width, height) = decoder.dimensions();
                check_size(width as usize, height as usize, max_pixels, name)?;
                let mut limits = Limits::default();
                limits.max_image_width = Some(width);
                limits.max_image_height = Some(height);
                limits.max_alloc = Some(max_pixels.min(MAX_PIXELS) * 8 + (64 << 20));
                decoder.set_limits(limits).map_err(describe)?;
                DynamicImage::from_decoder(decoder).map_err(describe)
            },
            |panic| {
                image_error(
                    name,
                    format!("this {format:?} image is damaged: the decoder failed ({panic})"),
                )
            },
        )?;
        Ok(Self::from_dynamic(image))
    }

    /// Pillow's `convert("RGB")` of a decoded image (see the module docs for 16-bit samples).
    fn from_dynamic(image: DynamicImage) -> RgbImage {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let high = |v: u16| (v >> 8) as u8;
        let data: Vec<u8> = match image {
            DynamicImage::ImageRgb8(i) => i.into_raw(),
            DynamicImage::ImageRgba8(i) => to_rgb(&i.into_raw(), 4, |p| [p[0], p[1], p[2]]),
            DynamicImage::ImageLuma8(i) => to_rgb(&i.into_raw(), 1, |p| [p[0]; 3]),
            DynamicImage::ImageLumaA8(i) => to_rgb(&i.into_raw(), 2, |p| [p[0]; 3]),
            DynamicImage::ImageRgb16(i) => i.into_raw().iter().map(|&v| high(v)).collect(),
            DynamicImage::ImageRgba16(i) => {
                to_rgb(&i.into_raw(), 4, |p| [high(p[0]), high(p[1]), high(p[2])])
            }
            DynamicImage::ImageLuma16(i) => to_rgb(&i.into_raw(), 1, |p| [high(p[0]); 3]),
            DynamicImage::ImageLumaA16(i) => to_rgb(&i.into_raw(), 2, |p| [high(p[0]); 3]),
            other => other.into_rgb8().into_raw(),
        };
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// Transformers' `center_crop`: the middle `height` × `width` (top-left rounded down), with
    /// zero padding where the image is smaller.
    pub fn center_crop(&self, height: usize, width: usize) -> RgbImage {
        let (h, w) = (self.height as isize, self.width as isize);
        let (ch, cw) = (height as isize, width as isize);
        // Where the crop is larger, transformers pads with zeros at ceil((new - old) / 2),
        // which puts source pixel y at y + floor((old - new) / 2) all the same.
        let top = (h - ch).div_euclid(2);
        let left = (w - cw).div_euclid(2);
        let mut data = vec![0u8; height * width * 3];
        for y in 0..ch {
            let sy = y + top;
            if sy < 0 || sy >= h {
                continue;
            }
            for x in 0..cw {
                let sx = x + left;
                if sx < 0 || sx >= w {
                    continue;
                }
                let s = ((sy * w + sx) * 3) as usize;
                let d = ((y * cw + x) * 3) as usize;
                data[d..d + 3].copy_from_slice(&self.data[s..s + 3]);
            }
        }
        RgbImage {
            width,
            height,
            data,
        }
    }
}

/// Builds the image input of a model from its schema's image hint.
#[derive(Clone, Debug)]
pub struct ImagePreprocessor {
    input: String,
    steps: ImagePreprocessing,
}

impl ImagePreprocessor {
    /// The preprocessor for the input of `io` that carries an image hint, if there is one.
    pub fn from_schema(io: &IoSchema) -> Result<Option<Self>> {
        let mut found = io.inputs.iter().filter_map(|s| match &s.preprocessing {
            Some(Preprocessing::Image(p)) => Some((s, p)),
            _ => None,
        });
        let Some((spec, steps)) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(Error::Unsupported(
                "the schema has more than one image input; give the tensors directly".into(),
            ));
        }
        if spec.dtype != DType::Float32 || steps.layout != "nchw" || spec.shape.len() != 4 {
            return Err(Error::Unsupported(format!(
                "image input `{}` is {} {} ({}); images are made into float32 [batch, 3, height, \
                 width]",
                spec.name,
                spec.dtype,
                spec.shape_string(),
                steps.layout
            )));
        }
        Ok(Some(ImagePreprocessor {
            input: spec.name.clone(),
            steps: steps.clone(),
        }))
    }

    /// The input it fills (`pixel_values`).
    pub fn input_name(&self) -> &str {
        &self.input
    }

    /// The steps it applies.
    pub fn steps(&self) -> &ImagePreprocessing {
        &self.steps
    }

    /// One image through resize and crop, still 8-bit RGB.
    pub fn resize_and_crop(&self, image: &RgbImage) -> RgbImage {
        let mut image = match self.steps.resize {
            Some(r) => {
                let (h, w) = r.to.output_size(image.height, image.width);
                resize(image, w, h, r.resample)
            }
            None => image.clone(),
        };
        if let Some(c) = self.steps.center_crop {
            image = image.center_crop(c.height, c.width);
        }
        image
    }

    /// Images to the model input, `[batch, 3, height, width]` float32. Every image must come
    /// out at the same size (the steps fix it for all the processors inferox reads). Images are
    /// processed in parallel on rayon's pool (`--threads`, `RAYON_NUM_THREADS`).
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<HostTensor> {
        self.batch(images.par_iter().map(|i| self.resize_and_crop(i)).collect())
    }

    /// Decodes the image files at `paths` and preprocesses them as one batch, each file decoded
    /// and preprocessed in parallel with the others.
    pub fn preprocess_files(&self, paths: &[PathBuf]) -> Result<HostTensor> {
        let images = paths
            .par_iter()
            .map(|p| Ok(self.resize_and_crop(&RgbImage::open(p)?)))
            .collect::<Result<Vec<_>>>()?;
        self.batch(images)
    }

    /// Resized and cropped images of one size, rescaled and normalised into one `[batch, 3,
    /// height, width]` tensor, each image written in place by one task.
    fn batch(&self, images: Vec<RgbImage>) -> Result<HostTensor> {
        let Some(first) = images.first() else {
            return Err(Error::InvalidArgument("no images given".into()));
        };
        let size = (first.height, first.width);
        if let Some((i, img)) = images
            .iter()
            .enumerate()
            .find(|(_, img)| (img.height, img.width) != size)
        {
            return Err(Error::Input {
                name: self.input.clone(),
                message: format!(
                    "image {i} comes out at {}×{} but image 0 at {}×{}; this package's \
                     preprocessing does not fix the size, so give images of one size",
                    img.width, img.height, size.1, size.0
                ),
            });
        }
        if let Some(i) = images
            .iter()
            .position(|img| img.data.len() != img.height * img.width * 3)
        {
            return Err(Error::InvalidArgument(format!(
                "image {i} holds {} bytes, not the {} of {}×{} RGB pixels",
                images[i].data.len(),
                images[i].height * images[i].width * 3,
                images[i].width,
                images[i].height
            )));
        }
        let tables = self.tables();
        let plane = size.0 * size.1;
        let n = images.len();
        let mut data: Vec<f32> = Vec::with_capacity(n * 3 * plane);
        data.spare_capacity_mut()[..n * 3 * plane]
            .par_chunks_mut(3 * plane)
            .zip(&images)
            .for_each(|(out, image)| {
                let (r, gb) = out.split_at_mut(plane);
                let (g, b) = gb.split_at_mut(plane);
                let planes = r.iter_mut().zip(g).zip(b);
                for (((r, g), b), px) in planes.zip(image.data.chunks_exact(3)) {
                    r.write(tables[0][px[0] as usize]);
                    g.write(tables[1][px[1] as usize]);
                    b.write(tables[2][px[2] as usize]);
                }
            });
        // SAFETY: every image's chunk of 3 × plane values was written above.
        unsafe { data.set_len(n * 3 * plane) };
        HostTensor::from_f32(vec![n, 3, size.0, size.1], data)
    }

    /// Per channel, the rescaled and normalised value of each of the 256 byte values:
    /// transformers' float64 rescale cast to float32, then float32 (x - mean) / std.
    fn tables(&self) -> [[f32; 256]; 3] {
        let s = &self.steps;
        let channel = |v: &[f64], c: usize| v.get(c).or(v.first()).copied().unwrap_or(0.0);
        std::array::from_fn(|c| {
            let (m, d) = (channel(&s.mean, c) as f32, channel(&s.std, c) as f32);
            std::array::from_fn(|v| ((v as f64 * s.rescale_factor) as f32 - m) / d)
        })
    }
}
