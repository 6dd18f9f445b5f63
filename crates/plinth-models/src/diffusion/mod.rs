//! Latent diffusion (Stable Diffusion family, diffusers layout): the conditional UNet that
//! predicts noise ([`unet`]), the KL autoencoder that turns latents into pixels ([`vae`]), and
//! the noise schedulers that walk the latents from pure noise to an image ([`scheduler`]),
//! with the seeded Gaussian noise they start from and inject ([`noise`]).
//! The CLIP text encoders that condition the UNet live with CLIP in `models::clip_text`.

pub mod nn;
pub mod noise;
pub mod scheduler;
pub mod unet;
mod unet_blocks;
pub mod vae;
