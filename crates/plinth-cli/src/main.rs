//! The `plinth` binary: parse and validate arguments, then call the libraries. Errors are
//! printed as one line on stderr with a non-zero exit status.

mod cli;
mod cmd;
mod load;
mod plot;

use clap::Parser;

fn main() {
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
