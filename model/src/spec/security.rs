//! The security settings of the compiled routes: how a route's clients prove they may post
//! (`auth:`), how fast they may (`rate_limit:`), how deliveries are signed (`sign:`), and the
//! TLS listener's files. Every secret stays as written (`${NAME}`), read at start-up.

use core::time::Duration;

/// How a route's clients prove they may post to it: one scheme per route. Every secret and
/// token is written as routes.yaml has it (`${NAME}` placeholders, resolved at start-up).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`, with any of these tokens (several during a rotation).
    Bearer(&'static [&'static str]),
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks(StandardWebhooksAuth),
    /// GitHub's `X-Hub-Signature-256: sha256=<hex>`.
    Github(GithubAuth),
    /// An HMAC-SHA256 of the body in a header of the route's choice.
    Hmac(HmacAuth),
}

impl Auth {
    /// The scheme's name in routes.yaml.
    pub fn scheme(&self) -> &'static str {
        match self {
            Auth::Bearer(_) => "bearer",
            Auth::StandardWebhooks(_) => "standard_webhooks",
            Auth::Github(_) => "github",
            Auth::Hmac(_) => "hmac",
        }
    }
}

spec_struct! {
    /// Standard Webhooks verification (<https://www.standardwebhooks.com>).
    pub struct StandardWebhooksAuth {
        /// `whsec_<base64>` secrets; a signature by any of them is accepted.
        pub secrets: &'static [&'static str],
        /// How far `webhook-timestamp` may be from now, either way; a `webhook-id` is
        /// remembered for twice this and a second, so a replay within it is not taken in again.
        pub tolerance: Duration,
    }
}

spec_struct! {
    /// GitHub webhooks: `X-Hub-Signature-256: sha256=<hex of HMAC-SHA256(secret, body)>`.
    pub struct GithubAuth {
        pub secret: &'static str,
    }
}

spec_struct! {
    /// A generic HMAC-SHA256 of the body: `<header>: <prefix><signature>`.
    pub struct HmacAuth {
        pub header: &'static str,
        pub secret: &'static str,
        pub encoding: Encoding,
        /// Text before the signature, such as `sha256=`; may be empty.
        pub prefix: &'static str,
    }
}

spec_struct! {
    /// A token bucket: `burst` events at once, refilled at `events` per `per`.
    pub struct RateLimit {
        pub events: u64,
        pub per: Duration,
        pub burst: u64,
    }
}

spec_struct! {
    /// Standard Webhooks signatures on every delivery to an HTTP target.
    pub struct Signing {
        /// `whsec_<base64>` secrets; each delivery is signed with every one (a rotation).
        pub secrets: &'static [&'static str],
    }
}

spec_struct! {
    /// The PEM files of a TLS listener: read at start-up and again on SIGHUP. Each may hold
    /// `${NAME}` placeholders.
    pub struct TlsFiles {
        /// The certificate chain, leaf first.
        pub cert: &'static str,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        pub key: &'static str,
    }
}

spec_enum! {
    /// How a signature is written in a header.
    pub enum Encoding {
        Hex = "hex",
        Base64 = "base64",
    }
}
