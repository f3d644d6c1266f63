//! Spec values as Rust expressions, for the `routes!` expansion: the primitives here, the spec
//! structs and enums through [`crate::spec`]'s macros, so each field is listed once.

use proc_macro2::{Literal, TokenStream};
use quote::quote;
use std::time::Duration;

use crate::spec::{Auth, Endpoint, Fsync, MethodSet, NatsAuth, StatusSet};

/// A value as the Rust expression that rebuilds it in a `static`.
pub trait Emit {
    fn emit(&self) -> TokenStream;
}

macro_rules! emit_integer {
    ($($type:ty => $literal:ident),*) => {
        $(impl Emit for $type {
            fn emit(&self) -> TokenStream {
                let literal = Literal::$literal(*self);
                quote!(#literal)
            }
        })*
    };
}

emit_integer!(u16 => u16_unsuffixed, u32 => u32_unsuffixed, u64 => u64_unsuffixed, usize => usize_unsuffixed);

impl Emit for bool {
    fn emit(&self) -> TokenStream {
        quote!(#self)
    }
}

impl Emit for &'static str {
    fn emit(&self) -> TokenStream {
        let literal = Literal::string(self);
        quote!(#literal)
    }
}

impl Emit for Duration {
    fn emit(&self) -> TokenStream {
        let nanos = self.as_nanos();
        if nanos % 1_000_000 == 0 {
            let millis = (nanos / 1_000_000) as u64;
            quote!(::core::time::Duration::from_millis(#millis))
        } else {
            let nanos = nanos as u64;
            quote!(::core::time::Duration::from_nanos(#nanos))
        }
    }
}

impl<T: Emit> Emit for Option<T> {
    fn emit(&self) -> TokenStream {
        match self {
            Some(value) => {
                let value = value.emit();
                quote!(::core::option::Option::Some(#value))
            }
            None => quote!(::core::option::Option::None),
        }
    }
}

impl<T: Emit> Emit for &'static [T] {
    fn emit(&self) -> TokenStream {
        let items = self.iter().map(Emit::emit);
        quote!(&[ #( #items, )* ])
    }
}

impl<A: Emit, B: Emit> Emit for (A, B) {
    fn emit(&self) -> TokenStream {
        let (a, b) = (self.0.emit(), self.1.emit());
        quote!((#a, #b))
    }
}

impl Emit for StatusSet {
    fn emit(&self) -> TokenStream {
        let ranges = self.0.emit();
        quote!(::fanout::__private::StatusSet(#ranges))
    }
}

impl Emit for MethodSet {
    fn emit(&self) -> TokenStream {
        let bits = self.0.emit();
        quote!(::fanout::__private::MethodSet(#bits))
    }
}

impl Emit for Endpoint {
    fn emit(&self) -> TokenStream {
        match self {
            Endpoint::Http(http) => {
                let http = http.emit();
                quote!(::fanout::__private::Endpoint::Http(#http))
            }
            Endpoint::Nats(nats) => {
                let nats = nats.emit();
                quote!(::fanout::__private::Endpoint::Nats(#nats))
            }
        }
    }
}

impl Emit for NatsAuth {
    fn emit(&self) -> TokenStream {
        match self {
            NatsAuth::None => quote!(::fanout::__private::NatsAuth::None),
            NatsAuth::Token(token) => {
                let token = token.emit();
                quote!(::fanout::__private::NatsAuth::Token(#token))
            }
            NatsAuth::UserPassword { user, password } => {
                let (user, password) = (user.emit(), password.emit());
                quote!(::fanout::__private::NatsAuth::UserPassword { user: #user, password: #password })
            }
            NatsAuth::Creds(path) => {
                let path = path.emit();
                quote!(::fanout::__private::NatsAuth::Creds(#path))
            }
        }
    }
}

impl Emit for Fsync {
    fn emit(&self) -> TokenStream {
        match self {
            Fsync::Always => quote!(::fanout::__private::Fsync::Always),
            Fsync::Never => quote!(::fanout::__private::Fsync::Never),
            Fsync::Every(period) => {
                let period = period.emit();
                quote!(::fanout::__private::Fsync::Every(#period))
            }
        }
    }
}

impl Emit for Auth {
    fn emit(&self) -> TokenStream {
        match self {
            Auth::Bearer(tokens) => {
                let tokens = tokens.emit();
                quote!(::fanout::__private::Auth::Bearer(#tokens))
            }
            Auth::StandardWebhooks(scheme) => {
                let scheme = scheme.emit();
                quote!(::fanout::__private::Auth::StandardWebhooks(#scheme))
            }
            Auth::Github(scheme) => {
                let scheme = scheme.emit();
                quote!(::fanout::__private::Auth::Github(#scheme))
            }
            Auth::Hmac(scheme) => {
                let scheme = scheme.emit();
                quote!(::fanout::__private::Auth::Hmac(#scheme))
            }
        }
    }
}
