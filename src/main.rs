//! The `execroot` command: a thin CLI over the library (see `execroot::cli`).

fn main() {
    std::process::exit(execroot::cli::main());
}
