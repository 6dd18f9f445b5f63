//! Text <-> token ids for plinth: the [`Tokenizer`] (built from GGUF metadata or a Hugging Face
//! `tokenizer.json`), streaming detokenization ([`Detokenizer`]) and Jinja chat templates
//! ([`ChatTemplate`]).
//!
//! The heavy lifting is done by the `tokenizers` crate; this crate's job is to assemble, from
//! GGUF metadata, the same pipeline Hugging Face would load, so that ids match the reference
//! implementation token for token.

mod chat;
mod clip_bpe;
mod detok;
mod from_gguf;
mod from_hf;
mod pretok;
mod strftime;
mod tokenizer;

pub use chat::{ChatTemplate, Message, Part};
pub use detok::Detokenizer;
pub use tokenizer::Tokenizer;

#[cfg(test)]
mod tests {
    /// The server shares one tokenizer and template across request threads.
    #[test]
    fn shared_types_are_thread_safe() {
        fn check<T: Send + Sync>() {}
        check::<crate::Tokenizer>();
        check::<crate::ChatTemplate>();
    }
}
