fn main() {
    println!("{:?}", kvant::preempt::code_map_info());
}
