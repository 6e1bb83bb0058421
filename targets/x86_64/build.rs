//! Links the kernels with our linker script (load address 1 MiB, the PVH note
//! kept, `.bss` bounds exported for the trampoline), plus defmt's script with
//! the `defmt` feature.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    // Only binaries link; the library must not see these arguments.
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    // The `defmt` feature: defmt's own script (found through the search path
    // defmt's build script adds) places the interned strings in `.defmt`, an
    // info section next to what linker.ld lays out.
    if std::env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
