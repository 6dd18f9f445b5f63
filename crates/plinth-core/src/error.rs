//! The one error type of the libraries. Variants are structured so that the CLI can print a
//! one-line message that names the file and the problem, and the server can map each variant
//! to one HTTP status.

use std::path::PathBuf;

/// Every failure a plinth library can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system level I/O failure on a named file. The OS error is part of the
    /// message and deliberately not a `source`: a caller printing the chain (`{:#}`) would
    /// otherwise say it twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// A model or data file whose content is not what its format requires.
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },

    /// A file that is valid but uses something plinth does not support (yet).
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },

    /// An architecture name that the model registry does not know.
    #[error("unknown architecture '{name}' (supported: {supported})")]
    UnknownArchitecture { name: String, supported: String },

    /// A required metadata key, tensor or config field is missing.
    #[error("{}: missing {what}", path.display())]
    Missing { path: PathBuf, what: String },

    /// A tensor whose shape differs from what the model config implies.
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },

    /// A caller-supplied value outside what is allowed (sampling knobs, prompt length, ...).
    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },

    /// The prompt does not fit the context window.
    #[error("prompt has {prompt_tokens} tokens but the model's context window is {context} tokens")]
    ContextOverflow { prompt_tokens: usize, context: usize },

    /// Tokenization or detokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A chat template failed to parse or render, or the model has none.
    #[error("chat template: {0}")]
    Template(String),

    /// A model name or location that could not be resolved or fetched.
    #[error("model '{name}': {why}")]
    Fetch { name: String, why: String },

    /// The engine's queue is full; the caller may retry later.
    #[error("server busy: {queued} requests are already queued (limit {limit})")]
    QueueFull { queued: usize, limit: usize },

    /// The engine thread has stopped (shutdown or a fatal model error).
    #[error("engine stopped: {0}")]
    EngineStopped(String),

    /// A tensor operation failed inside candle.
    #[error("tensor op {op}: {source}")]
    Op {
        op: &'static str,
        #[source]
        source: candle_core::Error,
    },
}

/// The result type of the plinth libraries.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), err: source }
    }
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format { path: path.into(), what: what.into() }
    }
    pub fn missing(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Missing { path: path.into(), what: what.into() }
    }
    pub fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Unsupported { path: path.into(), what: what.into() }
    }
    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid { what: what.into(), why: why.into() }
    }
    /// Wraps a candle error with the name of the operation that produced it.
    pub fn op(op: &'static str) -> impl FnOnce(candle_core::Error) -> Self {
        move |source| Error::Op { op, source }
    }
}

impl From<candle_core::Error> for Error {
    fn from(source: candle_core::Error) -> Self {
        Error::Op { op: "tensor", source }
    }
}
