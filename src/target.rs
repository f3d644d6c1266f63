//! A target as delivery sees it: the compiled [`TargetSpec`] with `${NAME}` placeholders
//! resolved from the environment once at start-up, the request headers built once, and the
//! client that reaches it.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Uri;

use crate::client::{Clients, HttpClient};
use crate::spec::TargetSpec;
use crate::startup::StartupError;

/// Header carrying the event id to targets.
pub const EVENT_ID: HeaderName = HeaderName::from_static("fanout-event-id");
/// Header carrying the ids of a batch's events, comma-separated, in line order.
pub const EVENT_IDS: HeaderName = HeaderName::from_static("fanout-event-ids");
/// Header carrying the route name to targets.
pub const ROUTE: HeaderName = HeaderName::from_static("fanout-route");
/// Header carrying the attempt number (1 for the first) to targets.
pub const ATTEMPT: HeaderName = HeaderName::from_static("fanout-attempt");

pub struct Target {
    pub spec: &'static TargetSpec,
    pub uri: Uri,
    /// The configured headers plus `fanout-route`, copied into every request.
    pub headers: HeaderMap,
    pub client: HttpClient,
    /// Held by the one delivery worker gathering a batch (batch lanes only).
    pub gathering: tokio::sync::Mutex<()>,
}

impl Target {
    /// Resolves `spec` with `env` (the process environment, or a test's own).
    pub fn resolve(
        spec: &'static TargetSpec,
        env: &dyn Fn(&str) -> Option<String>,
        clients: &mut Clients,
    ) -> Result<Target, StartupError> {
        let place = format!("route \"{}\", target \"{}\"", spec.route, spec.name);
        let url =
            substitute(spec.url, env).map_err(|e| StartupError(format!("{place}, url: {e}")))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| StartupError(format!("{place}: url \"{url}\" is invalid: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(StartupError(format!(
                "{place}: url \"{url}\" must be http:// or https:// with a host"
            )));
        }
        let mut headers = HeaderMap::with_capacity(spec.headers.len() + 1);
        for (name, value) in spec.headers {
            let bad = |e: String| StartupError(format!("{place}, header {name}: {e}"));
            let value = substitute(value, env).map_err(bad)?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = HeaderValue::from_str(&value).map_err(|e| bad(e.to_string()))?;
            headers.append(name, value);
        }
        headers.insert(ROUTE, HeaderValue::from_static(spec.route));
        let ca_file = spec
            .ca_file
            .map(|path| substitute(path, env))
            .transpose()
            .map_err(|e| StartupError(format!("{place}, ca_file: {e}")))?;
        let client = clients
            .get(ca_file.as_deref(), spec.http2)
            .map_err(|e| StartupError(format!("{place}: {e}")))?;
        Ok(Target {
            spec,
            uri,
            headers,
            client,
            gathering: tokio::sync::Mutex::new(()),
        })
    }
}

/// Replaces each `${NAME}` in `text` with the variable's value.
fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or_else(|| format!("unclosed \"${{\" in \"{text}\""))?;
        let name = &rest[start + 2..end];
        let value = env(name).ok_or_else(|| {
            format!("environment variable {name} is not set (needed for ${{{name}}})")
        })?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::substitute;

    #[test]
    fn placeholders_are_replaced_and_missing_ones_named() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(
            substitute("Bearer ${TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(substitute("plain $5", &env).unwrap(), "plain $5");
        let error = substitute("${MISSING}/x", &env).unwrap_err();
        assert!(error.contains("MISSING is not set"), "{error}");
    }
}
