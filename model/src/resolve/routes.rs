//! Each route: its name, the route-level settings it layers over the defaults, what its mode
//! makes of them, and its targets (checked in `targets`).

use serde_yaml::Value;

use super::policy::Layered;
use super::server::check_max_body;
use super::Checker;
use crate::contract::MAX_BALANCE_BACKENDS;
use crate::ident;
use crate::model::{leak, leak_slice, leak_str, Route, Target};
use crate::raw;
use crate::spec::{Auth, BalancePolicy, DiskPolicy, Mode, RouteSpec, ServerSpec, Storage};
use std::time::Duration;

/// What a log record holds besides the body (its header, the id, the content type), at most:
/// `disk_buffer` must hold one event of `max_body` and this.
const DISK_RECORD_SLACK: u64 = 64 * 1024;

/// What the checks of a target need to know of its route.
pub(super) struct RouteOfTarget<'a> {
    pub(super) base: &'a str,
    pub(super) context: &'a str,
    pub(super) name: &'static str,
    pub(super) mode: Mode,
    pub(super) max_body: u64,
    pub(super) storage: Storage,
}

impl Checker<'_> {
    /// Checks one route. Returns it whenever it could be read, problems or not, so that the
    /// checks across routes see every name and path; nothing is kept once a problem is found.
    pub(super) fn route(
        &mut self,
        index: usize,
        value: Value,
        server: &ServerSpec,
        defaults: &Layered,
    ) -> Option<Route> {
        let base = format!("routes[{index}]");
        let context = match value.get("name").and_then(Value::as_str) {
            Some(name) => format!("route \"{name}\""),
            None => format!("route #{}", index + 1),
        };
        let raw: raw::Route = self.deserialize(&base, &context, value)?;
        self.check_name(&base, &context, &raw.name);
        self.check_path(&base, &context, &raw.path);
        let match_headers = match &raw.r#match {
            Some(matches) => self.match_headers(&base, &context, matches),
            None => Vec::new(),
        };
        let mode = defaults
            .mode
            .over(raw.mode.map(|m| m.0), format!("{base}.mode"))
            .value;
        self.check_route_fields_of_mode(&raw, mode, &base, &context);
        let balance = match mode {
            Mode::Balance => self.balance_policy(&raw, &base, &context),
            Mode::Fanout => BalancePolicy::DEFAULT,
        };
        // A balance route stores nothing: what `defaults:` says of storage is not for it.
        let storage = match mode {
            Mode::Fanout => {
                defaults
                    .storage
                    .over(raw.storage.map(|s| s.0), format!("{base}.storage"))
                    .value
            }
            Mode::Balance => Storage::Memory,
        };
        let disk_buffer = defaults
            .disk_buffer
            .over(raw.disk_buffer.map(|s| s.0), format!("{base}.disk_buffer"));
        let fsync = defaults
            .fsync
            .over(raw.fsync.map(|f| f.0), format!("{base}.fsync"));
        let idempotency_window = match mode {
            Mode::Fanout => defaults
                .idempotency_window
                .over(
                    raw.idempotency_window.map(|d| Some(d.0)),
                    format!("{base}.idempotency_window"),
                )
                .value
                .unwrap_or(match storage {
                    Storage::Disk => Duration::from_secs(24 * 3600),
                    Storage::Memory => Duration::from_secs(600),
                }),
            // A relayed request is answered by its backend each time: no key is remembered.
            Mode::Balance => Duration::ZERO,
        };
        let auth = match &raw.auth {
            Some(auth) => self.auth(auth, &base, &context),
            None => defaults.auth,
        };
        let rate_limit = match &raw.rate_limit {
            Some(limit) => self.rate_limit(limit, &base, &context),
            None => defaults.rate_limit,
        };
        // A relayed body streams through and nothing holds it whole, unless the route's auth
        // verifies a signature over it first.
        let verifies_body = matches!(
            auth,
            Some(Auth::StandardWebhooks(_) | Auth::Github(_) | Auth::Hmac(_))
        );
        let max_body = match raw.max_body {
            Some(size) => size.0,
            None if mode == Mode::Balance && !verifies_body => u64::MAX,
            None => server.max_body,
        };
        if storage == Storage::Disk
            && disk_buffer.value < max_body.saturating_add(DISK_RECORD_SLACK)
        {
            let message = format!(
                "{} is less than the route's max_body ({max_body} bytes) plus {DISK_RECORD_SLACK} bytes for a record's header: an event that large could never be logged",
                disk_buffer.value
            );
            self.report_field(&base, &context, "disk_buffer", message);
        }
        if mode == Mode::Fanout || raw.max_body.is_some() {
            if let Err(message) = check_max_body(max_body) {
                self.report_field(&base, &context, "max_body", message);
            }
        }
        if mode == Mode::Balance && raw.targets.len() > MAX_BALANCE_BACKENDS {
            let message = format!(
                "a balance route has at most {MAX_BALANCE_BACKENDS} backends, not {}",
                raw.targets.len()
            );
            self.report_field(&base, &context, "targets", message);
        }
        if raw.targets.is_empty() {
            self.report_field(
                &base,
                &context,
                "targets",
                "a route needs at least one target".into(),
            );
        }
        let name = leak_str(raw.name);
        let of_targets = RouteOfTarget {
            base: &base,
            context: &context,
            name,
            mode,
            max_body,
            storage,
        };
        let mut targets = Vec::new();
        for (t, value) in raw.targets.into_iter().enumerate() {
            if let Some(target) = self.target(&of_targets, t, value, defaults) {
                targets.push((t, target));
            }
        }
        self.check_unique_targets(&base, &context, &targets);
        let targets: Vec<Target> = targets.into_iter().map(|(_, target)| target).collect();
        if mode == Mode::Balance {
            self.check_backend_kinds(&targets, balance.health.is_some(), &base, &context);
        }
        let spec = leak(RouteSpec {
            name,
            path: leak_str(raw.path),
            max_body,
            mode,
            storage,
            disk: DiskPolicy {
                budget: disk_buffer.value,
                fsync: fsync.value,
            },
            idempotency_window,
            auth,
            rate_limit,
            match_headers: leak_slice(
                match_headers
                    .into_iter()
                    .map(|(name, value)| (leak_str(name), leak_str(value)))
                    .collect(),
            ),
            balance,
            targets: leak_slice(targets.iter().map(|target| target.spec).collect()),
        });
        Some(Route {
            spec,
            ident: ident::snake(name),
            variant: ident::camel(name),
            targets,
        })
    }

    pub(super) fn check_name(&mut self, base: &str, context: &str, name: &str) {
        if !ident::is_valid_name(name) {
            self.report_field(
                base,
                context,
                "name",
                format!("\"{name}\" is not a valid name: use letters, digits, '-' and '_'"),
            );
        }
    }
}
