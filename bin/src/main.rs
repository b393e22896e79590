//! The `transit` command line: see the `transit` library crate and
//! `docs/cli.md`.

fn main() {
    let code = transit::main_entry();
    std::process::exit(code);
}
