//! Resizing 8-bit RGB images exactly as Pillow does (`Image.resize`, which transformers' PIL
//! image processors call): separable convolution with Pillow's filters and support, its 22-bit
//! fixed-point coefficients and rounding, a horizontal then a vertical pass through an 8-bit
//! intermediate, and nearest-neighbour through its affine sampler. Matching it bit for bit is
//! what makes our pixel values those transformers computes.
//!
//! Ported from Pillow's `src/libImaging/Resample.c` and `Geometry.c`
//! (<https://github.com/python-pillow/Pillow/blob/main/src/libImaging/Resample.c>).

use super::RgbImage;
use crate::vision::Resample;
use std::f64::consts::PI;

/// Fixed-point precision of the 8-bit coefficients (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * PI;
        // Pillow writes the constants as C floats.
        x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// A filter and its support (Pillow's `struct filter`).
fn filter(resample: Resample) -> (fn(f64) -> f64, f64) {
    match resample {
        Resample::Box => (box_filter, 0.5),
        Resample::Bilinear => (bilinear, 1.0),
        Resample::Hamming => (hamming, 1.0),
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Lanczos => (lanczos, 3.0),
        Resample::Nearest => unreachable!("nearest is not a convolution"),
    }
}

/// Coefficients of one axis: for each output position the first input index, the count, and
/// `ksize` fixed-point weights (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize, resample: Resample) -> Self {
        let (f, support) = filter(resample);
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) cast truncates toward zero; the result is clamped at 0 anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let w = f((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (x, out) in row.iter_mut().enumerate().take(xmax) {
                let w = if ww != 0.0 { k[x] / ww } else { k[x] };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                *out = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            bounds.push((xmin, xmax));
        }
        Coefficients {
            ksize,
            bounds,
            weights,
        }
    }

    fn row(&self, i: usize) -> (usize, &[i32]) {
        let (min, count) = self.bounds[i];
        (min, &self.weights[i * self.ksize..i * self.ksize + count])
    }
}

/// Pillow's `clip8`: a fixed-point sum (with its rounding half already added) to 0..=255.
#[inline]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(src: &RgbImage, out_width: usize, c: &Coefficients) -> RgbImage {
    let mut out = vec![0u8; out_width * src.height * 3];
    for (y, dst) in out.chunks_exact_mut(out_width * 3).enumerate() {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (min, k) = c.row(xx);
            let mut sum = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &w) in k.iter().enumerate() {
                let p = &row[(min + x) * 3..(min + x) * 3 + 3];
                sum[0] += p[0] as i32 * w;
                sum[1] += p[1] as i32 * w;
                sum[2] += p[2] as i32 * w;
            }
            px.copy_from_slice(&[clip8(sum[0]), clip8(sum[1]), clip8(sum[2])]);
        }
    }
    RgbImage {
        width: out_width,
        height: src.height,
        data: out,
    }
}

fn vertical(src: &RgbImage, out_height: usize, c: &Coefficients) -> RgbImage {
    let line = src.width * 3;
    let mut out = vec![0u8; line * out_height];
    let mut sums = vec![0i32; line];
    for (yy, dst) in out.chunks_exact_mut(line).enumerate() {
        let (min, k) = c.row(yy);
        sums.fill(1 << (PRECISION_BITS - 1));
        for (y, &w) in k.iter().enumerate() {
            let row = &src.data[(min + y) * line..(min + y + 1) * line];
            for (s, &p) in sums.iter_mut().zip(row) {
                *s += p as i32 * w;
            }
        }
        for (d, &s) in dst.iter_mut().zip(&sums) {
            *d = clip8(s);
        }
    }
    RgbImage {
        width: src.width,
        height: out_height,
        data: out,
    }
}

/// Pillow's nearest-neighbour resize: its affine sampler with the source coordinate of each
/// output pixel accumulated in steps of the scale, from half a step in.
fn nearest(src: &RgbImage, width: usize, height: usize) -> RgbImage {
    let coords = |in_size: usize, out_size: usize| -> Vec<usize> {
        let step = in_size as f64 / out_size as f64;
        let mut at = step * 0.5;
        (0..out_size)
            .map(|_| {
                let i = (at as usize).min(in_size - 1);
                at += step;
                i
            })
            .collect()
    };
    let xs = coords(src.width, width);
    let ys = coords(src.height, height);
    let mut data = Vec::with_capacity(width * height * 3);
    for &y in &ys {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        for &x in &xs {
            data.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// `src` resized to `width` × `height` with `resample`, as Pillow's `Image.resize(size,
/// resample)` computes it for an RGB image.
pub fn resize(src: &RgbImage, width: usize, height: usize, resample: Resample) -> RgbImage {
    if (width, height) == (src.width, src.height) {
        return src.clone();
    }
    if resample == Resample::Nearest {
        return nearest(src, width, height);
    }
    let mut out = None;
    if width != src.width {
        out = Some(horizontal(
            src,
            width,
            &Coefficients::new(src.width, width, resample),
        ));
    }
    if height != src.height {
        let from = out.as_ref().unwrap_or(src);
        out = Some(vertical(
            from,
            height,
            &Coefficients::new(src.height, height, resample),
        ));
    }
    out.unwrap_or_else(|| src.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: usize, height: usize) -> RgbImage {
        let data = (0..width * height * 3)
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        RgbImage {
            width,
            height,
            data,
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for filter in [
            Resample::Box,
            Resample::Bilinear,
            Resample::Hamming,
            Resample::Bicubic,
            Resample::Lanczos,
        ] {
            for (a, b) in [(451, 224), (224, 451), (7, 3), (3, 7)] {
                let c = Coefficients::new(a, b, filter);
                for i in 0..b {
                    let (min, k) = c.row(i);
                    assert!(min + k.len() <= a);
                    let sum: i64 = k.iter().map(|&w| w as i64).sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                        "{sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_and_sizes_are_kept() {
        let flat = RgbImage {
            width: 9,
            height: 5,
            data: [10u8, 200, 77].repeat(45),
        };
        for filter in [Resample::Lanczos, Resample::Bicubic, Resample::Nearest] {
            let out = resize(&flat, 4, 13, filter);
            assert_eq!((out.width, out.height), (4, 13));
            assert!(out.data.chunks(3).all(|p| p == [10, 200, 77]), "{filter:?}");
        }
        let img = image(6, 4);
        assert_eq!(resize(&img, 6, 4, Resample::Bicubic), img);
    }

    #[test]
    fn nearest_picks_pillows_pixels() {
        // Pillow: Image.resize((2, 1), NEAREST) of a 5-pixel row takes columns 1 and 3.
        let img = RgbImage {
            width: 5,
            height: 1,
            data: (0..15).collect(),
        };
        assert_eq!(
            resize(&img, 2, 1, Resample::Nearest).data,
            [3, 4, 5, 9, 10, 11]
        );
    }
}
