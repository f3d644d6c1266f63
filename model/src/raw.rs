//! The routes.yaml schema exactly as users write it: every field optional where it has a
//! default, unknown fields refused. `resolve` turns it into the [`crate::spec`] types.
//!
//! Routes and targets stay `serde_yaml::Value`s at first, so that each is deserialised on its own
//! and one mistake does not hide the next. Each struct's `expecting` says, in the words of
//! routes.yaml, what a node of the wrong shape should have been.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::time::Duration;

use crate::spec::{Encoding, Fsync, Mode, NatsAck, Overflow, Spelled, Storage, Strategy};
use crate::units;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `routes:` (and optionally `server:` and `defaults:`)"
)]
pub struct File {
    pub server: Option<serde_yaml::Value>,
    pub defaults: Option<serde_yaml::Value>,
    pub routes: Vec<serde_yaml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { listen: 127.0.0.1:8000 }"
)]
pub struct Server {
    pub listen: Option<String>,
    pub max_body: Option<Size>,
    pub drain_timeout: Option<Dur>,
    pub metrics_log_interval: Option<Dur>,
    pub first_byte_timeout: Option<Dur>,
    pub header_read_timeout: Option<Dur>,
    pub body_read_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub max_connections: Option<u64>,
    pub tcp_keepalive: Option<Dur>,
    pub http2_max_streams: Option<u64>,
    pub max_header_bytes: Option<Size>,
    pub memory_budget: Option<Size>,
    pub data_dir: Option<String>,
    pub tls: Option<Tls>,
    pub admin_listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { cert: /etc/fanout/cert.pem, key: /etc/fanout/key.pem }"
)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

/// `auth:` of a route or of `defaults:`: a mapping naming exactly one scheme, or `none` (a
/// route that opts out of the defaults' scheme).
#[derive(Clone)]
pub enum AuthText {
    None,
    Schemes(Box<Auth>),
}

impl<'de> Deserialize<'de> for AuthText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(text) if text == "none" => Ok(AuthText::None),
            value @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value(value)
                .map(|auth| AuthText::Schemes(Box::new(auth)))
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "expected a mapping naming one scheme (bearer, standard_webhooks, github or hmac) or `none`, found {}",
                describe(&other)
            ))),
        }
    }
}

/// The schemes of `auth:`; exactly one must be set.
#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { bearer: [\"${TOKEN}\"] }"
)]
pub struct Auth {
    pub bearer: Option<Vec<String>>,
    pub standard_webhooks: Option<StandardWebhooks>,
    pub github: Option<Github>,
    pub hmac: Option<Hmac>,
}

#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { secrets: [\"${WEBHOOK_SECRET}\"], tolerance: 5m }"
)]
pub struct StandardWebhooks {
    pub secrets: Vec<String>,
    pub tolerance: Option<Dur>,
}

#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { secret: \"${GITHUB_SECRET}\" }"
)]
pub struct Github {
    pub secret: String,
}

#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { header: X-Signature, secret: \"${SECRET}\", encoding: hex }"
)]
pub struct Hmac {
    pub header: String,
    pub secret: String,
    pub encoding: Option<Named<Encoding>>,
    pub prefix: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { events: 1000, per: 1s, burst: 2000 }"
)]
pub struct RateLimit {
    pub events: u64,
    pub per: Option<Dur>,
    pub burst: Option<u64>,
}

#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { secrets: [\"${SIGNING_SECRET}\"] }"
)]
pub struct Sign {
    pub secrets: Vec<String>,
}

/// The fields of a lane and delivery policy, which `defaults:` and every target may set. The
/// list is written once: it makes [`Policy`] (what `defaults:` holds) and [`Target`] (a
/// target's own fields plus these), since serde cannot flatten with `deny_unknown_fields`.
macro_rules! with_policy_fields {
    ($(#[$meta:meta])* pub struct $name:ident { $( $(#[$field_meta:meta])* pub $field:ident : $type:ty, )* } $($view:ident)?) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $type, )*
            pub buffer: Option<u64>,
            pub buffer_bytes: Option<Size>,
            pub overflow: Option<Named<Overflow>>,
            pub timeout: Option<Dur>,
            pub concurrency: Option<u64>,
            pub retry: Option<Retry>,
            pub breaker: Option<Breaker>,
            pub http2: Option<bool>,
            pub batch: Option<Batch>,
            pub max_age: Option<Dur>,
        }

        $(impl $name {
            /// The policy fields alone, as a layer over the defaults.
            pub fn $view(&self) -> Policy {
                Policy {
                    mode: None,
                    storage: None,
                    disk_buffer: None,
                    fsync: None,
                    idempotency_window: None,
                    auth: None,
                    rate_limit: None,
                    buffer: self.buffer,
                    buffer_bytes: self.buffer_bytes,
                    overflow: self.overflow,
                    timeout: self.timeout,
                    concurrency: self.concurrency,
                    retry: self.retry.clone(),
                    breaker: self.breaker.clone(),
                    http2: self.http2,
                    batch: self.batch.clone(),
                    max_age: self.max_age,
                }
            }
        })?
    };
}

with_policy_fields! {
    /// Settings every target inherits from `defaults:` unless it sets them itself, and the
    /// route settings every route inherits unless it sets them itself.
    #[derive(Deserialize, Default)]
    #[serde(
        deny_unknown_fields,
        expecting = "a mapping such as { buffer: 10000, timeout: 5s }"
    )]
    pub struct Policy {
        pub mode: Option<Named<Mode>>,
        pub storage: Option<Named<Storage>>,
        pub disk_buffer: Option<Size>,
        pub fsync: Option<FsyncText>,
        pub idempotency_window: Option<Dur>,
        pub auth: Option<AuthText>,
        pub rate_limit: Option<RateLimit>,
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { max_events: 100, max_wait: 5ms }"
)]
pub struct Batch {
    pub max_events: Option<u64>,
    pub max_bytes: Option<Size>,
    pub max_wait: Option<Dur>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { attempts: 5, backoff: 100ms }"
)]
pub struct Retry {
    pub attempts: Option<u64>,
    pub backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    pub on: Option<Vec<u64>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { failures: 5, cooldown: 1s }"
)]
pub struct Breaker {
    pub failures: Option<u64>,
    pub cooldown: Option<Dur>,
    pub max_cooldown: Option<Dur>,
}

/// A route; `methods`, `strategy`, `health`, `retry`, `retry_non_idempotent` and a target's
/// `weight` are a balance route's (`mode: balance`).
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route: a mapping with `name:`, `path:` and `targets:`"
)]
pub struct Route {
    pub name: String,
    pub path: String,
    pub max_body: Option<Size>,
    pub mode: Option<Named<Mode>>,
    pub storage: Option<Named<Storage>>,
    pub disk_buffer: Option<Size>,
    pub fsync: Option<FsyncText>,
    pub idempotency_window: Option<Dur>,
    pub auth: Option<AuthText>,
    pub rate_limit: Option<RateLimit>,
    #[serde(rename = "match")]
    pub r#match: Option<Match>,
    pub methods: Option<Vec<String>>,
    pub strategy: Option<Named<Strategy>>,
    pub health: Option<Health>,
    /// Only `attempts` and `on` apply to a route's tries.
    pub retry: Option<Retry>,
    pub retry_non_idempotent: Option<bool>,
    pub targets: Vec<serde_yaml::Value>,
}

/// `match:` of a route: what a request must carry besides the path.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { headers: { x-action: echo } }"
)]
pub struct Match {
    pub headers: serde_yaml::Mapping,
}

/// `health:` of a balance route.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { path: /healthz, interval: 5s }"
)]
pub struct Health {
    pub path: String,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub unhealthy_after: Option<u64>,
    pub healthy_after: Option<u64>,
}

with_policy_fields! {
    /// A target: where to send, plus any policy field overriding the defaults.
    #[derive(Deserialize)]
    #[serde(
        deny_unknown_fields,
        expecting = "a target: a mapping with `name:` and `url:`"
    )]
    pub struct Target {
        pub name: String,
        pub url: String,
        #[serde(default)]
        pub headers: serde_yaml::Mapping,
        pub ca_file: Option<String>,
        pub sign: Option<Sign>,
        pub weight: Option<u64>,
        /// A NATS target's subject, `ack`, and credentials (one of `token`, `user` with
        /// `password`, or `creds`).
        pub subject: Option<String>,
        pub ack: Option<Named<NatsAck>>,
        pub token: Option<String>,
        pub user: Option<String>,
        pub password: Option<String>,
        pub creds: Option<String>,
    }
    policy
}

/// A routes.yaml word for one of the spec's enums (`drop_oldest`, `fanout`, `memory`).
#[derive(Clone, Copy)]
pub struct Named<T>(pub T);

impl<'de, T: Spelled> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        T::ALL
            .iter()
            .find(|value| value.as_str() == text)
            .map(|&value| Named(value))
            .ok_or_else(|| de::Error::unknown_variant(&text, T::NAMES))
    }
}

/// A duration written as `250ms`, `5s`, `2m` or `1h`.
#[derive(Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = scalar_text(deserializer, "a duration such as 250ms, 5s or 2m")?;
        units::parse_duration(&text)
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

/// `fsync:` written as `always`, `never` or a duration such as `10ms`.
#[derive(Clone, Copy)]
pub struct FsyncText(pub Fsync);

impl<'de> Deserialize<'de> for FsyncText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expected = "always, never, or a duration such as 10ms";
        let text = scalar_text(deserializer, expected)?;
        match text.as_str() {
            "always" => Ok(FsyncText(Fsync::Always)),
            "never" => Ok(FsyncText(Fsync::Never)),
            _ => match units::parse_duration(&text) {
                Ok(period) if !period.is_zero() => Ok(FsyncText(Fsync::Every(period))),
                Ok(_) => Err(de::Error::custom(
                    "0s is not a period: write `always` to sync before every 202",
                )),
                Err(_) => Err(de::Error::custom(format!(
                    "expected {expected}, found \"{text}\""
                ))),
            },
        }
    }
}

/// A size written as a byte count or as `64KiB`, `1MiB`.
#[derive(Clone, Copy)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = scalar_text(deserializer, "a size such as 1048576, 64KiB or 1MiB")?;
        units::parse_size(&text)
            .map(Size)
            .map_err(de::Error::custom)
    }
}

/// Reads a YAML scalar (string or number) as text, so `5s` and `1024` are parsed alike.
fn scalar_text<'de, D: Deserializer<'de>>(
    deserializer: D,
    expected: &'static str,
) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        other => Err(de::Error::custom(format!(
            "expected {expected}, found {}",
            describe(&other)
        ))),
    }
}

/// Names a YAML value's kind for error messages.
pub fn describe(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}
