//! Decoding untrusted image bytes (PNG, JPEG, WebP, GIF's first frame) into 8-bit RGB, with
//! the size limits checked before any pixel buffer is allocated, and the colour conversion of
//! transformers' `convert_to_rgb` (transparency composited onto white with Pillow's integer
//! `alpha_composite`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};
use plinth_core::{Error, Result};

/// Bounds on what `decode_image` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// The largest encoded file, in bytes.
    pub max_bytes: usize,
    /// The most pixels (width x height) a decoded image may have.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 20 MB files and 50 Mpx images: beyond any camera photo people send to a model, well
    /// below what a decompression bomb needs.
    fn default() -> Self {
        ImageLimits { max_bytes: 20_000_000, max_pixels: 50_000_000 }
    }
}

/// Reads and decodes the image file at `path` (see [`decode_image`]); errors name the file.
pub fn load_image(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<RgbImage> {
    let path = path.as_ref();
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > limits.max_bytes as u64 {
        return Err(Error::format(path, too_many_bytes(len, limits)));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_at(&bytes, limits, path.to_path_buf())
}

/// Decodes an encoded image into RGB. The byte length is checked first, then the dimensions
/// from the header, and only then are pixels decoded; `image`'s own allocation limit is set
/// from `limits` as a second guard.
pub fn decode_image(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    decode_at(bytes, limits, PathBuf::from("<image bytes>"))
}

fn too_many_bytes(len: u64, limits: &ImageLimits) -> String {
    format!("image file is {len} bytes, limit {} bytes", limits.max_bytes)
}

fn decode_at(bytes: &[u8], limits: &ImageLimits, path: PathBuf) -> Result<RgbImage> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::format(path, too_many_bytes(bytes.len() as u64, limits)));
    }
    let format = image::guess_format(bytes).ok().filter(|f| {
        matches!(f, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif)
    });
    let Some(format) = format else {
        return Err(Error::format(path, "not an image (unrecognised format; PNG, JPEG, WebP and GIF are read)"));
    };
    let name = format_name(format);
    let corrupt = |e: image::ImageError| Error::format(&path, format!("corrupt/truncated {name}: {e}"));

    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (w, h) = reader.into_dimensions().map_err(corrupt)?;
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(Error::format(
            &path,
            format!("image is {w}x{h} = {} Mpx, limit {} Mpx", mpx(pixels), mpx(limits.max_pixels)),
        ));
    }
    if pixels == 0 {
        return Err(Error::format(&path, format!("corrupt {name}: image is {w}x{h}")));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(w);
    lim.max_image_height = Some(h);
    // RGBA16 is the widest buffer any of the four decoders produces, plus slack for their
    // own scratch space.
    lim.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(lim);
    // For GIF `decode` yields the first frame only.
    let img = reader.decode().map_err(corrupt)?;
    Ok(to_rgb(img))
}

fn mpx(pixels: u64) -> String {
    let m = pixels as f64 / 1e6;
    if m >= 10.0 || m.fract() == 0.0 {
        format!("{m:.0}")
    } else if m >= 0.1 {
        format!("{m:.1}")
    } else {
        format!("{m:.3}")
    }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        _ => "image",
    }
}

/// transformers' `convert_to_rgb` for a PIL image: an image with an alpha channel (or a
/// transparent palette entry, which the decoders already expand to alpha) is composited onto
/// opaque white with Pillow's `alpha_composite`; grey and palette images are expanded.
/// 16-bit samples are narrowed by `image` (rounded), which can differ by one from Pillow.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in rgba.pixels() {
        let [r, g, b, a] = p.0;
        out.extend_from_slice(&composite_on_white([r, g, b], a));
    }
    RgbImage::from_raw(w, h, out).expect("buffer sized for the image")
}

/// Pillow's `ImagingAlphaComposite` (7 fractional bits, rounded divisions by 255) with an
/// opaque white destination.
#[inline]
pub(crate) fn composite_on_white(src: [u8; 3], a: u8) -> [u8; 3] {
    const PREC: u32 = 7;
    if a == 0 {
        return [255; 3];
    }
    let a = a as u32;
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PREC) / outa255;
    let coef2 = 255 * (1 << PREC) - coef1;
    let shift_div255 = |v: u32| ((v >> 8) + v) >> 8;
    src.map(|c| {
        let t = c as u32 * coef1 + 255 * coef2 + (0x80 << PREC);
        (shift_div255(t) >> PREC) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_and_transparent_alpha() {
        assert_eq!(composite_on_white([1, 2, 3], 255), [1, 2, 3]);
        assert_eq!(composite_on_white([1, 2, 3], 0), [255, 255, 255]);
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let limits = ImageLimits { max_bytes: 4, max_pixels: 10 };
        let err = decode_image(b"\x89PNG\r\n\x1a\n", &limits).unwrap_err().to_string();
        assert!(err.contains("limit 4 bytes"), "{err}");
        let err = decode_image(b"GIF89a\x01", &ImageLimits::default()).unwrap_err().to_string();
        assert!(err.contains("corrupt/truncated GIF"), "{err}");
        let err = decode_image(b"text", &ImageLimits::default()).unwrap_err().to_string();
        assert!(err.contains("not an image"), "{err}");
    }

    #[test]
    fn mpx_figures() {
        assert_eq!(mpx(900_000_000), "900");
        assert_eq!(mpx(50_000_000), "50");
        assert_eq!(mpx(1_500_000), "1.5");
    }
}
