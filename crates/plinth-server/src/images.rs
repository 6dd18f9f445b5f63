//! The server's image policy: where the images of a chat request may come from and how big
//! they may be. `data:` URLs (base64) are always accepted; local files only under the folder
//! given by `--allow-local-images DIR`; `http(s)://` URLs only with `--allow-remote-images`.
//! Every refusal is a 400 naming the content part it came from.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use plinth_image::{ImageLimits, RgbImage};

use crate::error::ApiError;
use crate::request::ImageRef;

/// Where images may come from and how large they may be.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    /// Local files are read only inside this folder (canonical); `None` refuses them.
    pub local_dir: Option<PathBuf>,
    /// Whether `http(s)://` URLs are fetched.
    pub remote: bool,
    /// Images per request.
    pub max_images: usize,
    /// Size of one encoded image, and its pixel count once decoded.
    pub limits: ImageLimits,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        ImagePolicy { local_dir: None, remote: false, max_images: 8, limits: ImageLimits::default() }
    }
}

const REMOTE_TIMEOUT: Duration = Duration::from_secs(20);

impl ImagePolicy {
    /// Fetches and decodes every image of a request, in order. Blocking (files, network,
    /// decoding): call it off the async workers.
    pub fn load_all(&self, refs: &[ImageRef]) -> Result<Vec<RgbImage>, ApiError> {
        if refs.len() > self.max_images {
            return Err(ApiError::invalid(
                &refs[self.max_images].param,
                format!("too many images: {} in one request, the limit is {} (--max-images)", refs.len(), self.max_images),
            ));
        }
        refs.iter()
            .map(|r| {
                let bytes = self.fetch(r)?;
                plinth_image::decode_image(&bytes, &self.limits).map_err(|e| ApiError::invalid(&r.param, format!("{}: {e}", short(&r.url))))
            })
            .collect()
    }

    fn fetch(&self, r: &ImageRef) -> Result<Vec<u8>, ApiError> {
        let bad = |why: String| ApiError::invalid(&r.param, why);
        let max = self.limits.max_bytes;
        let url = r.url.trim();
        if let Some(rest) = url.strip_prefix("data:") {
            let (meta, data) = rest.split_once(',').ok_or_else(|| bad("malformed data URL: no ',' before the data".into()))?;
            if !meta.ends_with(";base64") {
                return Err(bad(format!("data URL '{}' is not base64-encoded (expected data:image/...;base64,...)", short(url))));
            }
            // Base64 inflates by 4/3: refuse before decoding what could not fit anyway.
            if data.len() / 4 * 3 > max.saturating_add(3) {
                return Err(bad(format!("image is about {} bytes, the limit is {max} bytes", data.len() / 4 * 3)));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| bad(format!("data URL is not valid base64: {e}")))?;
            return Ok(bytes);
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            if !self.remote {
                return Err(bad(format!(
                    "remote image URLs are disabled on this server ('{}'); send the image as a data: URL, or start the server with --allow-remote-images",
                    short(url)
                )));
            }
            return fetch_remote(url, max).map_err(bad);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if scheme != "file" {
                return Err(bad(format!("unsupported image URL scheme '{scheme}' (use data:, file:// or http(s)://)")));
            }
        }
        let Some(root) = &self.local_dir else {
            return Err(bad(format!(
                "local image paths are disabled on this server ('{}'); send the image as a data: URL, or start the server with --allow-local-images DIR",
                short(url)
            )));
        };
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        let path = if path.is_absolute() { path.to_path_buf() } else { root.join(path) };
        // Canonical paths: `..` and symlinks cannot lead outside the allowed folder.
        let real = path.canonicalize().map_err(|e| bad(format!("cannot read image '{}': {e}", path.display())))?;
        if !real.starts_with(root) {
            return Err(bad(format!("image '{}' is outside the allowed folder {}", path.display(), root.display())));
        }
        let len = std::fs::metadata(&real).map_err(|e| bad(format!("cannot read image '{}': {e}", path.display())))?.len();
        if len > max as u64 {
            return Err(bad(format!("image '{}' is {len} bytes, the limit is {max} bytes", path.display())));
        }
        std::fs::read(&real).map_err(|e| bad(format!("cannot read image '{}': {e}", path.display())))
    }
}

fn fetch_remote(url: &str, max: usize) -> Result<Vec<u8>, String> {
    let agent = ureq::AgentBuilder::new().timeout(REMOTE_TIMEOUT).redirects(3).build();
    let resp = agent.get(url).call().map_err(|e| format!("fetching '{}' failed: {e}", short(url)))?;
    let mut bytes = Vec::new();
    // One byte over the limit tells an oversize body from one that fits exactly.
    resp.into_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading '{}' failed: {e}", short(url)))?;
    if bytes.len() > max {
        return Err(format!("image at '{}' is larger than the limit of {max} bytes", short(url)));
    }
    Ok(bytes)
}

/// A URL cut for error messages (a data URL can be megabytes long).
fn short(url: &str) -> String {
    const MAX: usize = 64;
    if url.len() <= MAX {
        return url.to_string();
    }
    let cut = (0..=MAX).rev().find(|&i| url.is_char_boundary(i)).unwrap_or(0);
    format!("{}...", &url[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(url: &str) -> ImageRef {
        ImageRef { param: "messages[0].content[1].image_url".into(), url: url.into() }
    }

    fn msg(e: ApiError) -> String {
        e.body()["error"]["message"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn sources_are_refused_unless_allowed() {
        let p = ImagePolicy::default();
        let e = msg(p.fetch(&r("https://example.invalid/a.png")).unwrap_err());
        assert!(e.contains("--allow-remote-images"), "{e}");
        let e = msg(p.fetch(&r("/etc/passwd")).unwrap_err());
        assert!(e.contains("--allow-local-images"), "{e}");
        let e = msg(p.fetch(&r("ftp://x/y.png")).unwrap_err());
        assert!(e.contains("scheme 'ftp'"), "{e}");
        let e = msg(p.fetch(&r("data:image/png,rawbytes")).unwrap_err());
        assert!(e.contains("not base64"), "{e}");
        let e = msg(p.fetch(&r("data:image/png;base64,@@@@")).unwrap_err());
        assert!(e.contains("not valid base64"), "{e}");
        assert_eq!(p.fetch(&r("data:image/png;base64,aGVsbG8=")).unwrap(), b"hello");
    }

    #[test]
    fn local_files_stay_inside_the_allowed_folder() {
        let root = std::env::temp_dir().join(format!("plinth-img-policy-{}", std::process::id()));
        let inside = root.join("ok");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("a.bin"), b"12345").unwrap();
        std::fs::write(root.join("secret.bin"), b"s").unwrap();
        let p = ImagePolicy { local_dir: Some(inside.canonicalize().unwrap()), ..Default::default() };
        assert_eq!(p.fetch(&r("a.bin")).unwrap(), b"12345");
        assert_eq!(p.fetch(&r(&format!("file://{}", inside.join("a.bin").display()))).unwrap(), b"12345");
        let e = msg(p.fetch(&r("../secret.bin")).unwrap_err());
        assert!(e.contains("outside the allowed folder"), "{e}");
        let small = ImagePolicy { limits: ImageLimits { max_bytes: 4, ..Default::default() }, ..p.clone() };
        let e = msg(small.fetch(&r("a.bin")).unwrap_err());
        assert!(e.contains("limit is 4 bytes"), "{e}");
        let e = msg(small.fetch(&r("data:image/png;base64,aGVsbG8gd29ybGQ=")).unwrap_err());
        assert!(e.contains("limit is 4 bytes"), "{e}");
        let many: Vec<ImageRef> = (0..9).map(|_| r("a.bin")).collect();
        let e = msg(p.load_all(&many).unwrap_err());
        assert!(e.contains("too many images"), "{e}");
        let e = msg(p.load_all(&[r("a.bin")]).unwrap_err());
        assert!(e.contains("not an image"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
