//! The judge's exponentials and logarithms, computed in Rust by the `libm`
//! crate (musl's libm, ported) rather than by the C library.
//!
//! `f64::exp` and its kin call the platform's libm, whose last bit differs
//! between C libraries and their versions; the judge's bounds then differ
//! with them, and a verdict on the edge of its level can flip. Computed
//! here, the judge gives the same numbers on every platform, in its tests
//! and simulations as in the binary. And the binary needs no `libm.so`:
//! the dynamic loader no longer maps and relocates a library at every start
//! for a few functions (`src/main.rs` keeps tokio's one `pow` in Rust too).

/// `e^x`.
pub(crate) fn exp(x: f64) -> f64 {
    libm::exp(x)
}

/// `2^x`.
pub(crate) fn exp2(x: f64) -> f64 {
    libm::exp2(x)
}

/// `e^x − 1`, accurate for `x` near zero.
pub(crate) fn exp_m1(x: f64) -> f64 {
    libm::expm1(x)
}

/// The natural logarithm.
pub(crate) fn ln(x: f64) -> f64 {
    libm::log(x)
}

/// `ln(1 + x)`, accurate for `x` near zero.
pub(crate) fn ln_1p(x: f64) -> f64 {
    libm::log1p(x)
}
