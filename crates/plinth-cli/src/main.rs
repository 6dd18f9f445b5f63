//! The `plinth` binary: parse and validate arguments, then call the libraries. Errors are
//! printed as one line on stderr with a non-zero exit status.

mod cli;
mod cmd;
mod load;
mod plot;

use clap::Parser;

fn main() {
    keep_freed_buffers();
    let args = cli::Cli::parse();
    if let Some(n) = args.threads {
        // candle sizes its thread pool from this variable on first use.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if let Err(e) = cmd::run(args) {
        // `{:#}` joins the context chain on one line: "loading model: file.gguf: truncated ...".
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A prompt's forward pass dequantizes each weight into a fresh multi-megabyte buffer and frees
/// it right after its matrix product. With glibc's defaults such buffers are mmap'd and
/// unmapped every time, so every pass page-faults and zeroes all of them again (about 8 % of
/// prefill time). Raising the mmap and trim thresholds keeps them in the heap for reuse; peak
/// memory is unchanged (the buffers are freed before the next one is taken).
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
