//! Build script: links the `mamori` binary with packed relative relocations
//! (`-z pack-relative-relocs`, DT_RELR) where the linker and the C library
//! support them.
//!
//! Why: a position-independent Rust binary of this size carries about 48,000
//! relative relocations. As classic RELA entries they are a 1.1 MB table that
//! the dynamic loader reads in full at every start, so it stays resident for
//! the agent's whole life; packed, the same information is about 20 KB. The
//! binary stays position-independent (ASLR is kept). See docs/benchmarks.md,
//! "Resident memory".
//!
//! The probe links and runs a small C program that has relative relocations,
//! with the same `cc` rustc links with. A toolchain without support (binutils
//! before 2.38, glibc before 2.36) fails the probe and gets the classic
//! table; so does a cross build, where the probe cannot run. Set
//! `MAMORI_NO_RELR=1` to skip it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MAMORI_NO_RELR");
    println!("cargo:rerun-if-env-changed=CC");
    if std::env::var_os("MAMORI_NO_RELR").is_some() {
        return;
    }
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let native = env("TARGET") == env("HOST");
    if !native || env("CARGO_CFG_TARGET_OS") != "linux" || env("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    if probe() {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    } else {
        println!("cargo:warning=linking without packed relative relocations (the linker or libc does not support them)");
    }
}

/// Links and runs a program whose pointers need relative relocations.
fn probe() -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let src = out.join("relr_probe.c");
    let exe = out.join("relr_probe");
    let program = "static int a = 1, b = 2;\n\
                   int *p[] = { &a, &b, &a, &b };\n\
                   int main(void) { return *p[0] + *p[3] - 3; }\n";
    if std::fs::write(&src, program).is_err() {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let linked = Command::new(cc)
        .args(["-fPIE", "-pie", FLAG, "-o"])
        .arg(&exe)
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    linked && Command::new(&exe).status().is_ok_and(|s| s.success())
}
