//! Images for plinth's vision models: decoding untrusted files with limits (`decode`),
//! Pillow-exact resizing (`resample`), and transformers' CLIP / SigLIP / Idefics3 (SmolVLM)
//! image processors reproduced from their PIL backends (`processor`), plus Idefics3's prompt
//! expansion of an `<image>` placeholder.
//!
//! Parity, measured by `tests/parity.rs` against `fixtures/images/` (written by
//! `scripts/make_image_fixtures.py`): resizing is bit-identical to Pillow 13 for every filter,
//! and `pixel_values` are bit-identical to the PIL-backend processors of transformers 5.24.
//! transformers 5's default torchvision backend differs from its own PIL backend by up to
//! 0.16 in normalised pixel values on small, noisy images (0.015 for CLIP at 224), because
//! torch's antialiased float resize rounds and filters differently from Pillow's fixed-point
//! one; plinth follows the PIL backend, which is deterministic and what transformers 4.x used.
//! Pillow 13 changed the order of the two resampling passes (vertical first when the height
//! shrinks much more than the width), which moves results by up to 17 levels against older
//! Pillow for such sizes; plinth follows Pillow 13, the version the fixtures record.
//! JPEG decoding is `image`'s, not libjpeg-turbo's, so JPEG pixels can differ from Pillow's
//! by a few levels (see the `jpeg_decode_is_close_to_pillow` test).

pub mod decode;
pub mod encode;
pub mod processor;
pub mod resample;

pub use decode::{decode_image, load_image, ImageLimits};
pub use encode::{encode_png, png_text};
pub use image::RgbImage;
pub use processor::{ImageProcessor, ProcessedImage, ProcessorKind, Size};
pub use resample::{resize, Filter};

/// The text `Idefics3Processor` (and SmolVLM's) substitutes for one `<image>` placeholder:
/// with `rows = cols = 0` the global image alone, otherwise one `<row_R_col_C>` block per tile
/// (a newline after each row) followed by a blank line and the global image.
pub fn idefics3_image_prompt(
    rows: usize,
    cols: usize,
    image_seq_len: usize,
    fake_token: &str,
    image_token: &str,
    global_img_token: &str,
) -> String {
    let image_tokens = image_token.repeat(image_seq_len);
    let global = format!("{fake_token}{global_img_token}{image_tokens}{fake_token}");
    if rows == 0 && cols == 0 {
        return global;
    }
    let mut s = String::new();
    for r in 1..=rows {
        for c in 1..=cols {
            s.push_str(&format!("{fake_token}<row_{r}_col_{c}>{image_tokens}"));
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&global);
    s
}
