//! transformers' image processors, read from `preprocessor_config.json`, reproducing their
//! PIL backends (`image_processing_pil_clip.py`, `..._siglip.py`, `..._idefics3.py` over
//! `PilBackend`): resizing runs through [`crate::resize`] (bit-exact with Pillow), cropping,
//! splitting and padding on u8 pixels, then rescale in f64 rounded to f32 and normalisation in
//! f32, in numpy's order, so `pixel_values` come out bit-identical.
//!
//! transformers 5 defaults to torchvision-based processors; those resize with torch's
//! antialiased float kernels and differ from the PIL backend by up to 0.16 in normalised
//! pixel values (`scripts/make_image_fixtures.py` measures it into `manifest.json`: 0.16 for
//! CLIP at 40/32, 0.015 at 224, 0.071 for SigLIP at 48, 0.024 for Idefics3 at 96/32), because
//! torch resizes in float with its own antialias kernel where Pillow uses 22-bit fixed point
//! with u8 rounding between passes; we follow the PIL backend because its integer arithmetic
//! is deterministic and it is what transformers 4.x used.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use plinth_core::{Error, Result};
use serde_json::Value;

use crate::resample::{resize, Filter};

/// Idefics3's absolute cap on the longest side after its first resize.
const IDEFICS3_MAX_IMAGE_SIZE: usize = 4096;
/// No intermediate image may exceed this many pixels (a 1x100000 image resized to a
/// shortest edge of 224 would otherwise ask for gigabytes).
const MAX_RESIZE_PIXELS: usize = 64 << 20;

/// Which processor family a config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessorKind {
    Clip,
    Siglip,
    /// Idefics3 and SmolVLM (the same processor).
    Idefics3,
}

/// The `size` entry of a config, after transformers' `get_size_dict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    ShortestEdge(usize),
    ShortestLongest { shortest: usize, longest: usize },
    LongestEdge(usize),
    MaxHeightWidth { height: usize, width: usize },
    HeightWidth { height: usize, width: usize },
}

/// An image processor: what `preprocessor_config.json` says, ready to run.
#[derive(Clone, Debug)]
pub struct ImageProcessor {
    pub kind: ProcessorKind,
    /// `image_processor_type` as written in the config.
    pub type_name: String,
    pub do_resize: bool,
    pub size: Size,
    pub resample: Filter,
    pub do_center_crop: bool,
    /// (height, width)
    pub crop_size: (usize, usize),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub do_image_splitting: bool,
    /// Idefics3's tile side (`max_image_size.longest_edge`).
    pub max_image_size: usize,
}

/// One preprocessed image.
#[derive(Debug)]
pub struct ProcessedImage {
    /// `[tiles, 3, H, W]` f32. Idefics3 with splitting: `rows * cols` tiles in row-major
    /// order, then the global image; otherwise one tile.
    pub pixel_values: Tensor,
    /// Tile grid of Idefics3's splitting; 0 and 0 when the image was not split.
    pub rows: usize,
    pub cols: usize,
}

impl ImageProcessor {
    /// Reads `dir/preprocessor_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<ImageProcessor> {
        let path = dir.as_ref().join("preprocessor_config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("not JSON: {e}")))?;
        ImageProcessor::from_json(&json, &path)
    }

    /// Builds a processor from a parsed config; `path` is only used in error messages.
    pub fn from_json(json: &Value, path: impl AsRef<Path>) -> Result<ImageProcessor> {
        let path = path.as_ref().to_path_buf();
        let type_name = json
            .get("image_processor_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::missing(&path, "image_processor_type"))?
            .to_string();
        let base = type_name.strip_suffix("Fast").or_else(|| type_name.strip_suffix("Pil")).unwrap_or(&type_name);
        let kind = match base {
            "CLIPImageProcessor" => ProcessorKind::Clip,
            "SiglipImageProcessor" => ProcessorKind::Siglip,
            "Idefics3ImageProcessor" | "SmolVLMImageProcessor" => ProcessorKind::Idefics3,
            _ => {
                return Err(Error::unsupported(
                    &path,
                    format!(
                        "image_processor_type '{type_name}' (supported: CLIPImageProcessor, SiglipImageProcessor, \
                         Idefics3ImageProcessor, SmolVLMImageProcessor)"
                    ),
                ))
            }
        };
        let c = Cfg { json, path: &path };
        // Class defaults of the PIL processors.
        let (size, resample, mean, std, default_to_square) = match kind {
            ProcessorKind::Clip => (Size::ShortestEdge(224), Filter::Bicubic, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, false),
            ProcessorKind::Siglip => {
                (Size::HeightWidth { height: 224, width: 224 }, Filter::Bicubic, HALF, HALF, false)
            }
            ProcessorKind::Idefics3 => (Size::LongestEdge(4 * 364), Filter::Lanczos, HALF, HALF, true),
        };
        let size = match json.get("size") {
            None | Some(Value::Null) => size,
            Some(v) => parse_size(v, default_to_square, &path, "size")?,
        };
        let crop_size = match json.get("crop_size") {
            None | Some(Value::Null) => (224, 224),
            Some(v) => match parse_size(v, true, &path, "crop_size")? {
                Size::HeightWidth { height, width } => (height, width),
                other => return Err(Error::format(&path, format!("crop_size must give height and width, got {other:?}"))),
            },
        };
        let resample = match json.get("resample") {
            None | Some(Value::Null) => resample,
            Some(v) => {
                let code = v.as_u64().ok_or_else(|| Error::format(&path, format!("resample is not an integer: {v}")))?;
                Filter::from_pil(code)
                    .ok_or_else(|| Error::unsupported(&path, format!("resample {code} (PIL filters are 0..=5)")))?
            }
        };
        let max_image_size = match json.get("max_image_size") {
            None | Some(Value::Null) => 364,
            Some(v) => v
                .get("longest_edge")
                .and_then(Value::as_u64)
                .filter(|&n| n > 0 && n <= IDEFICS3_MAX_IMAGE_SIZE as u64)
                .ok_or_else(|| Error::format(&path, format!("max_image_size must be {{\"longest_edge\": 1..=4096}}, got {v}")))?
                as usize,
        };
        let p = ImageProcessor {
            kind,
            do_resize: c.flag("do_resize", true)?,
            size,
            resample,
            do_center_crop: kind == ProcessorKind::Clip && c.flag("do_center_crop", true)?,
            crop_size,
            do_rescale: c.flag("do_rescale", true)?,
            rescale_factor: c.float("rescale_factor", 1.0 / 255.0)?,
            do_normalize: c.flag("do_normalize", true)?,
            image_mean: c.triple("image_mean", mean)?,
            image_std: c.triple("image_std", std)?,
            do_image_splitting: kind == ProcessorKind::Idefics3 && c.flag("do_image_splitting", true)?,
            max_image_size,
            type_name,
        };
        if p.kind == ProcessorKind::Idefics3 && !matches!(p.size, Size::LongestEdge(_) | Size::HeightWidth { .. }) {
            return Err(Error::format(&path, "Idefics3 size must be {\"longest_edge\": n} or height and width"));
        }
        Ok(p)
    }

    /// The side of the square tiles the vision encoder sees.
    pub fn image_size(&self) -> usize {
        match self.kind {
            ProcessorKind::Clip if self.do_center_crop => self.crop_size.0,
            ProcessorKind::Clip | ProcessorKind::Siglip => match self.size {
                Size::HeightWidth { height, .. } | Size::MaxHeightWidth { height, .. } => height,
                Size::ShortestEdge(n) | Size::ShortestLongest { shortest: n, .. } | Size::LongestEdge(n) => n,
            },
            ProcessorKind::Idefics3 => self.max_image_size,
        }
    }

    /// One line for `plinth inspect`.
    pub fn describe(&self) -> String {
        let mut steps = vec![];
        if self.do_resize {
            steps.push(format!("resize {:?} ({})", self.size, self.resample.name()));
        }
        if self.do_center_crop {
            steps.push(format!("center crop {}x{}", self.crop_size.0, self.crop_size.1));
        }
        if self.kind == ProcessorKind::Idefics3 {
            if self.do_image_splitting {
                steps.push(format!("split into {0}x{0} tiles + global image", self.max_image_size));
            } else {
                steps.push(format!("resize to {0}x{0}", self.max_image_size));
            }
        }
        if self.do_rescale {
            steps.push(format!("rescale x{}", self.rescale_factor));
        }
        if self.do_normalize {
            steps.push(format!("normalize mean {:?} std {:?}", self.image_mean, self.image_std));
        }
        format!("{}: {}", self.type_name, steps.join(", "))
    }

    /// Preprocesses one RGB image as the PIL-backend processor does.
    pub fn preprocess(&self, img: &RgbImage) -> Result<ProcessedImage> {
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::invalid("image", "it has no pixels"));
        }
        let (tiles, rows, cols) = match self.kind {
            ProcessorKind::Clip | ProcessorKind::Siglip => {
                let mut im = if self.do_resize {
                    let (h, w) = self.generic_resize_size(img.height() as usize, img.width() as usize)?;
                    resize_checked(img, h, w, self.resample)?
                } else {
                    img.clone()
                };
                if self.do_center_crop {
                    im = center_crop(&im, self.crop_size.0, self.crop_size.1)?;
                }
                (vec![im], 0, 0)
            }
            ProcessorKind::Idefics3 => self.idefics3_tiles(img)?,
        };
        let (h, w) = (tiles[0].height() as usize, tiles[0].width() as usize);
        if tiles.iter().any(|t| (t.height() as usize, t.width() as usize) != (h, w)) {
            return Err(Error::unsupported(
                PathBuf::from(&self.type_name),
                "tiles of different sizes (would need padding and a pixel_attention_mask)",
            ));
        }
        let mut data = Vec::with_capacity(tiles.len() * 3 * h * w);
        for t in &tiles {
            let raw = t.as_raw();
            for c in 0..3 {
                data.extend(raw.chunks_exact(3).map(|p| self.pixel_value(p[c], c)));
            }
        }
        let pixel_values = Tensor::from_vec(data, (tiles.len(), 3, h, w), &Device::Cpu)?;
        Ok(ProcessedImage { pixel_values, rows, cols })
    }

    /// numpy's `rescale` (u8 -> f64 product -> f32) then `normalize` (in f32).
    #[inline]
    fn pixel_value(&self, v: u8, c: usize) -> f32 {
        let mut x = if self.do_rescale { (v as f64 * self.rescale_factor) as f32 } else { v as f32 };
        if self.do_normalize {
            x = (x - self.image_mean[c]) / self.image_std[c];
        }
        x
    }

    /// `PilBackend.resize`'s output size, as (height, width).
    fn generic_resize_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok(match self.size {
            Size::ShortestLongest { shortest, longest } => size_with_aspect_ratio(h, w, shortest, Some(longest)),
            Size::ShortestEdge(s) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((s * long) as f64 / short as f64) as usize;
                if w <= h {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
            Size::MaxHeightWidth { height, width } => {
                // get_image_size_for_max_height_width
                let scale = (height as f64 / h as f64).min(width as f64 / w as f64);
                let nh = ((h as f64 * scale) as usize).max(1);
                let nw = ((w as f64 * scale) as usize).max(1);
                (nh, nw)
            }
            Size::HeightWidth { height, width } => (height, width),
            Size::LongestEdge(_) => {
                return Err(Error::unsupported(
                    PathBuf::from(&self.type_name),
                    "size {\"longest_edge\"} alone for this processor",
                ))
            }
        })
    }

    fn idefics3_tiles(&self, img: &RgbImage) -> Result<(Vec<RgbImage>, usize, usize)> {
        let f = self.resample;
        let mut im = if self.do_resize {
            let (h, w) = match self.size {
                Size::LongestEdge(n) => idefics3_resize_size(img.height() as usize, img.width() as usize, n),
                Size::HeightWidth { height, width } => (height, width),
                _ => unreachable!("checked in from_json"),
            };
            resize_checked(img, h, w, f)?
        } else {
            img.clone()
        };
        let m = self.max_image_size;
        if !self.do_image_splitting {
            return Ok((vec![resize_checked(&im, m, m, f)?], 0, 0));
        }
        // resize_for_vision_encoder: both sides up to multiples of the tile side.
        let (h, w) = (im.height() as usize, im.width() as usize);
        let aspect = w as f64 / h as f64;
        let (nh, nw) = if w >= h {
            let nw = w.div_ceil(m) * m;
            let nh = (nw as f64 / aspect) as usize;
            (nh.div_ceil(m) * m, nw)
        } else {
            let nh = h.div_ceil(m) * m;
            let nw = (nh as f64 * aspect) as usize;
            (nh, nw.div_ceil(m) * m)
        };
        im = resize_checked(&im, nh.max(m), nw.max(m), f)?;
        let (h, w) = (im.height() as usize, im.width() as usize);
        if h <= m && w <= m {
            return Ok((vec![im], 0, 0));
        }
        let rows = (h - m) / m + 1;
        let cols = (w - m) / m + 1;
        let mut tiles = Vec::with_capacity(rows * cols + 1);
        for r in 0..rows {
            for c in 0..cols {
                tiles.push(image::imageops::crop_imm(&im, (c * m) as u32, (r * m) as u32, m as u32, m as u32).to_image());
            }
        }
        tiles.push(resize_checked(&im, m, m, f)?);
        Ok((tiles, rows, cols))
    }
}

/// (height, width) from Idefics3's `get_resize_output_image_size`: longest side to
/// `longest`, the other by the aspect ratio rounded up to even, then capped at 4096.
fn idefics3_resize_size(h: usize, w: usize, longest: usize) -> (usize, usize) {
    let aspect = w as f64 / h as f64;
    let (mut h, mut w) = if w >= h {
        let mut nh = (longest as f64 / aspect) as usize;
        nh += nh % 2;
        (nh, longest)
    } else {
        let mut nw = (longest as f64 * aspect) as usize;
        nw += nw % 2;
        (longest, nw)
    };
    h = h.max(1);
    w = w.max(1);
    // _resize_output_size_scale_below_upper_bound
    let aspect = w as f64 / h as f64;
    let cap = IDEFICS3_MAX_IMAGE_SIZE;
    if w >= h && w > cap {
        w = cap;
        h = (w as f64 / aspect) as usize;
    } else if h > w && h > cap {
        h = cap;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

/// transformers' `get_size_with_aspect_ratio` (shortest edge with a cap on the longest).
fn size_with_aspect_ratio(h: usize, w: usize, size: usize, max_size: Option<usize>) -> (usize, usize) {
    let mut size = size;
    let mut raw: Option<f64> = None;
    if let Some(max) = max_size {
        let (mn, mx) = (h.min(w) as f64, h.max(w) as f64);
        if mx / mn * size as f64 > max as f64 {
            let r = max as f64 * mn / mx;
            raw = Some(r);
            size = r.round_ties_even() as usize;
        }
    }
    if (h <= w && h == size) || (w <= h && w == size) {
        (h, w)
    } else if w < h {
        let oh = match raw {
            Some(r) => (r * h as f64 / w as f64) as usize,
            None => ((size * h) as f64 / w as f64) as usize,
        };
        (oh, size)
    } else {
        let ow = match raw {
            Some(r) => (r * w as f64 / h as f64) as usize,
            None => ((size * w) as f64 / h as f64) as usize,
        };
        (size, ow)
    }
}

fn resize_checked(img: &RgbImage, h: usize, w: usize, f: Filter) -> Result<RgbImage> {
    if h == 0 || w == 0 || h.saturating_mul(w) > MAX_RESIZE_PIXELS || h > u32::MAX as usize || w > u32::MAX as usize {
        return Err(Error::invalid(
            "image size",
            format!("{}x{} would be resized to {w}x{h} (limit {MAX_RESIZE_PIXELS} pixels)", img.width(), img.height()),
        ));
    }
    Ok(resize(img, w as u32, h as u32, f))
}

/// transformers' numpy `center_crop`: offsets floor((in - crop) / 2), zero padding where the
/// image is smaller than the crop.
fn center_crop(img: &RgbImage, ch: usize, cw: usize) -> Result<RgbImage> {
    if ch == 0 || cw == 0 || ch.saturating_mul(cw) > MAX_RESIZE_PIXELS {
        return Err(Error::invalid("crop_size", format!("{ch}x{cw}")));
    }
    let (h, w) = (img.height() as i64, img.width() as i64);
    let top = (h - ch as i64).div_euclid(2);
    let left = (w - cw as i64).div_euclid(2);
    let mut out = RgbImage::new(cw as u32, ch as u32);
    for y in 0..ch as i64 {
        let sy = y + top;
        if sy < 0 || sy >= h {
            continue;
        }
        for x in 0..cw as i64 {
            let sx = x + left;
            if sx >= 0 && sx < w {
                out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    Ok(out)
}

// transformers' Python floats, rounded to f32 as numpy does.
const OPENAI_CLIP_MEAN: [f32; 3] = [0.48145466f64 as f32, 0.4578275f64 as f32, 0.40821073f64 as f32];
const OPENAI_CLIP_STD: [f32; 3] = [0.26862954f64 as f32, 0.26130258f64 as f32, 0.27577711f64 as f32];
const HALF: [f32; 3] = [0.5, 0.5, 0.5];

fn parse_size(v: &Value, default_to_square: bool, path: &Path, what: &str) -> Result<Size> {
    let bad = || Error::format(path, format!("{what} must be a positive integer, [h, w] or a size dict, got {v}"));
    let num = |v: Option<&Value>| -> Result<Option<usize>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n.as_u64().filter(|&n| n > 0 && n <= 1 << 20).map(|n| Some(n as usize)).ok_or_else(bad),
        }
    };
    match v {
        Value::Number(_) => {
            let n = num(Some(v))?.ok_or_else(bad)?;
            Ok(if default_to_square { Size::HeightWidth { height: n, width: n } } else { Size::ShortestEdge(n) })
        }
        Value::Array(a) if a.len() == 2 => {
            Ok(Size::HeightWidth { height: num(a.first())?.ok_or_else(bad)?, width: num(a.get(1))?.ok_or_else(bad)? })
        }
        Value::Object(o) => {
            let g = |k: &str| num(o.get(k));
            let (h, w, se, le, mh, mw) =
                (g("height")?, g("width")?, g("shortest_edge")?, g("longest_edge")?, g("max_height")?, g("max_width")?);
            // The order of PilBackend.resize's checks.
            Ok(match (se, le, mh, mw, h, w) {
                (Some(s), Some(l), ..) => Size::ShortestLongest { shortest: s, longest: l },
                (Some(s), None, ..) => Size::ShortestEdge(s),
                (None, _, Some(height), Some(width), ..) => Size::MaxHeightWidth { height, width },
                (None, _, _, _, Some(height), Some(width)) => Size::HeightWidth { height, width },
                (None, Some(l), ..) => Size::LongestEdge(l),
                _ => return Err(bad()),
            })
        }
        _ => Err(bad()),
    }
}

struct Cfg<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl Cfg<'_> {
    fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| Error::format(self.path, format!("{key} is not a boolean: {v}"))),
        }
    }
    fn float(&self, key: &str, default: f64) -> Result<f64> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| Error::format(self.path, format!("{key} is not a number: {v}"))),
        }
    }
    /// A per-channel value; numpy casts the Python floats to f32.
    fn triple(&self, key: &str, default: [f32; 3]) -> Result<[f32; 3]> {
        let bad = |v: &Value| Error::format(self.path, format!("{key} must be a number or 3 numbers, got {v}"));
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => Ok([n.as_f64().ok_or_else(|| bad(self.json))? as f32; 3]),
            Some(v @ Value::Array(a)) if a.len() == 3 => {
                let mut out = [0f32; 3];
                for (o, x) in out.iter_mut().zip(a) {
                    *o = x.as_f64().ok_or_else(|| bad(v))? as f32;
                }
                Ok(out)
            }
            Some(v) => Err(bad(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_sizes_follow_transformers() {
        // int(224 * 300 / 200) = 336; truncation, not rounding.
        let p = ImageProcessor::from_json(&json!({"image_processor_type": "CLIPImageProcessor", "size": 224}), "x").unwrap();
        assert_eq!(p.generic_resize_size(200, 301).unwrap(), (224, 337));
        assert_eq!(p.generic_resize_size(301, 200).unwrap(), (337, 224));
        assert_eq!(p.image_size(), 224);
        // width >= height: height = int(96 / (300 / 7)) = 2, already even.
        assert_eq!(idefics3_resize_size(7, 300, 96), (2, 96));
        assert_eq!(idefics3_resize_size(300, 7, 96), (96, 2));
        assert_eq!(idefics3_resize_size(61, 97, 96), (60, 96));
        assert_eq!(idefics3_resize_size(10, 9000, 8000), (4, 4096));
    }

    #[test]
    fn unknown_processor_is_unsupported() {
        let e = ImageProcessor::from_json(&json!({"image_processor_type": "ViTImageProcessor"}), "cfg.json").unwrap_err();
        assert!(e.to_string().contains("unsupported image_processor_type 'ViTImageProcessor'"), "{e}");
        let e = ImageProcessor::from_json(&json!({"image_processor_type": "CLIPImageProcessor", "resample": 7}), "c").unwrap_err();
        assert!(e.to_string().contains("resample 7"), "{e}");
    }

    #[test]
    fn oversized_resize_is_refused_not_allocated() {
        let p = ImageProcessor::from_json(&json!({"image_processor_type": "CLIPImageProcessor", "size": 1000}), "x").unwrap();
        let img = RgbImage::new(1, 100_000);
        let e = p.preprocess(&img).unwrap_err().to_string();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn center_crop_pads_with_zeros_at_floor_offsets() {
        let img = RgbImage::from_pixel(3, 1, image::Rgb([9, 9, 9]));
        let out = center_crop(&img, 2, 6).unwrap();
        // rows: floor((1-2)/2) = -1 -> row 0 is padding; cols: floor((3-6)/2) = -2.
        let row1: Vec<u8> = (0..6).map(|x| out.get_pixel(x, 1).0[0]).collect();
        assert_eq!(row1, [0, 0, 9, 9, 9, 0]);
        assert!((0..6).all(|x| out.get_pixel(x, 0).0[0] == 0));
    }
}
