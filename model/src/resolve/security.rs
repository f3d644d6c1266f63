//! Who may post to a route and how its deliveries prove where they come from: `auth:` and
//! `rate_limit:` of a route (or of `defaults:`), `sign:` of a target, `tls:` and
//! `admin_listen:` of the server. Secrets stay as written (`${NAME}` placeholders): they are
//! read from the environment at start-up, never compiled in as values.

use std::time::Duration;

use super::targets::check_placeholders;
use super::Checker;
use crate::contract::SIGNATURE_HEADERS;
use crate::model::{leak_slice, leak_str};
use crate::raw;
use crate::spec::{
    Auth, Encoding, GithubAuth, HmacAuth, RateLimit, Signing, StandardWebhooksAuth, TlsFiles,
};

/// Beyond this a token bucket's arithmetic (nanoseconds in 64 bits) would overflow.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Standard Webhooks' default timestamp tolerance, as its libraries have it.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

impl Checker<'_> {
    /// Checks an `auth:` set at `base` (a route's or `defaults`), reporting its problems
    /// there. `None` for `auth: none`, or when it cannot be used.
    pub(super) fn auth(&mut self, raw: &raw::AuthText, base: &str, context: &str) -> Option<Auth> {
        let raw::AuthText::Schemes(schemes) = raw else {
            return None;
        };
        let set = [
            schemes.bearer.is_some(),
            schemes.standard_webhooks.is_some(),
            schemes.github.is_some(),
            schemes.hmac.is_some(),
        ];
        if set.iter().filter(|&&s| s).count() != 1 {
            let message = "name exactly one scheme: bearer, standard_webhooks, github or hmac";
            self.report_field(base, context, "auth", message.into());
            return None;
        }
        let before = self.errors.len();
        let auth = if let Some(tokens) = &schemes.bearer {
            self.secrets(base, context, "auth.bearer", tokens, "token");
            for token in tokens {
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    let message = "a bearer token is visible ASCII without spaces".into();
                    self.report_field(base, context, "auth.bearer", message);
                }
            }
            Auth::Bearer(strings(tokens))
        } else if let Some(scheme) = &schemes.standard_webhooks {
            let field = "auth.standard_webhooks.secrets";
            self.secrets(base, context, field, &scheme.secrets, "secret");
            for secret in &scheme.secrets {
                self.check_whsec(base, context, field, secret);
            }
            let tolerance = scheme.tolerance.map_or(DEFAULT_TOLERANCE, |d| d.0);
            if tolerance < Duration::from_secs(1) {
                let field = "auth.standard_webhooks.tolerance";
                let message = "must be at least 1s (timestamps are whole seconds)".into();
                self.report_field(base, context, field, message);
            }
            Auth::StandardWebhooks(StandardWebhooksAuth {
                secrets: strings(&scheme.secrets),
                tolerance,
            })
        } else if let Some(scheme) = &schemes.github {
            Auth::Github(GithubAuth {
                secret: self.secret(base, context, "auth.github.secret", &scheme.secret),
            })
        } else {
            let scheme = schemes.hmac.as_ref()?;
            let secret = self.secret(base, context, "auth.hmac.secret", &scheme.secret);
            if !super::targets::is_header_name(&scheme.header) {
                let message = format!("\"{}\" is not a valid header name", scheme.header);
                self.report_field(base, context, "auth.hmac.header", message);
            }
            let prefix = scheme.prefix.clone().unwrap_or_default();
            if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
                let message = "must be visible ASCII without spaces".into();
                self.report_field(base, context, "auth.hmac.prefix", message);
            }
            Auth::Hmac(HmacAuth {
                header: leak_str(scheme.header.to_ascii_lowercase()),
                secret,
                encoding: scheme.encoding.map_or(Encoding::Hex, |e| e.0),
                prefix: leak_str(prefix),
            })
        };
        (self.errors.len() == before).then_some(auth)
    }

    /// Checks a `rate_limit:` set at `base`.
    pub(super) fn rate_limit(
        &mut self,
        raw: &raw::RateLimit,
        base: &str,
        context: &str,
    ) -> Option<RateLimit> {
        let limit = RateLimit {
            events: raw.events,
            per: raw.per.map_or(Duration::from_secs(1), |d| d.0),
            burst: raw.burst.unwrap_or(raw.events),
        };
        let before = self.errors.len();
        if limit.events == 0 {
            let message = "must be at least 1 (a route nobody may post to needs no route)";
            self.report_field(base, context, "rate_limit.events", message.into());
        }
        if limit.per.is_zero() {
            let message = "must be longer than 0s".into();
            self.report_field(base, context, "rate_limit.per", message);
        }
        if raw.burst == Some(0) {
            let message = "must be at least 1".into();
            self.report_field(base, context, "rate_limit.burst", message);
        }
        let refill = limit.per.as_secs_f64() / limit.events.max(1) as f64;
        if refill * limit.burst.saturating_sub(1) as f64 > CENTURY.as_secs_f64() {
            let message = "a full bucket takes over 100 years to refill at this rate: lower burst";
            self.report_field(base, context, "rate_limit.burst", message.into());
        }
        (self.errors.len() == before).then_some(limit)
    }

    /// Checks a target's `sign:`, and that `headers:` leaves the signature headers to it.
    pub(super) fn sign(
        &mut self,
        raw: &raw::Sign,
        headers: &[(String, String)],
        base: &str,
        context: &str,
    ) -> Signing {
        let field = "sign.secrets";
        self.secrets(base, context, field, &raw.secrets, "secret");
        for secret in &raw.secrets {
            self.check_whsec(base, context, field, secret);
        }
        for (name, _) in headers {
            if SIGNATURE_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
            {
                let message = format!("\"{name}\" is set by `sign:` on every delivery");
                self.report_field(base, context, &format!("headers.{name}"), message);
            }
        }
        Signing {
            secrets: strings(&raw.secrets),
        }
    }

    /// Checks `server.tls`.
    pub(super) fn tls(&mut self, raw: &raw::Tls, context: &str) -> TlsFiles {
        for (field, path) in [("tls.cert", &raw.cert), ("tls.key", &raw.key)] {
            let problem = if path.is_empty() {
                Some("must name a PEM file".to_owned())
            } else {
                check_placeholders(path).err()
            };
            if let Some(message) = problem {
                self.report_field("server", context, field, message);
            }
        }
        TlsFiles {
            cert: leak_str(raw.cert.clone()),
            key: leak_str(raw.key.clone()),
        }
    }

    /// One secret, checked as [`Checker::secrets`] does, as the spec keeps it.
    fn secret(&mut self, base: &str, context: &str, field: &str, secret: &str) -> &'static str {
        let one = [secret.to_owned()];
        self.secrets(base, context, field, &one, "secret");
        leak_str(secret.to_owned())
    }

    /// A list of secrets (or tokens): at least one, none empty, placeholders well formed.
    fn secrets(&mut self, base: &str, context: &str, field: &str, list: &[String], what: &str) {
        if list.is_empty() {
            let message = format!("list at least one {what} (two during a rotation)");
            self.report_field(base, context, field, message);
        }
        for secret in list {
            // The message never shows the value: it may be a secret written in by mistake.
            let problem = if secret.is_empty() {
                Some(format!("a {what} must not be empty"))
            } else {
                check_placeholders(secret)
                    .err()
                    .map(|_| format!("a {what} holds a malformed ${{NAME}}: write ${{NAME}} or ${{NAME:-default}}"))
            };
            if let Some(message) = problem {
                self.report_field(base, context, field, message);
            }
        }
    }

    /// A Standard Webhooks secret written as a value (no placeholder) must be `whsec_` and
    /// base64; one from the environment is checked at start-up.
    fn check_whsec(&mut self, base: &str, context: &str, field: &str, secret: &str) {
        if secret.contains("${") || secret.is_empty() {
            return;
        }
        if crate::contract::whsec_key(secret).is_none() {
            let message =
                "a Standard Webhooks secret is base64, after `whsec_` as its senders write it"
                    .into();
            self.report_field(base, context, field, message);
        }
    }
}

fn strings(list: &[String]) -> &'static [&'static str] {
    leak_slice(list.iter().cloned().map(leak_str).collect())
}
