//! Command-line grammar (clap derive). Every flag has a help text; server-style flags have
//! environment-variable equivalents.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "plinth",
    version,
    about = "Run, adapt and serve foundation models from Rust",
    long_about = "plinth runs pretrained foundation models from the files people have (GGUF; \
                  safetensors with config.json and tokenizer.json). With no --model it uses \
                  SmolLM2-135M-Instruct, fetched into the cache on first use."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Worker threads for tensor maths (default: all cores).
    #[arg(long, global = true, env = "PLINTH_THREADS")]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Chat interactively; tokens stream as they are generated.
    ///
    /// Type a message and press Enter. End a line with `\` to continue on the next line, or
    /// wrap a block in lines of `"""`. Commands: /reset (forget the conversation), /exit.
    Chat(ChatArgs),
    /// Generate a completion of one prompt (from --prompt or stdin).
    Generate(GenerateArgs),
    /// Describe an image, or answer --prompt about it, with a vision-language model
    /// (SmolVLM / Idefics3 directory as --model).
    Describe(DescribeArgs),
    /// Generate images from a text prompt with a Stable Diffusion-family model (a diffusers
    /// folder or Hub repository: SD 1.5 / 2.1, SD-Turbo, SDXL-Turbo).
    ///
    /// The same --seed gives the same PNG on the same machine; the prompt, seed and settings
    /// are written into the PNG's text metadata. Turbo models default to 1 step without
    /// guidance; others to 30 steps with guidance 7.5 (SDXL 5.0).
    Imagine(ImagineArgs),
    /// Describe a model: architecture, size, tensor types, tokenizer, what it can do.
    Inspect(InspectArgs),
    /// Download a known model into the cache ($PLINTH_HOME), or a Hugging Face repository.
    Pull(PullArgs),
    /// Measure prefill and decode speed, time to first token and peak memory.
    Bench(BenchArgs),
    /// Serve models over an OpenAI-compatible HTTP API (chat and text completions,
    /// streaming, /v1/models, /health, Prometheus /metrics). Stops on SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Sentence embeddings from an encoder (default all-MiniLM-L6-v2): texts from arguments,
    /// --file or stdin (one per line) to JSON lines or a .npy matrix.
    Embed(EmbedArgs),
    /// Semantic search: the lines of --corpus most similar to a query (the corpus is embedded
    /// once and cached next to the file).
    Search(SearchArgs),
    /// Classify texts: with a sequence-classification checkpoint (labels from its id2label),
    /// or zero-shot into --labels a,b,c with an instruct LLM (label log-likelihoods; the
    /// default model) or an NLI checkpoint (transformers' zero-shot pipeline).
    Classify(ClassifyArgs),
    /// Named entities (token classification) with character offsets.
    Ner(NerArgs),
    /// Answer a question: with --corpus DIR, retrieve passages with an embedder and answer
    /// from them with an instruct LLM, citing file:lines (retrieval-augmented); with
    /// --context FILE, answer from that text (an LLM), or pick the answer span out of it
    /// (an encoder with a question-answering head as --model).
    Answer(AnswerArgs),
    /// Rank documents by relevance to a query with a cross-encoder.
    Rerank(RerankArgs),
    /// Summarize a text of any length with an instruct LLM (long inputs are split at
    /// paragraph and sentence boundaries, summarized part by part, then together).
    Summarize(SummarizeArgs),
    /// Translate a text of any length: with an instruct LLM (prompted), or with a Marian
    /// (opus-mt), T5 or BART-style encoder-decoder model directory given as --model. Long
    /// inputs go sentence batch by sentence batch; paragraphs are kept.
    Translate(TranslateArgs),
    /// Fine-tune a LoRA adapter on a decoder (GGUF weights stay quantized) and write it as a
    /// Hugging Face PEFT adapter, with checkpoints, metrics and a loss plot.
    ///
    /// Data: JSON lines of chat conversations ({"messages": [...]}, loss on the assistant
    /// turns), prompt/completion pairs (loss on the completion) or {"text": ...}; any other
    /// file is plain text for continued pre-training. A killed run continues with --resume.
    Tune(TuneArgs),
    /// Evaluate a model, optionally with a LoRA adapter: perplexity of a text file, or
    /// answer accuracy and reference loss on held-out records.
    Eval(EvalArgs),
    /// Merge a LoRA adapter into its base model and write a standalone safetensors model
    /// directory.
    Merge(MergeArgs),
}

/// The model of an encoder command.
#[derive(Args, Debug, Clone)]
pub struct EncoderModelArg {
    /// A model directory (Hugging Face or sentence-transformers), a known name, or a Hugging
    /// Face repository `org/name`.
    #[arg(short, long, env = "PLINTH_ENCODER", default_value = plinth_io::catalog::DEFAULT_EMBEDDER)]
    pub model: String,
}

/// Texts to process: arguments, else --file, else stdin; one text per line.
#[derive(Args, Debug, Clone)]
pub struct TextsArg {
    /// Texts; when none are given they are read from --file or stdin, one per line.
    pub texts: Vec<String>,
    /// Read texts from FILE, one per line (`-` for stdin).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<String>,
}

/// What to do with inputs longer than the model takes.
#[derive(Args, Debug, Clone)]
pub struct TruncateArg {
    /// Cut inputs longer than the model's limit (the default, as sentence-transformers does).
    #[arg(long, overrides_with = "no_truncate")]
    pub truncate: bool,
    /// Refuse inputs longer than the model's limit instead of cutting them.
    #[arg(long)]
    pub no_truncate: bool,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: EncoderModelArg,
    #[command(flatten)]
    pub texts: TextsArg,
    /// Write to FILE instead of stdout; a name ending in .npy writes a float32 [N, dim] matrix.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<String>,
    /// L2-normalise the embeddings (default: as the model is configured).
    #[arg(long, overrides_with = "no_normalize")]
    pub normalize: bool,
    /// Do not normalise, even if the model is configured to.
    #[arg(long)]
    pub no_normalize: bool,
    #[command(flatten)]
    pub truncate: TruncateArg,
    /// Keep only the first N dimensions (for Matryoshka-trained models).
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Embed these image files (PNG, JPEG, WebP, GIF) with an image-text model (CLIP,
    /// SigLIP) given as --model; texts given too are embedded into the same space.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub image: Vec<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["corpus", "images"])))]
pub struct SearchArgs {
    #[command(flatten)]
    pub model: EncoderModelArg,
    /// The query.
    pub query: String,
    /// A text file; every non-empty line is a document.
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<String>,
    /// Text-to-image search over the images in DIR (recursively) with an image-text model
    /// (CLIP, SigLIP) as --model; their embeddings are cached in DIR.
    #[arg(long, value_name = "DIR")]
    pub images: Option<String>,
    /// How many results.
    #[arg(short = 'k', long, default_value_t = 5)]
    pub top_k: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The model of a task-head command: a checkpoint with the matching head.
#[derive(Args, Debug, Clone)]
pub struct HeadModelArg {
    /// A model directory, a known name or `org/name` whose checkpoint has the head this
    /// command needs (e.g. `*ForSequenceClassification`).
    #[arg(short, long, env = "PLINTH_MODEL")]
    pub model: String,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// A sequence-classification checkpoint; with --labels, an instruct LLM (default:
    /// smollm2-135m-instruct) or an NLI checkpoint. A path, a known name or `org/name`.
    #[arg(short, long, env = "PLINTH_MODEL")]
    pub model: Option<String>,
    #[command(flatten)]
    pub texts: TextsArg,
    /// Zero-shot classification into these labels, comma-separated (1 to 64, no duplicates).
    #[arg(short, long, value_name = "A,B,...")]
    pub labels: Option<String>,
    /// Zero-shot: score each label on its own, so several may apply (NLI models only).
    #[arg(long)]
    pub multi_label: bool,
    /// Zero-shot: the hypothesis, with {} where the label goes (default "This example is
    /// {}." for NLI models, "This is a photo of {}." for images).
    #[arg(long, value_name = "TEMPLATE")]
    pub hypothesis_template: Option<String>,
    /// Zero-shot classification of these image files into --labels with an image-text model
    /// (CLIP: probabilities over the labels; SigLIP: each label on its own) as --model.
    #[arg(long, num_args = 1.., value_name = "FILE", requires = "labels")]
    pub image: Vec<String>,
    /// Show the K best labels per text (0: all).
    #[arg(short = 'k', long, default_value_t = 1)]
    pub top_k: usize,
    #[command(flatten)]
    pub truncate: TruncateArg,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NerArgs {
    #[command(flatten)]
    pub model: HeadModelArg,
    #[command(flatten)]
    pub texts: TextsArg,
    /// How sub-word predictions become entities: none, simple, first, average, max (as in
    /// transformers' token-classification pipeline).
    #[arg(long, default_value = "simple")]
    pub aggregation: String,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// The answering model: an instruct LLM (generative QA, the default), or an encoder
    /// checkpoint with a question-answering head (extractive QA, only with --context).
    #[command(flatten)]
    pub model: ModelArg,
    /// The question.
    #[arg(short, long)]
    pub question: String,
    /// File holding the text to answer from (`-` for stdin); if it does not fit the LLM's
    /// context, its best passages are retrieved with --embedder.
    #[arg(short, long, value_name = "FILE")]
    pub context: Option<String>,
    /// Folder of .txt / .md files (recursively): retrieve the best passages with --embedder,
    /// answer from them and cite them as file:lines. Embeddings are cached in the folder.
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<String>,
    /// Sentence embedder for retrieval.
    #[arg(long, env = "PLINTH_ENCODER", default_value = plinth_io::catalog::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Passages to retrieve (default 4), or candidate answers of an extractive model (default 1).
    #[arg(short = 'k', long)]
    pub top_k: Option<usize>,
    /// Longest generated answer, in tokens.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Extractive QA: tokens per window over a long context (default: min(model limit, 384)).
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Extractive QA: tokens of overlap between windows (default: half a window, at most 128).
    #[arg(long)]
    pub doc_stride: Option<usize>,
    /// Extractive QA: longest answer, in tokens.
    #[arg(long, default_value_t = 15)]
    pub max_answer_len: usize,
    /// Print one JSON object (answer, sources with file / lines / score, cited) instead of
    /// streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RerankArgs {
    #[command(flatten)]
    pub model: HeadModelArg,
    /// The query.
    #[arg(short, long)]
    pub query: String,
    #[command(flatten)]
    pub documents: TextsArg,
    /// Show only the N best documents (0: all).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub top_n: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// A .gguf file, a model directory, a known name (see `plinth pull --list`) or a Hugging
    /// Face repository `org/name` (from the Hugging Face cache; downloaded when missing).
    #[arg(short, long, env = "PLINTH_MODEL", default_value = plinth_io::catalog::DEFAULT_LLM)]
    pub model: String,
    /// Quantize a safetensors model's linear weights while loading (q8_0, q4_0, q4_k, ...).
    #[arg(long, env = "PLINTH_QUANTIZE")]
    pub quantize: Option<String>,
    /// Speed over exactness: re-quantize Q4_1/Q5_x GGUF weights to Q8_0 at load (faster
    /// SIMD kernel, batched decode scales; ~45 MB more memory, slightly less accurate).
    #[arg(long, env = "PLINTH_REPACK_Q8", value_parser = clap::builder::BoolishValueParser::new())]
    pub repack_q8: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum number of tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 means greedy (always the most likely token). Default: the
    /// model's generation_config.json, else 0.8.
    #[arg(short, long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 disables). Default: generation_config.json, else 40.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probabilities add up to P (1 disables). Default:
    /// generation_config.json, else 0.95.
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than MIN_P times the most likely one (0 disables). Default:
    /// generation_config.json, else 0.05.
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Penalise tokens seen in the last 64 tokens (1 disables). Default:
    /// generation_config.json's repetition_penalty, else 1.
    #[arg(long, allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// Random seed: the same seed, model and prompt give the same text.
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
    /// Stop when this text is generated (not included in the output). Repeatable.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Use at most this many tokens of context (default: the model's full window).
    #[arg(short = 'c', long)]
    pub context: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System prompt placed before the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Images the conversation is about (a vision-language model such as SmolVLM as
    /// --model); they go with your first message.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub image: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The image file(s) (PNG, JPEG, WebP, GIF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// What to ask about the image(s).
    #[arg(short, long, default_value = "Describe this image.")]
    pub prompt: String,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImagineArgs {
    /// What the image should show.
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/) or a Hugging Face repository `org/name` (downloaded when missing).
    #[arg(short, long, env = "PLINTH_IMAGE_MODEL", default_value = "stabilityai/sd-turbo")]
    pub model: String,
    /// The PNG to write; with --count N > 1, `NAME-1.png`, `NAME-2.png`, ... follow it.
    #[arg(short, long, default_value = "image.png")]
    pub output: PathBuf,
    /// What the image should not show (needs --guidance above 1).
    #[arg(long, value_name = "TEXT")]
    pub negative: Option<String>,
    /// Denoising steps (default: 1 for Turbo models, else 30).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; 0 or 1 turns it off (default: 0 for Turbo models, 7.5
    /// for SD, 5.0 for SDXL).
    #[arg(long, short = 'g', allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Random seed (default: a fresh one, printed so the image can be made again).
    #[arg(long, short = 's')]
    pub seed: Option<u64>,
    /// Width in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long, short = 'W')]
    pub width: Option<usize>,
    /// Height in pixels, a multiple of 8 (default: the model's native size).
    #[arg(long, short = 'H')]
    pub height: Option<usize>,
    /// Noise scheduler: euler-a (Euler ancestral), euler or ddim (default: the model's own,
    /// or ddim where that one is not implemented).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// How many images; image i uses seed + i.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Print one JSON object per image (path, seed, settings, timings) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt; read from stdin when omitted.
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System prompt (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A .gguf file, a model directory, or a known name.
    #[arg(default_value = plinth_io::catalog::DEFAULT_LLM)]
    pub model: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Show the in-memory weight size after `--quantize TYPE` (safetensors models).
    #[arg(long)]
    pub quantize: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// A known model name, or a Hugging Face repository `org/name` (downloaded into the
    /// Hugging Face cache: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List known model names and whether they are cached.
    #[arg(long)]
    pub list: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated for the decode measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Instead, measure total generated tok/s through the continuous-batching engine with
    /// these numbers of concurrent requests (comma-separated, e.g. 1,4,16).
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Instead, measure sentence embedding: sentences per second over the lines of FILE with
    /// the encoder --encoder, in batches of --batch-size.
    #[arg(long, value_name = "FILE")]
    pub embed: Option<String>,
    /// The encoder for --embed.
    #[arg(long, default_value = plinth_io::catalog::DEFAULT_EMBEDDER)]
    pub encoder: String,
    /// Instead, measure image embedding with the dual encoder (CLIP, SigLIP) --model on N
    /// random 640x480 images: preprocessing, the model forward and end to end, in images/s.
    #[arg(long, value_name = "N")]
    pub images: Option<usize>,
    /// Texts (--embed) or images (--images) per forward pass.
    #[arg(long, visible_alias = "batch", default_value_t = 32)]
    pub batch_size: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, env = "PLINTH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (printed at start).
    #[arg(long, env = "PLINTH_PORT", default_value_t = 8080)]
    pub port: u16,
    /// A model to serve: a .gguf file, a model directory, a known name or a Hugging Face
    /// repository. Repeatable; in the environment variable, comma-separated. Encoders serve
    /// /v1/embeddings, diffusers pipelines (Stable Diffusion) /v1/images/generations.
    #[arg(short, long = "model", env = "PLINTH_MODEL", value_delimiter = ',', default_value = plinth_io::catalog::DEFAULT_LLM)]
    pub models: Vec<String>,
    /// The name clients use for the model in the same position (default: the known name,
    /// or the file or directory name). Repeatable.
    #[arg(long = "alias", env = "PLINTH_ALIAS", value_delimiter = ',')]
    pub aliases: Vec<String>,
    /// Require `Authorization: Bearer KEY` on /v1/* (/health and /metrics stay open).
    #[arg(long, env = "PLINTH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow browser requests from ORIGIN (`*`, or a comma-separated list). Off by default.
    #[arg(long, env = "PLINTH_CORS", value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// Largest accepted request body, in bytes (room for a base64 image of --max-image-bytes).
    #[arg(long, env = "PLINTH_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Let chat requests name image files (`file://...` or a path) inside DIR. Off by default:
    /// clients send images as base64 `data:` URLs.
    #[arg(long, env = "PLINTH_ALLOW_LOCAL_IMAGES", value_name = "DIR")]
    pub allow_local_images: Option<PathBuf>,
    /// Let chat requests name `http(s)://` image URLs, which the server then fetches. Off by default.
    #[arg(long, env = "PLINTH_ALLOW_REMOTE_IMAGES", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_remote_images: bool,
    /// Images accepted in one request.
    #[arg(long, env = "PLINTH_MAX_IMAGES", default_value_t = 8)]
    pub max_images: usize,
    /// Largest accepted image file, in bytes (decoded images are also limited to 50 megapixels).
    #[arg(long, env = "PLINTH_MAX_IMAGE_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_image_bytes: usize,
    /// Image-generation jobs each text-to-image model holds (running and waiting) before
    /// answering 429. Image jobs run on their own thread, never in the text engine's slots.
    #[arg(long, env = "PLINTH_MAX_IMAGE_QUEUE", default_value_t = 16)]
    pub max_image_queue: usize,
    /// Sequences decoded together per model.
    #[arg(long, env = "PLINTH_MAX_RUNNING", default_value_t = 16)]
    pub max_running: usize,
    /// Requests that may wait per model before new ones get 429.
    #[arg(long, env = "PLINTH_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,
    /// Serve a LoRA adapter (a PEFT directory, e.g. from `plinth tune`) on the first
    /// generation model under NAME: requests with "model": NAME use it, and one batch may mix
    /// adapters. Repeatable; in the environment variable, comma-separated. With --api-key,
    /// adapters can also be loaded and unloaded at run time (POST/DELETE /v1/adapters).
    #[arg(long = "adapter", env = "PLINTH_ADAPTER", value_delimiter = ',', value_name = "NAME=DIR")]
    pub adapters: Vec<String>,
    /// Quantize safetensors models' linear weights while loading (q8_0, q4_0, q4_k, ...).
    #[arg(long, env = "PLINTH_QUANTIZE")]
    pub quantize: Option<String>,
    /// Re-quantize Q4_1/Q5_x GGUF weights to Q8_0 at load: faster decode that scales with
    /// batching, for ~45 MB more memory and slightly less accuracy (see `--help` of generate).
    #[arg(long, env = "PLINTH_REPACK_Q8", value_parser = clap::builder::BoolishValueParser::new())]
    pub repack_q8: bool,
}

/// LoRA training flags (`plinth tune`).
#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// What to train: `lm`, a LoRA adapter on a decoder (chat, prompt/completion or text
    /// data); or `classify`, a classification head on a frozen encoder (`--model
    /// all-minilm-l6-v2`, data as CSV/TSV with `text` and `label` columns or JSONL
    /// `{"text","label"}`), which `plinth classify --model OUT` then uses.
    #[arg(long, default_value = "lm", value_parser = ["lm", "classify"])]
    pub task: String,
    /// Training data: a .jsonl file of {"messages": [...]}, {"prompt", "completion"} or
    /// {"text"} records, or any other file as plain text.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Held-out data (same formats): its mean loss is measured before training, every
    /// --save-every steps and at the end (written to DIR/eval.jsonl and plotted).
    #[arg(long, value_name = "FILE")]
    pub eval: Option<PathBuf>,
    /// Output directory: the adapter (adapter_config.json, adapter_model.safetensors),
    /// checkpoint/, metrics.jsonl, eval.jsonl and loss.png.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha; adapters are scaled by alpha / rank.
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// LoRA dropout on the adapter input while training (PEFT's lora_dropout); masks are
    /// seeded from --seed, the step and the example, so a resumed run draws the same ones.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Linear layers that get an adapter, by module-name suffix (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")]
    pub target_modules: Vec<String>,
    /// Passes over the training data (default: 1 for lm, 100 for classify).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps (when fewer than --epochs would take).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch (default: 4 for lm; examples per step, 16, for classify).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step (the effective batch is --batch-size x --grad-accum).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (AdamW), reached after --warmup steps, then cosine decay to 0
    /// (default: 2e-4 for lm, 1e-2 constant for classify).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Steps of linear learning-rate warm-up from 0.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 disables clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Random seed of the adapter initialisation and the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Longest example in tokens; longer ones are cut (and counted in the data report).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Concatenate examples into --max-len windows instead of one example per sequence.
    #[arg(long)]
    pub pack: bool,
    /// Write a checkpoint (and measure the --eval loss) every N steps; 0: only at the end.
    #[arg(long, default_value_t = 50)]
    pub save_every: usize,
    /// Continue the run in --out from its last checkpoint (same data and settings).
    #[arg(long)]
    pub resume: bool,
    /// Print one JSON object at the end instead of progress and a summary.
    #[arg(long)]
    pub json: bool,
}

/// `plinth eval` flags.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["data", "perplexity"])))]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A PEFT LoRA adapter directory to apply to the model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Held-out records (.jsonl of {"messages": [...]} whose last message is the reference
    /// answer, or {"prompt", "completion"}): greedy answers are scored by exact and
    /// normalized match, and the reference answer by its teacher-forced loss.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// A text file: perplexity over non-overlapping --ctx token windows, scored on the
    /// second half of each (as llama.cpp's llama-perplexity).
    #[arg(long, value_name = "FILE")]
    pub perplexity: Option<PathBuf>,
    /// Evaluate both the base model and the base with --adapter, and show the change.
    #[arg(long, requires = "adapter")]
    pub compare: bool,
    /// Tokens per perplexity window.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many perplexity windows.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Longest generated answer per record (default: the reference's tokens + 16).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `plinth merge` flags.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base model the adapter was trained on: a Hugging Face model directory, a GGUF
    /// file of the Llama family (llama, qwen2, qwen3), a known name or `org/name`.
    #[arg(short, long, env = "PLINTH_MODEL", default_value = plinth_io::catalog::DEFAULT_LLM)]
    pub model: String,
    /// The PEFT LoRA adapter directory to merge.
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Where to write the merged model (config.json, model.safetensors with f32 weights,
    /// tokenizer and generation files); must not exist yet, or be empty.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text file to summarize (`-` or none: stdin).
    pub file: Option<String>,
    /// Target length of the summary, in words.
    #[arg(long, default_value_t = 80)]
    pub words: usize,
    /// `paragraph` or `bullet`.
    #[arg(long, default_value = "paragraph")]
    pub style: String,
    /// Use at most this many tokens of the model's context per step (default: all of it).
    #[arg(short = 'c', long)]
    pub context: Option<usize>,
    /// Print one JSON object (summary, input tokens, parts, rounds) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text file to translate (`-` or none: stdin).
    pub file: Option<String>,
    /// Target language, as a name or code (`French`, `fr`, `de`, ...).
    #[arg(long)]
    pub to: String,
    /// Source language (default: let the model tell; an instruct LLM is told "the text").
    #[arg(long)]
    pub from: Option<String>,
    /// Beams for an encoder-decoder model (default: its generation_config.json, else 1: greedy).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Use at most this many tokens of an LLM's context per step (default: all of it).
    #[arg(short = 'c', long)]
    pub context: Option<usize>,
    /// Print one JSON object (translation, paragraphs, batches) instead of streaming.
    #[arg(long)]
    pub json: bool,
}
