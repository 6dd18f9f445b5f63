//! Seeded standard-normal noise for diffusion: the initial latent and the per-step noise of
//! the stochastic schedulers. The numbers depend only on the seed and the sequence of
//! requests — not on the machine, the build, the thread count or a dependency's choice of
//! generator — so a seed reproduces the same image everywhere. Any change to the stream
//! changes users' images; the unit test pins its first values.

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Most elements one `randn` call may produce (1 GiB of f32): far above any latent.
const MAX_ELEMENTS: usize = 1 << 28;

/// A seeded N(0,1) generator: ChaCha8 (the stream fixed by its specification) turned into
/// normals by Box-Muller with `libm`'s portable `log`/`sin`/`cos` in f64.
#[derive(Clone, Debug)]
pub struct NoiseRng {
    rng: ChaCha8Rng,
}

impl NoiseRng {
    /// The 32-byte ChaCha key is the seed's little-endian bytes followed by zeros
    /// (`seed_from_u64` is avoided: its seed expansion is not promised stable).
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        NoiseRng { rng: ChaCha8Rng::from_seed(key) }
    }

    /// One pair of independent N(0,1) values from two 64-bit draws.
    fn pair(&mut self) -> (f64, f64) {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        // u1 in (0, 1] so that ln(u1) is finite; u2 in [0, 1).
        let u1 = ((self.rng.next_u64() >> 11) + 1) as f64 * SCALE;
        let u2 = (self.rng.next_u64() >> 11) as f64 * SCALE;
        let r = (-2.0 * libm::log(u1)).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        (r * libm::cos(theta), r * libm::sin(theta))
    }

    /// `n` values in stream order; an odd `n` drops the second value of the last pair, so
    /// each call consumes `2 * ceil(n / 2)` draws.
    fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (a, b) = self.pair();
            out.push(a as f32);
            if out.len() < n {
                out.push(b as f32);
            }
        }
        out
    }

    /// An f32 tensor of N(0,1) values on the CPU, filled in row-major order.
    pub fn randn(&mut self, shape: &[usize]) -> Result<Tensor> {
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| Error::invalid("noise shape", format!("{shape:?} exceeds {MAX_ELEMENTS} elements")))?;
        Ok(Tensor::from_vec(self.normals(n), shape, &Device::Cpu)?)
    }
}

/// A fresh seed for when the user gives none: the process's randomly keyed hasher (seeded
/// from the OS) mixed with the time, so two runs in the same nanosecond still differ.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_different_seed_differs() {
        let a = NoiseRng::new(42).normals(1000);
        assert_eq!(a, NoiseRng::new(42).normals(1000));
        let b = NoiseRng::new(43).normals(1000);
        assert!(a.iter().zip(&b).filter(|(x, y)| x != y).count() > 990);
    }

    /// The stream users' images depend on: if this fails, every seeded image changes. Seed 42
    /// as well as 0, since seed 0's key reads the same in either byte order.
    #[test]
    fn seed_snapshots() {
        let v = NoiseRng::new(0).normals(4);
        assert_eq!(v, [-0.4045616, -0.43861607, 1.2628899, 1.1504623], "noise stream for seed 0 changed: {v:?}");
        let v = NoiseRng::new(42).normals(4);
        assert_eq!(v, [-0.32306322, 1.4160769, -0.8020522, 0.87709105], "noise stream for seed 42 changed: {v:?}");
    }

    #[test]
    fn moments_on_1e5_samples() {
        // For n = 1e5, the sample mean has sd 1/sqrt(n) = 0.0032 and the sample variance sd
        // sqrt(2/n) = 0.0045: bounds of 0.02 are > 4 sd, so a correct generator passes for
        // every seed checked while a scale or offset error of 2% fails.
        for seed in [0u64, 1, 12345] {
            let v = NoiseRng::new(seed).normals(100_000);
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            assert!(mean.abs() < 0.02, "seed {seed}: mean {mean}");
            assert!((var - 1.0).abs() < 0.02, "seed {seed}: var {var}");
            let tail = v.iter().filter(|x| x.abs() > 3.0).count() as f64 / n;
            // P(|z| > 3) = 0.0027.
            assert!((tail - 0.0027).abs() < 0.001, "seed {seed}: tail {tail}");
        }
    }

    #[test]
    fn randn_shapes_and_limits() {
        let t = NoiseRng::new(7).randn(&[1, 4, 8, 8]).unwrap();
        assert_eq!(t.dims(), &[1, 4, 8, 8]);
        let flat: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(flat, NoiseRng::new(7).normals(256));
        assert!(NoiseRng::new(7).randn(&[1 << 20, 1 << 20]).is_err());
        assert!(NoiseRng::new(7).randn(&[usize::MAX, 2]).is_err());
        assert_eq!(NoiseRng::new(7).randn(&[0, 4]).unwrap().dims(), &[0, 4]);
    }

    #[test]
    fn random_seeds_differ() {
        assert_ne!(random_seed(), random_seed());
    }
}
