//! Building blocks shared by the architectures in [`crate::models`].

pub mod activation;
pub mod attention;
pub mod cross_attention;
pub mod decode_attention;
pub mod fused;
pub mod linear;
pub mod norm;
pub mod rope;
pub mod vit;

pub use activation::Activation;
pub use attention::{causal_mask, needs_mask, scaled_dot_product_attention, AttentionOptions, Masks};
pub use linear::{dropout_seed, Linear, Lora, QLinear, RowAdapters};
pub use norm::{LayerNorm, RmsNorm};
pub use rope::{RopeScaling, RopeStyle, RotaryEmbedding};
