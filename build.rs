//! Build script: three link-time settings that keep the agent's resident
//! memory down, each applied only where the toolchain supports it.
//!
//! **Packed relative relocations** (`-z pack-relative-relocs`, DT_RELR). A
//! position-independent Rust binary of this size carries about 48,000
//! relative relocations. As classic RELA entries they are a 1.1 MB table that
//! the dynamic loader reads in full at every start, so it stays resident for
//! the agent's whole life; packed, the same information is about 20 KB. The
//! binary stays position-independent (ASLR is kept). The probe links and runs
//! a small C program that has relative relocations, with the same `cc` rustc
//! links with. A toolchain without support (binutils before 2.38, glibc
//! before 2.36) fails the probe and gets the classic table; so does a cross
//! build, where the probe cannot run. Set `MAMORI_NO_RELR=1` to skip it.
//!
//! **Hot functions first** (release builds only). `link/hot-functions.txt`
//! lists the functions a running agent executes (start-up, supervising,
//! sampling, the API), as the linker names them; the linker
//! (`--symbol-ordering-file`, LLD's option, which rustc uses on
//! x86_64-unknown-linux-gnu since 1.90) places them together at the start of
//! the code. The kernel maps 64 KiB of the file around every page fault in
//! it, so code touched here and there keeps nearly all of the 6 MB of text
//! resident; packed together, about 2.4 MB. The list is written by
//! `scripts/bench/hot_functions.py` (see docs/benchmarks.md, "Ninth run").
//! Names the binary does not have are ignored, so a stale list (another
//! toolchain, updated dependencies) costs memory, never correctness; the
//! same script's `check` says how much of the list still matches. The
//! probe links an empty Rust program with the option, through the same
//! rustc, linker and flags; a linker without it (GNU ld) fails the probe
//! and the build goes on without, with a warning that says why. Native
//! builds only, like the relocation probe. Set `MAMORI_NO_ORDER=1` to skip
//! it.
//!
//! **No libm.so.6.** `--wrap=pow,--wrap=log` sends the binary's only two
//! libm calls to `src/libm_shim.rs`, so the loader does not map the library
//! (Linux with glibc; GNU ld and LLD both take `--wrap`).
//!
//! See docs/benchmarks.md, "Resident memory".

use std::path::PathBuf;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MAMORI_NO_RELR");
    println!("cargo:rerun-if-env-changed=MAMORI_NO_ORDER");
    println!("cargo:rerun-if-env-changed=CC");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("CARGO_CFG_TARGET_OS") != "linux" || env("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    // pow and log from src/libm_shim.rs: the binary then needs no libm.so.6.
    println!("cargo:rustc-link-arg-bins=-Wl,--wrap=pow,--wrap=log");
    if env("TARGET") != env("HOST") {
        return;
    }
    if std::env::var_os("MAMORI_NO_RELR").is_none() {
        if probe() {
            println!("cargo:rustc-link-arg-bins={FLAG}");
        } else {
            println!("cargo:warning=linking without packed relative relocations (the linker or libc does not support them)");
        }
    }
    if std::env::var_os("MAMORI_NO_ORDER").is_none() && env("PROFILE") == "release" {
        order_hot_functions();
    }
}

/// Asks the linker to put the functions in `link/hot-functions.txt` first,
/// if rustc's linker takes `--symbol-ordering-file`.
fn order_hot_functions() {
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return;
    };
    let list = dir.join("link").join("hot-functions.txt");
    // Watched only when it exists: cargo reruns a build script at every
    // build while a path it watches is missing.
    let Some(list) = list.to_str().filter(|_| list.is_file()) else {
        return;
    };
    println!("cargo:rerun-if-changed={list}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let args = [
        format!("-Wl,--symbol-ordering-file={list}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    match links_rust_with(&args) {
        Ok(()) => {
            for a in args {
                println!("cargo:rustc-link-arg-bins={a}");
            }
        }
        Err(why) => println!("cargo:warning=linking without the hot-function order (a test link with --symbol-ordering-file, which LLD has, failed: {why})"),
    }
}

/// Links an empty Rust program with these linker arguments, through the
/// rustc, the linker (`target.<triple>.linker`, which cargo passes to rustc
/// as `-C linker` and to build scripts as `RUSTC_LINKER`) and the flags
/// this build uses. Err: the first line of what went wrong.
fn links_rust_with(args: &[String]) -> Result<(), String> {
    let out = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or("no OUT_DIR")?;
    let src = out.join("order_probe.rs");
    std::fs::write(&src, "fn main() {}\n").map_err(|e| e.to_string())?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let mut cmd = Command::new(rustc);
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("-Clinker=");
        arg.push(linker);
        cmd.arg(arg);
    }
    cmd.arg("-o").arg(out.join("order_probe")).arg(&src);
    for a in args {
        cmd.arg(format!("-Clink-arg={a}"));
    }
    let done = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if done.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&done.stderr);
    // rustc's own lines ("linking with `cc` failed", the command line) say
    // least; the linker's message is the `= note: ld…:` line.
    let line = err
        .lines()
        .map(|l| l.trim().trim_start_matches("= note:").trim())
        .find(|l| {
            !l.starts_with('"')
                && (l.contains("ld:") || l.contains("ld.bfd:") || l.contains("lld:"))
        })
        .or_else(|| err.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("no message");
    Err(line.chars().take(200).collect())
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
