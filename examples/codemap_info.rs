//! Prints how the preemption safe-point code map was built for this binary
//! (build time, segments, DWARF inline records), e.g. to compare profiles:
//! `cargo run --release --example codemap_info`.
fn main() {
    println!("{:?}", kvant::preempt::code_map_info());
}
