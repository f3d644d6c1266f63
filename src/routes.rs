//! The routes compiled into this binary: the expansion of routes.yaml by the `routes!`
//! macro (see build.rs for which file). To read the generated code, open
//! `routes.generated.rs` in this crate's build output directory, or run `cargo expand routes`.

fanout_macros::routes!();
