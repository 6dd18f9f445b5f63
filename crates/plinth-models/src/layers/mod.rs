//! Building blocks shared by the architectures in [`crate::models`].

pub mod attention;
pub mod linear;
pub mod norm;
pub mod rope;

pub use attention::{causal_mask, scaled_dot_product_attention};
pub use linear::{Linear, QLinear};
pub use norm::RmsNorm;
pub use rope::{RopeScaling, RopeStyle, RotaryEmbedding};
