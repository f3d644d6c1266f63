//! tests/durable_faults.rs compiles to nothing without the `failpoints` feature (its fault
//! points do not exist then). In CI that would pass silently: this test fails instead.

#[test]
fn ci_runs_the_fault_tests() {
    let skipped = cfg!(not(feature = "failpoints")) && std::env::var_os("CI").is_some();
    assert!(
        !skipped,
        "CI is set and the tests are built without the `failpoints` feature, so \
         tests/durable_faults.rs is compiled out: run `cargo test --workspace --features failpoints`"
    );
}
