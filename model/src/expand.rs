//! The resolved model as Rust:
//! - `SERVER`, and a `Route` enum with a path `match`;
//! - one module per route: its settings as `static`s (`ROUTE`, `TARGET_<NAME>`), a `Lanes`
//!   struct with one lane per target (each lane carries its target and its metrics, so nothing
//!   is paired by index or name at run time), a `Route` struct with the route's own counters
//!   beside its lanes, and one function per route mode (`fanout`: hand the event to every
//!   lane, unrolled and specialised to each lane's overflow policy);
//! - a `Table` of every route, implementing `RouteTable`, which dispatches a request to its
//!   route's mode.
//!
//! Generated code names run-time items by absolute paths into `::fanout::__private`, so it
//! does not depend on the imports around the macro call. Statics are expanded from the spec
//! values by [`crate::emit::Emit`].

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::emit::Emit;
use crate::model::{Route, Routes, Target};
use crate::spec::{Mode, Overflow, Storage};

/// The items for `routes`, as tokens for the `routes!` macro.
pub fn tokens(routes: &Routes) -> TokenStream {
    let server = routes.server.emit();
    let variants: Vec<Ident> = routes.routes.iter().map(|r| ident(&r.variant)).collect();
    let modules: Vec<Ident> = routes.routes.iter().map(|r| ident(&r.ident)).collect();
    let find = find_function(&routes.routes);
    let accept_arms = routes.routes.iter().map(|r| {
        let (variant, module) = (ident(&r.variant), ident(&r.ident));
        match r.spec.mode {
            Mode::Fanout => quote!(Route::#variant => self.#module.fanout(event),),
            Mode::Balance => {
                let message = format!(
                    "route `{}` is a balance route: it has no lanes",
                    r.spec.name
                );
                quote!(Route::#variant => ::core::unreachable!(#message),)
            }
        }
    });
    let pool_arms = routes.routes.iter().map(|r| {
        let (variant, module) = (ident(&r.variant), ident(&r.ident));
        match r.spec.mode {
            Mode::Fanout => quote!(Route::#variant => ::core::option::Option::None,),
            Mode::Balance => {
                quote!(Route::#variant => ::core::option::Option::Some(&self.#module.pool),)
            }
        }
    });
    let variant_docs: Vec<String> = routes
        .routes
        .iter()
        .map(|r| match r.spec.mode {
            Mode::Fanout => format!(
                " Route `{}`: events POSTed to `{}`.",
                r.spec.name, r.spec.path
            ),
            Mode::Balance => format!(
                " Route `{}`: requests to `{}`, each relayed to one backend.",
                r.spec.name, r.spec.path
            ),
        })
        .collect();
    let route_count = routes.routes.len();
    let route_modules = routes.routes.iter().map(route_module);
    quote! {
        /// The `server:` section of the routes file.
        pub static SERVER: ::fanout::__private::ServerSpec = #server;

        /// Every route of the routes file.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Route {
            #( #[doc = #variant_docs] #variants, )*
        }

        impl Route {
            /// Every route, in the routes file's order.
            pub const ALL: [Route; #route_count] = [ #( Route::#variants, )* ];

            #find

            /// The route's settings as compiled in.
            pub fn spec(self) -> &'static ::fanout::__private::RouteSpec {
                match self {
                    #( Route::#variants => &#modules::ROUTE, )*
                }
            }
        }

        /// Every route with its counters and lanes.
        pub struct Table {
            #( pub #modules: #modules::Route, )*
        }

        impl ::fanout::__private::RouteTable for Table {
            type Route = Route;

            const SERVER: &'static ::fanout::__private::ServerSpec = &SERVER;
            const ROUTES: &'static [Route] = &Route::ALL;

            fn new(
                resolver: &mut ::fanout::__private::Resolver<'_>,
            ) -> ::core::result::Result<Table, ::fanout::__private::StartupError> {
                ::core::result::Result::Ok(Table {
                    #( #modules: #modules::Route::new(resolver)?, )*
                })
            }

            #[inline]
            fn route(
                path: &str,
                headers: &::fanout::__private::HeaderMap,
            ) -> ::core::option::Option<Route> {
                Route::find(path, headers)
            }

            fn spec(route: Route) -> &'static ::fanout::__private::RouteSpec {
                route.spec()
            }

            #[inline]
            fn accept(
                &self,
                route: Route,
                event: ::fanout::__private::Event,
            ) -> ::core::result::Result<::fanout::__private::Admission, ::fanout::__private::Rejected> {
                match route {
                    #( #accept_arms )*
                }
            }

            fn pool(&self, route: Route) -> ::core::option::Option<&::fanout::__private::Pool> {
                match route {
                    #( #pool_arms )*
                }
            }

            #[inline]
            fn metrics(&self, route: Route) -> &::fanout::__private::RouteMetrics {
                match route {
                    #( Route::#variants => &self.#modules.metrics, )*
                }
            }

            fn keys(&self, route: Route) -> &::fanout::__private::IdempotencyKeys {
                match route {
                    #( Route::#variants => &self.#modules.keys, )*
                }
            }

            fn gate(&self, route: Route) -> &::fanout::__private::Gate {
                match route {
                    #( Route::#variants => &self.#modules.gate, )*
                }
            }

            fn storage(&self, route: Route) -> &::fanout::__private::RouteStorage {
                match route {
                    #( Route::#variants => &self.#modules.storage, )*
                }
            }

            fn lanes_of(
                &self,
                route: Route,
                visit: &mut dyn FnMut(&::std::sync::Arc<::fanout::__private::Lane>),
            ) {
                match route {
                    #( Route::#variants => self.#modules.lanes.visit(visit), )*
                }
            }
        }

        #( #route_modules )*
    }
}

/// The items for `routes` as a formatted file that people can read. `source` names the routes
/// file as the reader knows it (relative to the workspace).
pub fn file(routes: &Routes, source: &str) -> String {
    let tokens = tokens(routes);
    let body = match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    };
    format!("// @generated by fanout from {source}: edit that file and rebuild, not this one.\n\n{body}")
}

/// `Route::find`: the route a request takes, by its path and, where routes share a path, its
/// headers; straight-line code, no table lookup. The first of these tiers with a candidate
/// wins (the model's overlap checks leave at most one candidate per tier):
/// 1. exact paths, in one `match`: where several routes share a path, those with a `match`
///    first, in file order, then the one without;
/// 2. prefix routes with a `match`, longest prefix first;
/// 3. prefix routes without, longest prefix first.
fn find_function(routes: &[Route]) -> TokenStream {
    let mut exact: Vec<(&str, Vec<&Route>)> = Vec::new();
    let mut prefixes: Vec<(&str, &Route)> = Vec::new();
    for route in routes {
        match route.spec.path_pattern() {
            (prefix, true) => prefixes.push((prefix, route)),
            (path, false) => match exact.iter_mut().find(|(p, _)| *p == path) {
                Some((_, group)) => group.push(route),
                None => exact.push((path, vec![route])),
            },
        }
    }
    for (_, group) in &mut exact {
        group.sort_by_key(|route| route.spec.match_headers.is_empty());
    }
    prefixes.sort_by_key(|(prefix, route)| {
        (
            route.spec.match_headers.is_empty(),
            core::cmp::Reverse(prefix.len()),
        )
    });
    let exact_arms = exact.iter().map(|(path, group)| {
        let tries = group.iter().map(|route| try_route(route));
        quote!(#path => { #( #tries )* })
    });
    let prefix_tries = prefixes.iter().map(|(prefix, route)| {
        let found = try_route(route);
        quote! {
            if ::fanout::__private::under(path, #prefix) {
                #found
            }
        }
    });
    quote! {
        /// The route a request to `path` with `headers` takes, if any.
        #[inline]
        pub fn find(
            path: &str,
            headers: &::fanout::__private::HeaderMap,
        ) -> ::core::option::Option<Route> {
            let _ = headers;
            match path {
                #( #exact_arms )*
                _ => {}
            }
            #( #prefix_tries )*
            ::core::option::Option::None
        }
    }
}

/// `return Some(route)` if the request's headers are those of the route's `match`.
fn try_route(route: &Route) -> TokenStream {
    let variant = ident(&route.variant);
    let found = quote!(return ::core::option::Option::Some(Route::#variant););
    if route.spec.match_headers.is_empty() {
        return found;
    }
    let conditions = route.spec.match_headers.iter().map(|(name, value)| {
        let value = proc_macro2::Literal::byte_string(value.as_bytes());
        quote! {
            headers
                .get({
                    const NAME: ::fanout::__private::HeaderName =
                        ::fanout::__private::HeaderName::from_static(#name);
                    &NAME
                })
                .is_some_and(|value| value.as_bytes() == #value)
        }
    });
    quote! {
        if #( #conditions )&&* {
            #found
        }
    }
}

fn route_module(route: &Route) -> TokenStream {
    let spec = route.spec;
    let module = ident(&route.ident);
    let doc = format!(" Route `{}` (`{}`) and its lanes.", spec.name, spec.path);
    let (name, path, max_body) = (spec.name, spec.path, spec.max_body);
    let (mode, storage, disk) = (spec.mode.emit(), spec.storage.emit(), spec.disk.emit());
    let idempotency_window = spec.idempotency_window.emit();
    let (auth, rate_limit) = (spec.auth.emit(), spec.rate_limit.emit());
    let (match_headers, balance) = (spec.match_headers.emit(), spec.balance.emit());
    let statics: Vec<Ident> = route.targets.iter().map(target_static).collect();
    let specs = route.targets.iter().map(|target| {
        let static_name = target_static(target);
        let doc = format!(" Target `{}` of route `{}`.", target.spec.name, spec.name);
        let value = target.spec.emit();
        quote! {
            #[doc = #doc]
            pub static #static_name: ::fanout::__private::TargetSpec = #value;
        }
    });
    let mode_items = match spec.mode {
        Mode::Fanout => fanout_function(route),
        Mode::Balance => TokenStream::new(),
    };
    let (pool_field, pool_value) = match spec.mode {
        Mode::Fanout => (TokenStream::new(), TokenStream::new()),
        Mode::Balance => (
            quote! {
                /// The route's backends (its targets), their health and their connections.
                pub pool: ::fanout::__private::Pool,
            },
            quote!(pool: ::fanout::__private::Pool::new(&ROUTE, resolver)?,),
        ),
    };
    let lanes: Vec<&Target> = match spec.mode {
        Mode::Fanout => route.targets.iter().collect(),
        Mode::Balance => Vec::new(),
    };
    let fields: Vec<Ident> = lanes.iter().map(|t| ident(&t.ident)).collect();
    let lane_statics: Vec<Ident> = lanes.iter().map(|t| target_static(t)).collect();
    let field_docs = lanes.iter().map(|t| match spec.storage {
        Storage::Memory => format!(
            " Lane to `{}` ({}, {} events).",
            t.spec.endpoint.address(),
            t.spec.lane.overflow.as_str(),
            t.spec.lane.buffer
        ),
        Storage::Disk => format!(
            " Lane to `{}` (a cursor over the route's log).",
            t.spec.endpoint.address()
        ),
    });
    quote! {
        #[doc = #doc]
        pub mod #module {
            /// The route's settings as compiled in.
            pub static ROUTE: ::fanout::__private::RouteSpec = ::fanout::__private::RouteSpec {
                name: #name,
                path: #path,
                max_body: #max_body,
                mode: #mode,
                storage: #storage,
                disk: #disk,
                idempotency_window: #idempotency_window,
                auth: #auth,
                rate_limit: #rate_limit,
                match_headers: #match_headers,
                balance: #balance,
                targets: &[ #( &#statics, )* ],
            };

            #( #specs )*

            /// The route's counters, remembered idempotency keys, gate, storage and lanes.
            pub struct Route {
                pub metrics: ::fanout::__private::RouteMetrics,
                pub keys: ::fanout::__private::IdempotencyKeys,
                pub gate: ::fanout::__private::Gate,
                /// Where the route takes its events in.
                pub storage: ::fanout::__private::RouteStorage,
                pub lanes: Lanes,
                #pool_field
            }

            impl Route {
                /// Empty storage and lanes, their targets resolved (`${NAME}` read from the
                /// environment).
                pub fn new(
                    resolver: &mut ::fanout::__private::Resolver<'_>,
                ) -> ::core::result::Result<Route, ::fanout::__private::StartupError> {
                    let storage = ::fanout::__private::RouteStorage::new(&ROUTE);
                    let lanes = Lanes {
                        #( #fields: ::fanout::__private::Lane::new(&#lane_statics, &ROUTE, &storage, resolver)?, )*
                    };
                    ::core::result::Result::Ok(Route {
                        metrics: ::fanout::__private::RouteMetrics::new(&ROUTE),
                        keys: ::fanout::__private::IdempotencyKeys::new(&ROUTE),
                        gate: ::fanout::__private::Gate::new(&ROUTE, resolver)?,
                        storage,
                        lanes,
                        #pool_value
                    })
                }

                #mode_items
            }

            /// One lane per target of a fan-out route (none for a balance route).
            pub struct Lanes {
                #( #[doc = #field_docs] pub #fields: ::std::sync::Arc<::fanout::__private::Lane>, )*
            }

            impl Lanes {
                /// Calls `visit` with every lane, in the routes file's order.
                pub fn visit(&self, visit: &mut dyn FnMut(&::std::sync::Arc<::fanout::__private::Lane>)) {
                    let _ = &visit;
                    #( visit(&self.#fields); )*
                }
            }
        }
    }
}

/// `fanout`: hands an event to every lane of the route.
///
/// A durable route (`storage: disk`) writes it once to the route's storage, its log, which
/// every lane reads at its own pace, and the caller awaits the returned commit before
/// answering 202.
///
/// In memory: reject lanes first: each takes a reservation, and a `?` that fails drops the
/// reservations taken before it, so the event lands in every lane or in none. A reservation is
/// named after its lane with a prefix, so that a target called `event` cannot shadow the event.
fn fanout_function(route: &Route) -> TokenStream {
    let doc = format!(
        " Mode `fanout`: hands `event` to every lane of route `{}`.",
        route.spec.name
    );
    let body = match route.spec.storage {
        Storage::Disk => quote! {
            match self.storage.append(&event) {
                ::core::result::Result::Ok(commit) => {
                    ::core::result::Result::Ok(::fanout::__private::Admission::Committing(commit))
                }
                ::core::result::Result::Err(refused) => ::core::result::Result::Err(refused.into()),
            }
        },
        Storage::Memory => memory_fanout(route),
    };
    quote! {
        #[doc = #doc]
        #[inline]
        pub fn fanout(
            &self,
            event: ::fanout::__private::Event,
        ) -> ::core::result::Result<::fanout::__private::Admission, ::fanout::__private::Rejected> {
            #body
        }
    }
}

fn memory_fanout(route: &Route) -> TokenStream {
    let reservations = route
        .targets
        .iter()
        .filter(|t| t.spec.lane.overflow == Overflow::Reject)
        .map(|t| {
            let field = ident(&t.ident);
            let reserved = reservation(t);
            quote!(let #reserved = self.lanes.#field.reserve(size)?;)
        });
    let last = route.targets.len() - 1;
    let pushes = route.targets.iter().enumerate().map(|(i, t)| {
        let field = ident(&t.ident);
        let event = if i == last {
            quote!(event)
        } else {
            quote!(event.clone())
        };
        match t.spec.lane.overflow {
            Overflow::Reject => {
                let reserved = reservation(t);
                quote!(#reserved.push(#event);)
            }
            Overflow::DropOldest => quote!(self.lanes.#field.push_drop_oldest(#event);),
            Overflow::DropNewest => quote!(self.lanes.#field.push_drop_newest(#event);),
        }
    });
    quote! {
        let size = event.body_len();
        #( #reservations )*
        #( #pushes )*
        ::core::result::Result::Ok(::fanout::__private::Admission::Queued)
    }
}

fn reservation(target: &Target) -> Ident {
    ident(&format!("reserved_{}", target.ident))
}

fn target_static(target: &Target) -> Ident {
    ident(&format!("TARGET_{}", target.ident.to_ascii_uppercase()))
}

fn ident(name: &str) -> Ident {
    Ident::new(name, Span::call_site())
}
