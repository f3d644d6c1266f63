//! The `routes!` macro: expands a routes.yaml into fanout's routing tables and lanes.
//!
//! A shim over `fanout-model`: read the file, validate it, expand it. Every problem in the file
//! becomes a `compile_error!` naming the file, line, route, target and field; nothing panics.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use std::path::PathBuf;

/// Expands a routes file into a `Route` enum, a `Lanes` struct and one module per route.
///
/// - `routes!()` expands the file chosen by fanout's build script (`routes.yaml` at the
///   workspace root, or `$FANOUT_ROUTES`), which it passes in `FANOUT_ROUTES_FILE`.
/// - `routes!("path/to/routes.yaml")` expands another file, relative to the calling crate's
///   `Cargo.toml` (benchmarks use this for routes of their own).
#[proc_macro]
pub fn routes(input: TokenStream) -> TokenStream {
    expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(input: proc_macro2::TokenStream) -> syn::Result<proc_macro2::TokenStream> {
    let path = if input.is_empty() {
        let chosen = std::env::var("FANOUT_ROUTES_FILE").map_err(|_| {
            syn::Error::new(
                Span::call_site(),
                "routes!() needs FANOUT_ROUTES_FILE, which fanout's build.rs sets; \
                 elsewhere name the file: routes!(\"routes.yaml\")",
            )
        })?;
        PathBuf::from(chosen)
    } else {
        let literal: syn::LitStr = syn::parse2(input)?;
        let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        PathBuf::from(manifest_dir).join(literal.value())
    };
    let routes = fanout_model::load(&path).map_err(|errors| {
        let mut errors = errors
            .0
            .into_iter()
            .map(|e| syn::Error::new(Span::call_site(), e));
        let mut first = errors.next().expect("load() fails with at least one error");
        first.extend(errors);
        first
    })?;
    let items = fanout_model::expand::tokens(&routes);
    let tracked = path.display().to_string();
    Ok(quote! {
        // Makes rustc rebuild when the routes file changes.
        const _: &[u8] = ::core::include_bytes!(#tracked);
        #items
    })
}
