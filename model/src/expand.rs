//! The resolved model as Rust: a `Route` enum with a path `match`, one module per route with
//! its settings as `static`s, a `Lanes` struct with one field per target, and a dispatch
//! function that hands an event to each lane, unrolled and specialised to each lane's overflow
//! policy.
//!
//! Generated code names run-time items by absolute paths into `::fanout::__private`, so it
//! does not depend on the imports around the macro call.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::quote;
use std::time::Duration;

use crate::model::{Breaker, Overflow, Retry, Route, Routes, Server, Target};

/// The items for `routes`, as tokens for the `routes!` macro.
pub fn tokens(routes: &Routes) -> TokenStream {
    let server = server(&routes.server);
    let variants: Vec<Ident> = routes.routes.iter().map(|r| ident(&r.variant)).collect();
    let modules: Vec<Ident> = routes.routes.iter().map(|r| ident(&r.ident)).collect();
    let paths: Vec<&str> = routes.routes.iter().map(|r| r.path.as_str()).collect();
    let variant_docs: Vec<String> = routes
        .routes
        .iter()
        .map(|r| format!("Route `{}`: events POSTed to `{}`.", r.name, r.path))
        .collect();
    let route_count = routes.routes.len();
    let lane_count: usize = routes.routes.iter().map(|r| r.targets.len()).sum();
    let all_lanes = routes.routes.iter().flat_map(|r| {
        let module = ident(&r.ident);
        r.targets.iter().map(move |t| {
            let field = ident(&t.ident);
            quote!(&self.#module.#field)
        })
    });
    let route_modules = routes.routes.iter().map(route_module);
    quote! {
        /// The `server:` section of routes.yaml.
        pub static SERVER: ::fanout::__private::ServerSpec = #server;

        /// Every route compiled from routes.yaml.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Route {
            #( #[doc = #variant_docs] #variants, )*
        }

        impl Route {
            /// Every route, in routes.yaml order.
            pub const ALL: [Route; #route_count] = [ #( Route::#variants, )* ];

            /// The route whose path is `path` exactly, if any.
            #[inline]
            pub fn from_path(path: &str) -> ::core::option::Option<Route> {
                match path {
                    #( #paths => ::core::option::Option::Some(Route::#variants), )*
                    _ => ::core::option::Option::None,
                }
            }

            /// The route's settings as compiled in.
            pub fn spec(self) -> &'static ::fanout::__private::RouteSpec {
                match self {
                    #( Route::#variants => &#modules::ROUTE, )*
                }
            }
        }

        /// Every lane of every route: one field per route, one lane per target.
        pub struct Lanes {
            #( pub #modules: #modules::Lanes, )*
        }

        impl Lanes {
            /// Empty lanes, sized as routes.yaml says.
            pub fn new() -> Lanes {
                Lanes { #( #modules: #modules::Lanes::new(), )* }
            }

            /// Hands `event` to every lane of `route`; see each route's `dispatch`.
            #[inline]
            pub fn dispatch(
                &self,
                route: Route,
                event: ::fanout::__private::Event,
            ) -> ::core::result::Result<(), ::fanout::__private::Rejected> {
                match route {
                    #( Route::#variants => self.#modules.dispatch(event), )*
                }
            }

            /// Every lane, in routes.yaml order.
            pub fn all(&self) -> [&::fanout::__private::Lane; #lane_count] {
                [ #( #all_lanes, )* ]
            }
        }

        impl ::core::default::Default for Lanes {
            fn default() -> Lanes {
                Lanes::new()
            }
        }

        impl ::fanout::__private::RouteTable for Lanes {
            type Route = Route;

            const SERVER: &'static ::fanout::__private::ServerSpec = &SERVER;
            const ROUTES: &'static [Route] = &Route::ALL;

            fn new() -> Lanes {
                Lanes::new()
            }

            #[inline]
            fn route(path: &str) -> ::core::option::Option<Route> {
                Route::from_path(path)
            }

            #[inline]
            fn index(route: Route) -> usize {
                route as usize
            }

            fn spec(route: Route) -> &'static ::fanout::__private::RouteSpec {
                route.spec()
            }

            #[inline]
            fn dispatch(
                &self,
                route: Route,
                event: ::fanout::__private::Event,
            ) -> ::core::result::Result<(), ::fanout::__private::Rejected> {
                Lanes::dispatch(self, route, event)
            }

            fn lanes(&self) -> ::std::vec::Vec<&::fanout::__private::Lane> {
                self.all().to_vec()
            }
        }

        #( #route_modules )*
    }
}

/// The items for `routes` as a formatted file that people can read.
pub fn file(routes: &Routes, source: &str) -> String {
    let tokens = tokens(routes);
    let body = match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    };
    format!("// @generated by fanout from {source}: edit that file and rebuild, not this one.\n\n{body}")
}

fn route_module(route: &Route) -> TokenStream {
    let module = ident(&route.ident);
    let doc = format!("Route `{}` (`{}`) and its lanes.", route.name, route.path);
    let name = &route.name;
    let path = &route.path;
    let max_body = route.max_body;
    let statics: Vec<Ident> = route.targets.iter().map(target_static).collect();
    let fields: Vec<Ident> = route.targets.iter().map(|t| ident(&t.ident)).collect();
    let specs = route.targets.iter().map(|t| target_spec(&route.name, t));
    let field_docs = route.targets.iter().map(|t| {
        format!(
            "Lane to `{}` ({}, {} events).",
            t.url,
            t.overflow.as_str(),
            t.buffer
        )
    });

    // Reject lanes first: each takes a reservation, and a `?` that fails drops the reservations
    // taken before it, so the event lands in every lane or in none. A reservation is named
    // after its lane with a prefix, so that a target called `event` cannot shadow the event.
    let reservations = route
        .targets
        .iter()
        .filter(|t| t.overflow == Overflow::Reject)
        .map(|t| {
            let field = ident(&t.ident);
            let reserved = reservation(t);
            quote!(let #reserved = self.#field.reserve(size)?;)
        });
    let last = route.targets.len() - 1;
    let pushes = route.targets.iter().enumerate().map(|(i, t)| {
        let field = ident(&t.ident);
        let event = if i == last {
            quote!(event)
        } else {
            quote!(event.clone())
        };
        match t.overflow {
            Overflow::Reject => {
                let reserved = reservation(t);
                quote!(#reserved.push(#event);)
            }
            Overflow::DropOldest => quote!(self.#field.push_drop_oldest(#event);),
            Overflow::DropNewest => quote!(self.#field.push_drop_newest(#event);),
        }
    });
    let dispatch_doc = format!("Hands `event` to every lane of route `{name}`.");

    quote! {
        #[doc = #doc]
        pub mod #module {
            /// The route's settings as compiled in.
            pub static ROUTE: ::fanout::__private::RouteSpec = ::fanout::__private::RouteSpec {
                name: #name,
                path: #path,
                max_body: #max_body,
                targets: &[ #( &#statics, )* ],
            };

            #( #specs )*

            /// One lane per target of the route.
            pub struct Lanes {
                #( #[doc = #field_docs] pub #fields: ::fanout::__private::Lane, )*
            }

            impl Lanes {
                /// Empty lanes, sized as routes.yaml says.
                pub fn new() -> Lanes {
                    Lanes { #( #fields: ::fanout::__private::Lane::new(&#statics), )* }
                }

                #[doc = #dispatch_doc]
                #[inline]
                pub fn dispatch(
                    &self,
                    event: ::fanout::__private::Event,
                ) -> ::core::result::Result<(), ::fanout::__private::Rejected> {
                    let size = event.body_len();
                    #( #reservations )*
                    #( #pushes )*
                    ::core::result::Result::Ok(())
                }
            }

            impl ::core::default::Default for Lanes {
                fn default() -> Lanes {
                    Lanes::new()
                }
            }
        }
    }
}

fn reservation(target: &Target) -> Ident {
    ident(&format!("reserved_{}", target.ident))
}

fn target_static(target: &Target) -> Ident {
    ident(&format!("TARGET_{}", target.ident.to_ascii_uppercase()))
}

fn target_spec(route: &str, target: &Target) -> TokenStream {
    let static_name = target_static(target);
    let doc = format!("Target `{}` of route `{route}`.", target.name);
    let name = &target.name;
    let url = &target.url;
    let header_names = target.headers.iter().map(|(n, _)| n);
    let header_values = target.headers.iter().map(|(_, v)| v);
    let ca_file = match &target.ca_file {
        Some(path) => quote!(::core::option::Option::Some(#path)),
        None => quote!(::core::option::Option::None),
    };
    let buffer = Literal::usize_unsuffixed(target.buffer as usize);
    let buffer_bytes = Literal::usize_unsuffixed(target.buffer_bytes as usize);
    let overflow = overflow(target.overflow);
    let timeout = duration(target.timeout);
    let concurrency = Literal::usize_unsuffixed(target.concurrency as usize);
    let retry = retry(&target.retry);
    let breaker = breaker(&target.breaker);
    let http2 = target.http2;
    let batch = match &target.batch {
        Some(batch) => {
            let max_events = Literal::usize_unsuffixed(batch.max_events as usize);
            let max_bytes = Literal::usize_unsuffixed(batch.max_bytes as usize);
            let max_wait = duration(batch.max_wait);
            quote! {
                ::core::option::Option::Some(::fanout::__private::BatchPolicy {
                    max_events: #max_events,
                    max_bytes: #max_bytes,
                    max_wait: #max_wait,
                })
            }
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #[doc = #doc]
        pub static #static_name: ::fanout::__private::TargetSpec = ::fanout::__private::TargetSpec {
            route: #route,
            name: #name,
            url: #url,
            headers: &[ #( (#header_names, #header_values), )* ],
            ca_file: #ca_file,
            buffer: #buffer,
            buffer_bytes: #buffer_bytes,
            overflow: #overflow,
            timeout: #timeout,
            concurrency: #concurrency,
            retry: #retry,
            breaker: #breaker,
            http2: #http2,
            batch: #batch,
        };
    }
}

fn server(server: &Server) -> TokenStream {
    let listen = &server.listen;
    let max_body = server.max_body;
    let drain_timeout = duration(server.drain_timeout);
    let metrics_log_interval = duration(server.metrics_log_interval);
    let first_byte_timeout = duration(server.first_byte_timeout);
    let header_read_timeout = duration(server.header_read_timeout);
    let body_read_timeout = duration(server.body_read_timeout);
    let idle_timeout = duration(server.idle_timeout);
    let max_connections = Literal::usize_unsuffixed(server.max_connections as usize);
    let tcp_keepalive = duration(server.tcp_keepalive);
    let http2_max_streams = Literal::u32_unsuffixed(server.http2_max_streams as u32);
    let max_header_bytes = Literal::usize_unsuffixed(server.max_header_bytes as usize);
    let memory_budget = Literal::usize_unsuffixed(server.memory_budget as usize);
    quote! {
        ::fanout::__private::ServerSpec {
            listen: #listen,
            max_body: #max_body,
            drain_timeout: #drain_timeout,
            metrics_log_interval: #metrics_log_interval,
            first_byte_timeout: #first_byte_timeout,
            header_read_timeout: #header_read_timeout,
            body_read_timeout: #body_read_timeout,
            idle_timeout: #idle_timeout,
            max_connections: #max_connections,
            tcp_keepalive: #tcp_keepalive,
            http2_max_streams: #http2_max_streams,
            max_header_bytes: #max_header_bytes,
            memory_budget: #memory_budget,
        }
    }
}

fn retry(retry: &Retry) -> TokenStream {
    let attempts = retry.attempts;
    let backoff = duration(retry.backoff);
    let max_backoff = duration(retry.max_backoff);
    let on = &retry.on;
    quote! {
        ::fanout::__private::RetryPolicy {
            attempts: #attempts,
            backoff: #backoff,
            max_backoff: #max_backoff,
            on: &[ #( #on, )* ],
        }
    }
}

fn breaker(breaker: &Breaker) -> TokenStream {
    let failures = breaker.failures;
    let cooldown = duration(breaker.cooldown);
    let max_cooldown = duration(breaker.max_cooldown);
    quote! {
        ::fanout::__private::BreakerPolicy {
            failures: #failures,
            cooldown: #cooldown,
            max_cooldown: #max_cooldown,
        }
    }
}

fn overflow(overflow: Overflow) -> TokenStream {
    match overflow {
        Overflow::DropOldest => quote!(::fanout::__private::Overflow::DropOldest),
        Overflow::DropNewest => quote!(::fanout::__private::Overflow::DropNewest),
        Overflow::Reject => quote!(::fanout::__private::Overflow::Reject),
    }
}

fn duration(duration: Duration) -> TokenStream {
    let millis = duration.as_millis() as u64;
    quote!(::core::time::Duration::from_millis(#millis))
}

fn ident(name: &str) -> Ident {
    Ident::new(name, Span::call_site())
}
