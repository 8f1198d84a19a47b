//! Records the host target triple, which `cargo xtask test` passes to the guest unit tests (the
//! guest workspace builds for wasm32-wasip2 by default).
fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=XTASK_HOST={target}");
}
