//! The `execroot` command: a thin shell over the library. Argument parsing and printing live in
//! `cli`, the `bench` front end in `bench`; neither is part of the library's API.

mod bench;
mod cli;

fn main() {
    std::process::exit(cli::main());
}
