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

/// One output row of the horizontal pass: `dst[xx]` (3 bytes) from `row` (3 bytes per pixel).
fn horizontal_row(row: &[u8], dst: &mut [u8], taps: &[(usize, &[i32])]) {
    for (&(min, k), px) in taps.iter().zip(dst.chunks_exact_mut(3)) {
        let span = &row[min * 3..(min + k.len()) * 3];
        let mut s = [1i32 << (PRECISION_BITS - 1); 3];
        for (p, &w) in span.chunks_exact(3).zip(k) {
            s[0] += p[0] as i32 * w;
            s[1] += p[1] as i32 * w;
            s[2] += p[2] as i32 * w;
        }
        px.copy_from_slice(&[clip8(s[0]), clip8(s[1]), clip8(s[2])]);
    }
}

/// The horizontal pass on x86 vectors: each pixel's three bytes widened to 32-bit lanes (a
/// fourth lane weighted zero) and multiplied by its tap's weight, two taps per AVX2 step or
/// four per AVX-512 step. The integer sums and the clip are Pillow's, so the bytes are too.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Coefficients, PRECISION_BITS};
    use std::arch::x86_64::*;

    /// Weights laid out for the kernels: per output pixel, `stride` lanes of four per tap
    /// (`[w, w, w, 0]`), zero beyond its taps (padded to a multiple of four taps); and per
    /// output pixel the byte offset of its first tap in a row and its count of four-tap groups.
    pub struct Lanes {
        stride: usize,
        lanes: Vec<i32>,
        groups: Vec<(usize, usize)>,
        /// How far past a row's start the four-row kernel reads: 16 bytes per group load.
        pub reach: usize,
    }

    impl Lanes {
        pub fn new(c: &Coefficients, out: usize) -> Lanes {
            let stride = c.ksize.div_ceil(4) * 16;
            let mut lanes = vec![0i32; out * stride];
            let mut groups = Vec::with_capacity(out);
            for xx in 0..out {
                let (min, k) = c.row(xx);
                for (t, &w) in k.iter().enumerate() {
                    let at = xx * stride + t * 4;
                    lanes[at..at + 3].fill(w);
                }
                groups.push((min * 3, k.len().div_ceil(4)));
            }
            let reach = groups
                .iter()
                .map(|&(at, n)| at + 12 * n.saturating_sub(1) + 16)
                .max()
                .unwrap_or(0);
            Lanes {
                stride,
                lanes,
                groups,
                reach,
            }
        }

        fn of(&self, xx: usize) -> &[i32] {
            &self.lanes[xx * self.stride..(xx + 1) * self.stride]
        }
    }

    /// `N` bytes of `tail` from `at`, zero past its end.
    #[inline(always)]
    fn bytes<const N: usize>(tail: &[u8], at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        match tail.get(at..at + N) {
            Some(s) => b.copy_from_slice(s),
            None => b[..tail.len() - at].copy_from_slice(&tail[at..]),
        }
        b
    }

    /// Adds the rounding half, shifts, and saturates to 0..=255 (Pillow's `clip8`), then
    /// writes the three channels.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(sum: __m128i, px: &mut [u8]) {
        let sum = _mm_add_epi32(sum, _mm_set1_epi32(1 << (PRECISION_BITS - 1)));
        let shifted = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(sum);
        let narrow = _mm_packus_epi16(_mm_packs_epi32(shifted, shifted), shifted);
        px.copy_from_slice(&(_mm_cvtsi128_si32(narrow) as u32).to_le_bytes()[..3]);
    }

    /// Pixels `p0 p1 p2 p3` (12 bytes) to the 16 bytes `p0 0 p1 0 p2 0 p3 0`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn spread(b: __m128i) -> __m128i {
        _mm_shuffle_epi8(
            b,
            _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1),
        )
    }

    /// One output row; `tail` is the image's bytes from the row's start on.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn row_avx2(tail: &[u8], dst: &mut [u8], c: &Coefficients, l: &Lanes) {
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (min, k) = c.row(xx);
            let mut acc = _mm256_setzero_si256();
            for (p, wp) in l
                .of(xx)
                .chunks_exact(8)
                .take(k.len().div_ceil(2))
                .enumerate()
            {
                let b = u64::from_le_bytes(bytes::<8>(tail, (min + 2 * p) * 3));
                let pixels = _mm256_cvtepu8_epi32(spread(_mm_cvtsi64_si128(b as i64)));
                // SAFETY: `wp` is 8 lanes.
                let weights = unsafe { _mm256_loadu_si256(wp.as_ptr().cast()) };
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(pixels, weights));
            }
            let lo = _mm256_castsi256_si128(acc);
            store(_mm_add_epi32(lo, _mm256_extracti128_si256(acc, 1)), px);
        }
    }

    /// [`row_avx2`] four taps at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f,avx2")]
    pub unsafe fn row_avx512(tail: &[u8], dst: &mut [u8], c: &Coefficients, l: &Lanes) {
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (min, k) = c.row(xx);
            let mut acc = _mm512_setzero_si512();
            for (q, wq) in l
                .of(xx)
                .chunks_exact(16)
                .take(k.len().div_ceil(4))
                .enumerate()
            {
                let b = bytes::<16>(tail, (min + 4 * q) * 3);
                // SAFETY: `b` and `wq` are 16 bytes and 16 lanes.
                let (b, weights) = unsafe {
                    (
                        _mm_loadu_si128(b.as_ptr().cast()),
                        _mm512_loadu_si512(wq.as_ptr().cast()),
                    )
                };
                let pixels = _mm512_cvtepu8_epi32(spread(b));
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(pixels, weights));
            }
            let half = _mm256_add_epi32(
                _mm512_castsi512_si256(acc),
                _mm512_extracti64x4_epi64::<1>(acc),
            );
            let lo = _mm256_castsi256_si128(half);
            store(_mm_add_epi32(lo, _mm256_extracti128_si256(half, 1)), px);
        }
    }

    /// Four rows at once (`line` bytes apart in `src`, the first at its start) into the four
    /// rows of `dst`: each pixel's four taps are one 16-byte load broadcast to the four 128-bit
    /// lanes and one byte shuffle that widens tap `j`'s three bytes in lane `j`; the weights
    /// are loaded once for the four rows, and the four sums are folded and stored together.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW, and `src` must hold `3 * line + l.reach`
    /// bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    pub unsafe fn rows4_avx512(src: &[u8], line: usize, dst: &mut [u8], l: &Lanes) {
        assert!(src.len() >= 3 * line + l.reach && dst.len().is_multiple_of(12));
        let out_line = dst.len() / 4;
        let spread: [i8; 64] = std::array::from_fn(|i| {
            let (lane, at) = (i / 16, i % 16);
            if at % 4 != 0 || at >= 12 {
                -1
            } else {
                (3 * lane + at / 4) as i8
            }
        });
        // SAFETY: `spread` is 64 bytes.
        let spread = unsafe { _mm512_loadu_si512(spread.as_ptr().cast()) };
        let half = _mm512_set1_epi32(1 << (PRECISION_BITS - 1));
        let rows = src.as_ptr();
        for (xx, &(at, groups)) in l.groups.iter().enumerate() {
            let weights = l.of(xx).as_ptr();
            let mut acc = [_mm512_setzero_si512(); 4];
            for g in 0..groups {
                // SAFETY: `of(xx)` holds 16 lanes per group.
                let w = unsafe { _mm512_loadu_si512(weights.add(16 * g).cast()) };
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: the read ends by `r * line + reach`, within `src` (asserted).
                    let b = unsafe { _mm_loadu_si128(rows.add(r * line + at + 12 * g).cast()) };
                    let pixels = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(b), spread);
                    *a = _mm512_add_epi32(*a, _mm512_mullo_epi32(pixels, w));
                }
            }
            // Lane sums: [a0 a1 a2 a3] with each row's four lanes added.
            let fold = |x: __m512i, y: __m512i| {
                _mm512_add_epi32(
                    _mm512_shuffle_i32x4::<0b01_00_01_00>(x, y),
                    _mm512_shuffle_i32x4::<0b11_10_11_10>(x, y),
                )
            };
            let (a01, a23) = (fold(acc[0], acc[1]), fold(acc[2], acc[3]));
            let sums = _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b10_00_10_00>(a01, a23),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(a01, a23),
            );
            let shifted = _mm512_srai_epi32::<PRECISION_BITS>(_mm512_add_epi32(sums, half));
            let bytes = _mm512_cvtusepi32_epi8(_mm512_max_epi32(shifted, _mm512_setzero_si512()));
            let mut px = [0u8; 16];
            // SAFETY: `px` is 16 bytes.
            unsafe { _mm_storeu_si128(px.as_mut_ptr().cast(), bytes) };
            for r in 0..4 {
                let d = r * out_line + xx * 3;
                dst[d..d + 3].copy_from_slice(&px[4 * r..4 * r + 3]);
            }
        }
    }
}

/// A vector kernel for one row of the horizontal pass.
#[cfg(target_arch = "x86_64")]
type RowKernel = unsafe fn(&[u8], &mut [u8], &Coefficients, &simd::Lanes);

/// The vector kernels this CPU runs, widest first.
#[cfg(target_arch = "x86_64")]
fn row_kernels() -> Vec<RowKernel> {
    let mut kernels: Vec<RowKernel> = Vec::new();
    if is_x86_feature_detected!("avx512f") {
        kernels.push(simd::row_avx512);
    }
    if is_x86_feature_detected!("avx2") {
        kernels.push(simd::row_avx2);
    }
    kernels
}

/// Whether this CPU runs [`simd::rows4_avx512`].
#[cfg(target_arch = "x86_64")]
fn four_rows() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

fn horizontal(src: &RgbImage, out_width: usize, c: &Coefficients) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    if let Some(&kernel) = row_kernels().first() {
        // SAFETY: the kernel's CPU features were detected, and those of the four-row kernel.
        return unsafe { horizontal_with(src, out_width, c, kernel, four_rows()) };
    }
    horizontal_scalar(src, out_width, c)
}

/// The horizontal pass with `kernel`, four rows at a time where `quad` says so and the rows
/// are far enough from the end of the image for its wide reads.
///
/// # Safety
/// The CPU must have `kernel`'s features, and those of [`simd::rows4_avx512`] if `quad`.
#[cfg(target_arch = "x86_64")]
unsafe fn horizontal_with(
    src: &RgbImage,
    out_width: usize,
    c: &Coefficients,
    kernel: RowKernel,
    quad: bool,
) -> RgbImage {
    let line = src.width * 3;
    let out_line = out_width * 3;
    let mut out = vec![0u8; out_line * src.height];
    let lanes = simd::Lanes::new(c, out_width);
    let mut done = 0;
    if quad {
        let fits = |y: usize| (y + 3) * line + lanes.reach <= src.data.len();
        for (q, dst) in out.chunks_exact_mut(4 * out_line).enumerate() {
            if !fits(4 * q) {
                break;
            }
            // SAFETY: the caller checked the CPU; `fits` checked the reads.
            unsafe { simd::rows4_avx512(&src.data[4 * q * line..], line, dst, &lanes) };
            done = 4 * (q + 1);
        }
    }
    for (y, dst) in out.chunks_exact_mut(out_line).enumerate().skip(done) {
        // SAFETY: the caller checked the CPU; the row starts at `y * line`.
        unsafe { kernel(&src.data[y * line..], dst, c, &lanes) };
    }
    RgbImage {
        width: out_width,
        height: src.height,
        data: out,
    }
}

fn horizontal_scalar(src: &RgbImage, out_width: usize, c: &Coefficients) -> RgbImage {
    let taps: Vec<(usize, &[i32])> = (0..out_width).map(|xx| c.row(xx)).collect();
    let mut out = vec![0u8; out_width * src.height * 3];
    let rows = src.data.chunks_exact(src.width * 3);
    for (row, dst) in rows.zip(out.chunks_exact_mut(out_width * 3)) {
        horizontal_row(row, dst, &taps);
    }
    RgbImage {
        width: out_width,
        height: src.height,
        data: out,
    }
}

fn vertical(src: &RgbImage, out_height: usize, c: &Coefficients) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn wide(src: &RgbImage, out_height: usize, c: &Coefficients) -> RgbImage {
            vertical_pass(src, out_height, c)
        }
        // SAFETY: AVX2 was detected.
        return unsafe { wide(src, out_height, c) };
    }
    vertical_pass(src, out_height, c)
}

/// The vertical pass: whole rows at a time, which the compiler vectorises.
#[inline(always)]
fn vertical_pass(src: &RgbImage, out_height: usize, c: &Coefficients) -> RgbImage {
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
    fn the_vector_pass_is_the_scalar_pass() {
        let filters = [
            Resample::Box,
            Resample::Bilinear,
            Resample::Hamming,
            Resample::Bicubic,
            Resample::Lanczos,
        ];
        for filter in filters {
            for (w, h, to) in [
                (451, 7, 224),
                (451, 4, 224),
                (37, 9, 224),
                (1000, 3, 13),
                (1411, 8, 224),
                (9, 2, 1),
            ] {
                let img = image(w, h);
                let c = Coefficients::new(w, to, filter);
                let scalar = horizontal_scalar(&img, to, &c);
                assert_eq!(horizontal(&img, to, &c), scalar, "{filter:?} {w}->{to}");
                #[cfg(target_arch = "x86_64")]
                for kernel in row_kernels() {
                    for quad in [false, four_rows()] {
                        // SAFETY: row_kernels and four_rows say what this CPU runs.
                        let vector = unsafe { horizontal_with(&img, to, &c, kernel, quad) };
                        assert_eq!(vector, scalar, "{filter:?} {w}->{to} {quad}");
                    }
                }
            }
        }
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
