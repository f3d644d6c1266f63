//! Active health checks: every `interval`, a GET of the route's `health.path` on each backend
//! (the path as written, on the backend's host; the target's headers sent), which passes
//! with a 2xx or 3xx answer within `timeout`. `unhealthy_after` failed checks in a row mark a
//! backend unhealthy, `healthy_after` passed ones healthy again; backends start healthy.

use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::header::HOST;
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Version};
use std::sync::Arc;

use super::backend::Backend;
use super::connections::Sender;
use super::health::Checks;
use crate::spec::HealthCheck;

/// The most of a check's answer body that is read (to reuse its connection); more closes it.
const CHECK_BODY_LIMIT: usize = 64 * 1024;

pub async fn run(backend: Arc<Backend>, check: HealthCheck) {
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let passed = tokio::time::timeout(check.timeout, probe(&backend, check.path))
            .await
            .unwrap_or(false);
        let thresholds = (check.unhealthy_after, check.healthy_after);
        let healthy = backend.health.checked_healthy();
        if let Some(healthy) = checks.record(passed, healthy, thresholds) {
            backend.health.set_checked(healthy);
            let (route, target) = (backend.spec.route, backend.spec.name);
            if healthy {
                tracing::info!(route, target, "backend healthy again: its checks pass");
            } else {
                tracing::warn!(
                    route,
                    target,
                    failed = checks.failed,
                    "backend unhealthy: its checks fail"
                );
            }
        }
    }
}

/// One check: whether the backend answered `path` with a 2xx or 3xx.
async fn probe(backend: &Backend, path: &'static str) -> bool {
    let Ok(mut sender) = backend.connections.take().await else {
        return false;
    };
    let mut request = Request::new(Either::Left(Full::default()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = backend.uri_for(PathAndQuery::from_static(path));
    *request.headers_mut() = backend.endpoint.headers.clone();
    if backend.endpoint.http.http2 {
        *request.version_mut() = Version::HTTP_2;
    } else {
        request
            .headers_mut()
            .insert(HOST, backend.endpoint.host.clone());
    }
    let Ok(answer) = sender.send(&backend.connections, request).await else {
        return false;
    };
    let passed = answer.status().is_success() || answer.status().is_redirection();
    let read = Limited::new(answer.into_body(), CHECK_BODY_LIMIT)
        .collect()
        .await;
    if let (Ok(_), Sender::Http1(connection)) = (read, sender) {
        backend.connections.give_back(connection);
    }
    passed
}
