//! Links the `converge` binary with packed relative relocations (`DT_RELR`) where the build
//! machine's linker and C library support them: the binary's position-independent code needs
//! tens of thousands of relative relocations, which the loader reads at every start and which
//! then stay resident. Packed, they take a few kilobytes instead of about 750 KB, and a server's
//! resident memory falls by about as much (bench.sh webhook, December).
//!
//! Only for a native Linux GNU build with the default linker, and only when a probe program
//! linked that way runs here: a cross build, a linker of its own (cargo-lambda's) or an older
//! glibc (before 2.36) gets the ordinary relocations.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native_gnu = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("TARGET") == var("HOST")
        && std::env::var_os("RUSTC_LINKER").is_none();
    if native_gnu && packed_relocations_run() {
        println!("cargo:rustc-link-arg-bin=converge=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether a C program linked with `-z pack-relative-relocs` by `cc` (the linker rustc uses
/// here) builds and runs on this machine.
fn packed_relocations_run() -> bool {
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    let probe = PathBuf::from(out_dir).join("relr-probe");
    let compiled = Command::new("cc")
        .args(["-x", "c", "-", "-o"])
        .arg(&probe)
        .arg("-Wl,-z,pack-relative-relocs")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut cc| {
            if let Some(mut source) = cc.stdin.take() {
                source.write_all(b"int main(void) { return 0; }\n")?;
            }
            cc.wait()
        });
    compiled.is_ok_and(|status| status.success())
        && Command::new(&probe)
            .status()
            .is_ok_and(|status| status.success())
}
