//! Resizing 8-bit RGB images bit-exactly as Pillow's `Image.resize` does (Pillow 13,
//! `libImaging/Resample.c` and, for nearest, `Geometry.c`'s affine scaling), so that
//! preprocessing reproduces transformers' PIL-backend image processors to the last bit.
//!
//! The convolution filters (box, bilinear, hamming, bicubic with a = -0.5, lanczos with
//! a = 3) run as Pillow does: one coefficient table per axis computed in f64 with the support
//! widened by the down-scaling factor, normalised, then converted to fixed point with
//! 22 fractional bits; two passes with the intermediate clipped to u8, horizontal first
//! (over only the source rows the vertical pass needs) unless the height shrinks much more
//! than the width, as Pillow 13 orders them. Nearest is Pillow's affine scaling, whose source
//! coordinate is an accumulated f64 sum rather than a product.

use image::RgbImage;

/// Pillow's resampling filters, with the numbers transformers' configs use for `resample`
/// (`PILImageResampling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    Nearest,
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl Filter {
    /// The filter for a `resample` value of a preprocessor config (`PIL.Image.Resampling`).
    pub fn from_pil(code: u64) -> Option<Filter> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    /// The filter's name as transformers and Pillow spell it in lower case.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Nearest => "nearest",
            Filter::Box => "box",
            Filter::Bilinear => "bilinear",
            Filter::Hamming => "hamming",
            Filter::Bicubic => "bicubic",
            Filter::Lanczos => "lanczos",
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes the constants as C float literals (0.54f, 0.46f).
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
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
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One axis's fixed-point coefficient table: for output index `i`, source indices
/// `start[i] .. start[i] + len[i]` with weights `k[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    // Pillow passes the box edges as C floats; (in1 - in0) is exact for integer sizes.
    let scale = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) truncates toward zero; both ends are then clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
        let xmax = xmax.min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        let row = &mut k[xx * ksize..(xx + 1) * ksize];
        for x in 0..xmax {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            row[x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        start.push(xmin);
        len.push(xmax);
    }
    Coeffs { ksize, start, len, k }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `img` to `width` x `height` exactly as Pillow's `Image.resize(size, filter)` does
/// for an RGB image (no `box`, no `reducing_gap`). A zero target dimension gives an empty
/// image.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if (iw, ih) == (width, height) || width == 0 || height == 0 || iw == 0 || ih == 0 {
        return if (iw, ih) == (width, height) { img.clone() } else { RgbImage::new(width, height) };
    }
    if filter == Filter::Nearest {
        return nearest(img, width, height);
    }
    let (iw, ih, ow, oh) = (iw as usize, ih as usize, width as usize, height as usize);
    let horiz = (ow != iw).then(|| coeffs(iw, ow, filter));
    let vert = (oh != ih).then(|| coeffs(ih, oh, filter));
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
    // many pixels as the width does (`ImagingResampleInner`); earlier Pillow always ran the
    // horizontal pass first. The order changes results (up to 17 levels measured), so this
    // follows the Pillow the fixtures were made with (see the crate docs).
    let (dh, dw) = (ih as i64 - oh as i64, iw as i64 - ow as i64);
    let vertical_first = dh > 0 && dh > dw * 2;
    let src = img.as_raw().as_slice();
    let out = match (horiz, vert) {
        (Some(h), Some(v)) if vertical_first => {
            let tmp = vertical_pass(src, iw, &v);
            horizontal_pass(&tmp, iw, oh, &h)
        }
        (Some(h), Some(v)) => {
            // Only the source rows the vertical pass reads go through the horizontal one.
            let first = v.start[0];
            let last = v.start[oh - 1] + v.len[oh - 1];
            let tmp = horizontal_pass(&src[first * iw * 3..last * iw * 3], iw, last - first, &h);
            let v = Coeffs { start: v.start.iter().map(|s| s - first).collect(), ..v };
            vertical_pass(&tmp, ow, &v)
        }
        (Some(h), None) => horizontal_pass(src, iw, ih, &h),
        (None, Some(v)) => vertical_pass(src, iw, &v),
        (None, None) => src.to_vec(),
    };
    RgbImage::from_raw(width, height, out).expect("buffer sized for the output")
}

/// Resamples each of `rows` rows of `src` (`in_w` pixels wide) to `c.start.len()` pixels.
fn horizontal_pass(src: &[u8], in_w: usize, rows: usize, c: &Coeffs) -> Vec<u8> {
    let ow = c.start.len();
    let mut out = vec![0u8; rows * ow * 3];
    for y in 0..rows {
        let src_row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        let dst_row = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for xx in 0..ow {
            let kk = &c.k[xx * c.ksize..xx * c.ksize + c.len[xx]];
            let base = c.start[xx] * 3;
            let mut s = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &kx) in kk.iter().enumerate() {
                let p = &src_row[base + x * 3..base + x * 3 + 3];
                // i32 as Pillow's accumulators; the sums stay far from overflow.
                s[0] = s[0].wrapping_add(p[0] as i32 * kx);
                s[1] = s[1].wrapping_add(p[1] as i32 * kx);
                s[2] = s[2].wrapping_add(p[2] as i32 * kx);
            }
            dst_row[xx * 3..xx * 3 + 3].copy_from_slice(&s.map(clip8));
        }
    }
    out
}

/// Resamples the columns of `src` (`w` pixels wide) to `c.start.len()` rows.
fn vertical_pass(src: &[u8], w: usize, c: &Coeffs) -> Vec<u8> {
    let oh = c.start.len();
    let mut out = vec![0u8; oh * w * 3];
    for yy in 0..oh {
        let kk = &c.k[yy * c.ksize..yy * c.ksize + c.len[yy]];
        let ymin = c.start[yy];
        let dst_row = &mut out[yy * w * 3..(yy + 1) * w * 3];
        for (xx, d) in dst_row.iter_mut().enumerate() {
            let mut s = 1i32 << (PRECISION_BITS - 1);
            for (y, &ky) in kk.iter().enumerate() {
                s = s.wrapping_add(src[(ymin + y) * w * 3 + xx] as i32 * ky);
            }
            *d = clip8(s);
        }
    }
    out
}

/// Pillow's `ImagingScaleAffine`: the source coordinate starts at half a step and is advanced
/// by repeated addition, and a negative coordinate maps to no pixel (left black).
fn nearest(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let map = |in_size: u32, out_size: u32| -> Vec<Option<usize>> {
        let a = in_size as f64 / out_size as f64;
        let mut v = a * 0.5;
        (0..out_size)
            .map(|_| {
                let i = if v < 0.0 { -1 } else { v as i64 };
                v += a;
                (i >= 0 && i < in_size as i64).then_some(i as usize)
            })
            .collect()
    };
    let xs = map(iw, width);
    let ys = map(ih, height);
    let mut out = RgbImage::new(width, height);
    for (y, sy) in ys.iter().enumerate() {
        let Some(sy) = *sy else { continue };
        for (x, sx) in xs.iter().enumerate() {
            if let Some(sx) = *sx {
                out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_and_rows_sum_to_one_in_fixed_point() {
        for f in [Filter::Box, Filter::Bilinear, Filter::Hamming, Filter::Bicubic, Filter::Lanczos] {
            for (i, o) in [(10, 3), (3, 10), (7, 7), (1, 5), (300, 2)] {
                let c = coeffs(i, o, f);
                for xx in 0..o {
                    let s: i64 = c.k[xx * c.ksize..xx * c.ksize + c.len[xx]].iter().map(|&v| v as i64).sum();
                    assert!((s - (1 << PRECISION_BITS)).abs() <= c.len[xx] as i64, "{f:?} {i}->{o} row {xx}: {s}");
                    assert!(c.start[xx] + c.len[xx] <= i);
                }
            }
        }
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let img = RgbImage::from_pixel(13, 7, image::Rgb([200, 17, 99]));
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            let out = resize(&img, 29, 3, f);
            assert!(out.pixels().all(|p| p.0 == [200, 17, 99]), "{f:?}");
        }
    }

    #[test]
    fn pil_codes() {
        assert_eq!(Filter::from_pil(3), Some(Filter::Bicubic));
        assert_eq!(Filter::from_pil(1), Some(Filter::Lanczos));
        assert_eq!(Filter::from_pil(9), None);
    }
}
