//! The loss curve of `plinth tune` as a PNG (plotters' bitmap backend). Text needs a TrueType
//! font, registered from a file found at run time (`$PLINTH_FONT`, then the usual system
//! places); without one the curve is drawn with no text rather than not at all.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::prelude::*;

/// The family name the font is registered under.
const FAMILY: &str = "sans-serif";

/// Well-known places of a sans-serif TrueType font (Debian/Ubuntu, Fedora, Arch, macOS,
/// Windows).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// A `.ttf` under `dir` (depth-limited), preferring names with "Sans".
fn find_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            dirs.push(p);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            files.push(p);
        }
    }
    files.sort();
    if let Some(p) = files.iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("Sans"))).or(files.first()) {
        return Some(p.clone());
    }
    if depth == 0 {
        return None;
    }
    dirs.sort();
    dirs.iter().find_map(|d| find_ttf(d, depth - 1))
}

/// Registers a font once per process; `true` when text can be drawn.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let env = std::env::var_os("PLINTH_FONT").map(PathBuf::from);
        let candidates = env.into_iter().chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        let found = candidates.filter(|p| p.is_file()).chain(["/usr/share/fonts", "/usr/local/share/fonts"].iter().filter_map(|d| find_ttf(Path::new(d), 3)));
        for path in found {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            // plotters keeps fonts for the life of the process; this happens once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

/// Padded axis range over `values`; `flat` is the half-width of the range of a single value.
fn range(values: impl Iterator<Item = f64>, flat: f64) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { flat.max(lo.abs() * 0.05) };
    (lo - pad, hi + pad)
}

/// Writes the training loss per step (and eval loss points, if any) to `path` as a PNG,
/// atomically (a temporary file renamed into place). Returns whether text (title, axes,
/// legend) could be drawn.
pub fn loss_png(path: &Path, train: &[(f64, f64)], eval: &[(f64, f64)]) -> Result<bool> {
    let text = font_available();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map_or("loss.png".into(), |n| n.to_string_lossy().into_owned());
    // The encoder picks the format from the extension, so the temporary name ends in .png.
    let tmp = dir.join(format!(".{name}.part-{}.png", std::process::id()));
    let drawn = draw(&tmp, train, eval, text);
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(text)
}

fn draw(file: &Path, train: &[(f64, f64)], eval: &[(f64, f64)], text: bool) -> Result<()> {
    let root = BitMapBackend::new(file, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || train.iter().chain(eval);
    let (x0, x1) = range(all().map(|p| p.0), 1.0);
    let (y0, y1) = range(all().map(|p| p.1), 0.05);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(24);
    if text {
        builder.caption("loss", (FAMILY, 24)).x_label_area_size(44).y_label_area_size(64);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
    if text {
        chart.configure_mesh().x_desc("step").y_desc("loss").label_style((FAMILY, 15)).light_line_style(WHITE.mix(0.0)).draw()?;
    } else {
        // No font: a frame instead of labelled axes.
        let (xs, ys) = (chart.x_range(), chart.y_range());
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(xs.start, ys.start), (xs.end, ys.start), (xs.end, ys.end), (xs.start, ys.end), (xs.start, ys.start)],
            BLACK,
        )))?;
    }
    let train_color = RGBColor(31, 119, 180);
    let eval_color = RGBColor(214, 39, 40);
    let series = chart.draw_series(LineSeries::new(train.iter().copied(), train_color.stroke_width(2)))?;
    if text {
        series.label("training loss").legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], train_color.stroke_width(2)));
    }
    if train.len() <= 60 {
        // Few steps: mark each one (a single step would otherwise draw nothing).
        chart.draw_series(train.iter().map(|&p| Circle::new(p, 3, train_color.filled())))?;
    }
    if !eval.is_empty() {
        let series = chart.draw_series(LineSeries::new(eval.iter().copied(), eval_color.stroke_width(1)))?;
        if text {
            series.label("eval loss").legend(move |(x, y)| Circle::new((x + 10, y), 4, eval_color.filled()));
        }
        chart.draw_series(eval.iter().map(|&p| Circle::new(p, 4, eval_color.filled())))?;
    }
    if text {
        chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.9)).border_style(BLACK).label_font((FAMILY, 15)).draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn writes_a_png_with_and_without_text() {
        let dir = std::env::temp_dir().join(format!("plinth-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let train: Vec<(f64, f64)> = (1..=20).map(|s| (s as f64, 3.0 / s as f64)).collect();
        let eval = [(0.0, 3.2), (10.0, 0.5), (20.0, 0.3)];
        for (text, name) in [(true, "a.png"), (false, "b.png")] {
            let tmp = dir.join(name);
            if text && !font_available() {
                continue;
            }
            draw(&tmp, &train, &eval, text).unwrap();
            assert_eq!(&png(&tmp)[..8], b"\x89PNG\r\n\x1a\n");
        }
        // One point, no eval: a degenerate range is padded, not an error.
        let p = dir.join("one.png");
        loss_png(&p, &[(1.0, 2.0)], &[]).unwrap();
        assert_eq!(&png(&p)[..4], b"\x89PNG");
        assert!(std::fs::read_dir(&dir).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().contains(".part-")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
