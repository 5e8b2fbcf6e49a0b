//! Two link-time choices for the `converge` binary, each made only where the build machine
//! supports it (a native Linux GNU build with rustc's own linker; a cross build or a linker of
//! its own, such as cargo-lambda's, gets neither):
//!
//! - **Packed relative relocations** (`DT_RELR`): the binary's position-independent code needs
//!   tens of thousands of relative relocations, which the loader reads at every start and which
//!   then stay resident. Packed, they take a few kilobytes instead of about 750 KB, and a
//!   server's resident memory falls by about as much (bench.sh webhook, December). Needs a
//!   glibc of 2.36 or later, so a probe program linked that way must run here.
//! - **Code layout** (release builds): the functions listed in `link-order.txt`, those a server
//!   runs, are placed together at the start of the code. The kernel maps a binary's code in
//!   64 KB blocks around each page first touched, so a server whose few thousand functions are
//!   spread over 11 MB of code keeps nearly all of it resident; packed, about 3 MB. A symbol
//!   the list names and the binary lacks is skipped, so a stale list costs memory, never
//!   correctness; `scripts/link-order.sh` regenerates it. `CONVERGE_LINK_MAP=path` also
//!   writes the linker's map there (the script reads it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The list of functions placed first, beside this file.
const LINK_ORDER: &str = "link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={LINK_ORDER}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo:rerun-if-env-changed=CONVERGE_LINK_MAP");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native_gnu = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("TARGET") == var("HOST")
        && std::env::var_os("RUSTC_LINKER").is_none();
    if !native_gnu {
        return;
    }
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    if packed_relocations_run(&out_dir) {
        println!("cargo:rustc-link-arg-bin=converge=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(LINK_ORDER);
    if var("PROFILE") == "release" && order.is_file() && rustc_links_with(&out_dir, &order) {
        println!(
            "cargo:rustc-link-arg-bin=converge=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // A symbol of the list this build lacks (renamed, or inlined away) is not an error.
        println!("cargo:rustc-link-arg-bin=converge=-Wl,--no-warn-symbol-ordering");
    }
    if let Some(map) = std::env::var_os("CONVERGE_LINK_MAP") {
        println!(
            "cargo:rustc-link-arg-bin=converge=-Wl,-Map={}",
            Path::new(&map).display()
        );
    }
}

/// Whether a C program linked with `-z pack-relative-relocs` by `cc` builds and runs here.
fn packed_relocations_run(out_dir: &Path) -> bool {
    let probe = out_dir.join("relr-probe");
    let mut cc = Command::new("cc");
    cc.args(["-x", "c", "-", "-o"])
        .arg(&probe)
        .arg("-Wl,-z,pack-relative-relocs");
    succeeds_on(cc, b"int main(void) { return 0; }\n")
        && Command::new(&probe)
            .status()
            .is_ok_and(|status| status.success())
}

/// Whether rustc, with this build's flags, links a program given the ordering file (its
/// default linker here, LLD, takes one; GNU ld, set by a user's flags, does not).
fn rustc_links_with(out_dir: &Path, order: &Path) -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let mut rustc = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    rustc
        .args(flags.split('\x1f').filter(|flag| !flag.is_empty()))
        .args(["-", "--crate-name", "order_probe", "-o"])
        .arg(out_dir.join("order-probe"))
        .arg("-Clink-arg=-Wl,--no-warn-symbol-ordering")
        .arg(format!(
            "-Clink-arg=-Wl,--symbol-ordering-file={}",
            order.display()
        ));
    succeeds_on(rustc, b"fn main() {}\n")
}

/// Whether `command`, given `source` on its standard input (its output discarded), succeeds.
fn succeeds_on(mut command: Command, source: &[u8]) -> bool {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(source)?;
            }
            child.wait()
        })
        .is_ok_and(|status| status.success())
}
