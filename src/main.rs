fn main() {
    println!("dcgan-wgpu");
}
