//! The `execroot` command: a thin shell over the library. Argument parsing and printing live in
//! `cli`, the `bench` front end in `bench`, the workload generator in `fixture` (which the tests
//! and benchmarks include by path); none is part of the library's API.

mod bench;
mod cli;
mod fixture;
mod service;

fn main() {
    std::process::exit(cli::main());
}
