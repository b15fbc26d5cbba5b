//! The C math library's `pow` and `log`, from the `libm` crate (the Rust
//! project's port of musl's), linked into the binary in place of
//! libm.so.6.
//!
//! They are the only two libm functions the binary calls: tokio's scheduler
//! statistics use `pow`, and SQLite's full-text search (compiled in, unused
//! by mamori) `log`. For those two, the dynamic loader mapped libm.so.6 and
//! ran its relocations and IFUNC resolvers at every start, which kept 0.55
//! MiB of it in every agent's resident memory (docs/benchmarks.md, "Ninth
//! run"). `build.rs` links the binary with `--wrap=pow --wrap=log`, which
//! sends every call of them to `__wrap_pow`/`__wrap_log` here; with no other
//! libm symbol referenced, the linker (`--as-needed`) leaves libm.so.6 out.
//! If a dependency starts calling another libm function, libm.so.6 is
//! linked again and nothing breaks; only the memory comes back.
//!
//! musl's `pow` and `log`, like glibc's, are within 1 ulp of the exact result.

/// `pow(3)`, for the linker's `--wrap=pow`.
#[no_mangle]
pub extern "C" fn __wrap_pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// `log(3)`, for the linker's `--wrap=log`.
#[no_mangle]
pub extern "C" fn __wrap_log(x: f64) -> f64 {
    libm::log(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within a few ulp of the platform's libm (which unit tests link as
    /// usual), and with the arguments the right way round.
    fn close(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
    }

    #[test]
    fn pow_and_log_agree_with_the_platform() {
        for &(x, y) in &[
            (0.9, 1.0),
            (0.9, 37.0),
            (2.0, 10.0),
            (10.0, -3.5),
            (1.5, 0.5),
        ] {
            assert!(close(__wrap_pow(x, y), x.powf(y)), "pow({x}, {y})");
        }
        assert!(close(__wrap_pow(2.0, 10.0), 1024.0));
        assert!(close(__wrap_pow(10.0, 2.0), 100.0));
        for &x in &[0.5, 1.0, 2.0, std::f64::consts::E, 1e9] {
            assert!(close(__wrap_log(x), x.ln()), "log({x})");
        }
        assert_eq!(__wrap_log(1.0), 0.0);
        assert!(__wrap_log(-1.0).is_nan());
    }
}
