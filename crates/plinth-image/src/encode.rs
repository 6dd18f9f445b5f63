//! Writing images: 8-bit RGB PNG with text metadata (the prompt and settings a generated image
//! was made with), so the file alone says how to make it again.

use plinth_core::{Error, Result};

/// PNG bytes of a `width`×`height` RGB image (`rgb` is row-major, 3 bytes a pixel) with one
/// `iTXt` chunk per `(keyword, text)` (UTF-8, so any prompt survives). Keywords must be 1–79
/// Latin-1 characters, as the PNG spec requires.
pub fn encode_png(width: u32, height: u32, rgb: &[u8], text: &[(&str, String)]) -> Result<Vec<u8>> {
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected || width == 0 || height == 0 {
        return Err(Error::invalid("image", format!("{width}x{height} RGB needs {expected} bytes, got {}", rgb.len())));
    }
    let mut out = Vec::with_capacity(expected / 2 + 1024);
    let png_err = |e: png::EncodingError| Error::invalid("png", e.to_string());
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (key, value) in text {
            enc.add_itxt_chunk(key.to_string(), value.clone()).map_err(png_err)?;
        }
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    Ok(out)
}

/// The text chunks (`tEXt`, `zTXt`, `iTXt`) of a PNG, in file order.
pub fn png_text(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().map_err(|e| Error::invalid("png", e.to_string()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.compressed_latin1_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| Error::invalid("png", e.to_string()))?));
    }
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| Error::invalid("png", e.to_string()))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_pixels_and_unicode_text() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let meta = [("parameters", "café lighthouse 🌅\nSteps: 4".to_string()), ("Software", "plinth".to_string())];
        let bytes = encode_png(4, 3, &rgb, &meta).unwrap();
        let img = crate::decode_image(&bytes, &crate::ImageLimits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (4, 3));
        assert_eq!(img.as_raw(), &rgb);
        let text = png_text(&bytes).unwrap();
        assert_eq!(text, meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_wrong_sizes_and_bad_keywords() {
        assert!(encode_png(2, 2, &[0; 11], &[]).is_err());
        assert!(encode_png(0, 2, &[], &[]).is_err());
        assert!(encode_png(1, 1, &[0; 3], &[("", "x".into())]).is_err());
    }
}
