//! NATS targets (`url: nats://...` or `tls://...`): the server list, the subject with its
//! `{route}` and `{target}` filled in, `ack`, the credentials, a balance route's backends all
//! of one kind, and the fields only one kind of target has (an HTTP target's `headers`, `sign`, `http2` and `batch`; a NATS target's
//! `subject`, `ack`, `token`, `user`, `password` and `creds`), reported where they are written.

use super::targets::{check_host_port, check_placeholders};
use super::Checker;
use crate::model::leak_str;
use crate::raw;
use crate::spec::{Mode, NatsAck, NatsAuth, NatsEndpoint};

const NATS_ONLY: &str = "applies to nats targets only (url: nats://...)";
const HTTP_ONLY: &str = "applies to http targets only: a nats target publishes to its subject";

impl Checker<'_> {
    /// A balance route's backends are all HTTP or all NATS, and NATS ones take no health
    /// checks (NATS sends a request only to a worker that listens).
    pub(super) fn check_backend_kinds(
        &mut self,
        targets: &[crate::model::Target],
        health: bool,
        base: &str,
        context: &str,
    ) {
        let nats = targets
            .iter()
            .filter(|t| matches!(t.spec.endpoint, crate::spec::Endpoint::Nats(_)))
            .count();
        if nats > 0 && nats < targets.len() {
            let message = "a balance route's backends are all http(s) or all nats".into();
            self.report_field(base, context, "targets", message);
        }
        if nats > 0 && health {
            let message = "applies to http backends only: NATS sends each request to a worker \
                           that listens"
                .into();
            self.report_field(base, context, "health", message);
        }
    }
}

/// Whether `url` names NATS servers rather than an HTTP endpoint.
pub(super) fn is_nats(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

impl Checker<'_> {
    /// Reports the NATS fields set on an HTTP target.
    pub(super) fn check_http_target_fields(
        &mut self,
        raw: &raw::Target,
        base: &str,
        context: &str,
    ) {
        for (field, set) in [
            ("subject", raw.subject.is_some()),
            ("ack", raw.ack.is_some()),
            ("token", raw.token.is_some()),
            ("user", raw.user.is_some()),
            ("password", raw.password.is_some()),
            ("creds", raw.creds.is_some()),
        ] {
            if set {
                self.report_field(base, context, field, NATS_ONLY.into());
            }
        }
    }

    /// The endpoint of a NATS target, checked; every problem is reported.
    pub(super) fn nats_endpoint(
        &mut self,
        raw: &raw::Target,
        route: (&'static str, Mode),
        base: &str,
        context: &str,
    ) -> NatsEndpoint {
        let (route_name, mode) = route;
        if let Err(message) = check_servers(&raw.url) {
            self.report_field(base, context, "url", message);
        }
        if mode == Mode::Balance && raw.ack.is_some() {
            let message = "applies to fanout routes only: a balance route's request is \
                           answered by its reply";
            self.report_field(base, context, "ack", message.into());
        }
        let own = raw.policy();
        for (field, set) in [
            ("headers", !raw.headers.is_empty()),
            ("sign", raw.sign.is_some()),
            ("http2", own.http2.is_some()),
            ("batch", own.batch.is_some()),
        ] {
            if set {
                self.report_field(base, context, field, HTTP_ONLY.into());
            }
        }
        if raw.ca_file.is_some() && !raw.url.split(',').any(|u| u.trim().starts_with("tls://")) {
            let message = "only tls:// servers use a CA file".into();
            self.report_field(base, context, "ca_file", message);
        }
        let subject = match &raw.subject {
            None => {
                let message = "required for nats targets: the subject events are published to, \
                               such as events.{route}"
                    .into();
                self.report_field(base, context, "subject", message);
                String::new()
            }
            Some(written) => match subject(written, route_name, &raw.name) {
                Ok(subject) => subject,
                Err(message) => {
                    self.report_field(base, context, "subject", message);
                    String::new()
                }
            },
        };
        NatsEndpoint {
            url: leak_str(raw.url.clone()),
            subject: leak_str(subject),
            ack: raw.ack.map_or(NatsAck::Stream, |ack| ack.0),
            auth: self.nats_auth(raw, base, context),
            ca_file: raw.ca_file.clone().map(leak_str),
        }
    }

    /// The credentials of a NATS target: at most one way, each text's placeholders checked.
    fn nats_auth(&mut self, raw: &raw::Target, base: &str, context: &str) -> NatsAuth {
        for (field, value) in [
            ("token", &raw.token),
            ("user", &raw.user),
            ("password", &raw.password),
            ("creds", &raw.creds),
        ] {
            match value.as_deref() {
                Some("") => self.report_field(base, context, field, "must not be empty".into()),
                Some(text) => {
                    if let Err(message) = check_placeholders(text) {
                        self.report_field(base, context, field, message);
                    }
                }
                None => {}
            }
        }
        let user = raw.user.is_some() || raw.password.is_some();
        let ways = [raw.token.is_some(), user, raw.creds.is_some()];
        if ways.iter().filter(|&&way| way).count() > 1 {
            let field = if raw.creds.is_some() {
                "creds"
            } else {
                "token"
            };
            let message = "choose one way to authenticate: token, user and password, or creds";
            self.report_field(base, context, field, message.into());
        }
        match (&raw.user, &raw.password) {
            (Some(_), None) => {
                let message = "a user needs its password".into();
                self.report_field(base, context, "user", message);
            }
            (None, Some(_)) => {
                let message = "a password needs its user".into();
                self.report_field(base, context, "password", message);
            }
            _ => {}
        }
        let text = |value: &Option<String>| leak_str(value.clone().unwrap_or_default());
        if let Some(token) = &raw.token {
            NatsAuth::Token(leak_str(token.clone()))
        } else if let Some(creds) = &raw.creds {
            NatsAuth::Creds(leak_str(creds.clone()))
        } else if user {
            NatsAuth::UserPassword {
                user: text(&raw.user),
                password: text(&raw.password),
            }
        } else {
            NatsAuth::None
        }
    }
}

/// A list of NATS servers separated by commas, each `nats://` or `tls://` with a host and an
/// optional port (and optional `user:password@`), nothing after; `${NAME}` placeholders are
/// allowed after the scheme.
fn check_servers(url: &str) -> Result<(), String> {
    check_placeholders(url)?;
    for server in url.split(',') {
        let server = server.trim();
        let rest = server
            .strip_prefix("nats://")
            .or_else(|| server.strip_prefix("tls://"))
            .ok_or_else(|| {
                format!(
                    "\"{server}\" must start with nats:// or tls:// (servers separated by commas)"
                )
            })?;
        let host_port = rest.rsplit('@').next().unwrap_or_default();
        if host_port.is_empty() || host_port.starts_with(':') {
            return Err(format!("\"{server}\" has no host"));
        }
        if host_port.contains(['/', '?', '#']) {
            return Err(format!(
                "\"{server}\" must be a server address, with no path"
            ));
        }
        if !server.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "\"{server}\" must be printable ASCII without spaces"
            ));
        }
        if host_port.contains("${") {
            continue;
        }
        check_host_port(host_port).map_err(|why| format!("\"{server}\" {why}"))?;
    }
    Ok(())
}

/// The subject as written with `{route}` and `{target}` filled in, checked: tokens of
/// printable characters separated by dots, none empty, no wildcard (`*`, `>`): a publish
/// goes to one subject.
fn subject(written: &str, route: &str, target: &str) -> Result<String, String> {
    let mut subject = String::with_capacity(written.len());
    let mut rest = written;
    while let Some(open) = rest.find('{') {
        subject.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            format!("unclosed \"{{\" in \"{written}\": write {{route}} or {{target}}")
        })?;
        match &after[..close] {
            "route" => subject.push_str(route),
            "target" => subject.push_str(target),
            other => {
                return Err(format!(
                    "\"{{{other}}}\" in \"{written}\" is not a placeholder of a subject: use \
                     {{route}} or {{target}}"
                ))
            }
        }
        rest = &after[close + 1..];
    }
    subject.push_str(rest);
    if subject.contains("${") {
        return Err(format!(
            "\"{written}\": a subject is compiled in and takes no ${{NAME}}: use {{route}} or \
             {{target}}"
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!(
                "\"{subject}\" has an empty token: write tokens separated by single dots"
            ));
        }
        if token == "*" || token == ">" {
            return Err(format!(
                "\"{subject}\" has a wildcard (\"{token}\"): events are published to one subject"
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "\"{subject}\" must be printable ASCII without spaces"
            ));
        }
    }
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert!(check_servers("nats://127.0.0.1:4222").is_ok());
        assert!(check_servers("nats://a:4222,nats://b:4222").is_ok());
        assert!(check_servers("tls://${NATS_HOST}:4222").is_ok());
        assert!(check_servers("nats://user:pass@host").is_ok());
        assert!(check_servers("nats://[::1]").is_ok());
        assert!(check_servers("nats://[::1]:4222").is_ok());
        assert!(check_servers("nats://[::1]:x").is_err());
        assert!(check_servers("http://a:4222").is_err());
        assert!(check_servers("nats://").is_err());
        assert!(check_servers("nats://a:4222/x").is_err());
        assert!(check_servers("nats://a:99999").is_err());
        assert!(check_servers("nats://a:4222,").is_err());
    }

    #[test]
    fn subjects() {
        assert_eq!(
            subject("events.{route}", "orders", "t").unwrap(),
            "events.orders"
        );
        assert_eq!(subject("{route}.{target}", "r", "t").unwrap(), "r.t");
        assert!(subject("events.{other}", "r", "t").is_err());
        assert!(subject("events..x", "r", "t").is_err());
        assert!(subject("events.*", "r", "t").is_err());
        assert!(subject("events.>", "r", "t").is_err());
        assert!(subject("events.{route", "r", "t").is_err());
        assert!(subject("events x", "r", "t").is_err());
        assert!(subject("events.${X}", "r", "t").is_err());
    }
}
