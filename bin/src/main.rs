//! The `transit` command line.
fn main() {
    println!("transit {}", env!("CARGO_PKG_VERSION"));
}
