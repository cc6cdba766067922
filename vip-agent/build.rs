//! Builds the XDP object with the shared `ebpf-build` and hands its path to
//! the crate (`include_bytes!(env!("VIP_EBPF_OBJECT"))`).
//!
//! Reruns only when an input of the object changes: every path printed
//! below exists (a missing one makes cargo rerun the script on every build).
fn main() {
    for input in ebpf_build::inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    for var in ebpf_build::INPUT_ENV {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    match ebpf_build::build(release) {
        Ok(object) => println!("cargo:rustc-env=VIP_EBPF_OBJECT={}", object.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
