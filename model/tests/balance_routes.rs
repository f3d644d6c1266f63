//! What routes.yaml makes of balance routes (`mode: balance`), prefix paths and `match:`: the
//! spec values the run time reads, and which routes may share a path.

use std::time::Duration;

use fanout_model::spec::{
    BalancePolicy, Endpoint, HealthCheck, MethodSet, Mode, RouteSpec, Storage, Strategy,
};

fn routes(yaml: &str) -> Vec<&'static RouteSpec> {
    match fanout_model::parse("routes.yaml", yaml) {
        Ok(routes) => routes.routes.iter().map(|route| route.spec).collect(),
        Err(errors) => panic!("the routes do not load:\n{errors}"),
    }
}

fn errors(yaml: &str) -> String {
    match fanout_model::parse("routes.yaml", yaml) {
        Ok(_) => panic!("the routes load, but should not:\n{yaml}"),
        Err(errors) => errors.to_string(),
    }
}

fn bits(methods: &[&str]) -> MethodSet {
    MethodSet(
        methods
            .iter()
            .map(|name| MethodSet::bit(name).expect("a standard method"))
            .fold(0, |set, bit| set | bit),
    )
}

#[test]
fn a_full_balance_route_resolves_to_its_spec() {
    let [items, echo] = routes(
        r#"
routes:
  - name: items
    path: /items/*
    mode: balance
    methods: [GET, POST]
    strategy: round_robin
    health: { path: /healthz, interval: 2s, timeout: 1s, unhealthy_after: 4, healthy_after: 2 }
    retry: { attempts: 2, on: [503] }
    retry_non_idempotent: true
    targets:
      - { name: w1, url: "http://${W1:-127.0.0.1:5001}", weight: 2 }
      - { name: w2, url: "http://${W2:-127.0.0.1:5002}/base", timeout: 3s }
  - name: echo
    path: /action.Processor/*
    mode: balance
    match: { headers: { x-tenant: a, X-Action: echo } }
    targets:
      - { name: p1, url: "http://127.0.0.1:6001", http2: true }
"#,
    )[..] else {
        panic!("two routes")
    };
    assert_eq!(items.mode, Mode::Balance);
    assert_eq!(items.path_pattern(), ("/items", true));
    assert_eq!(items.match_headers, &[]);
    let policy = items.balance;
    assert_eq!(policy.strategy, Strategy::RoundRobin);
    assert_eq!(policy.methods, bits(&["GET", "POST"]));
    assert_eq!(
        policy.health,
        Some(HealthCheck {
            path: "/healthz",
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 4,
            healthy_after: 2,
        })
    );
    assert_eq!(policy.attempts, 2);
    assert_eq!(policy.retry_on.0, &[(503, 503)]);
    assert!(policy.retry_non_idempotent);
    let weights: Vec<u32> = items.targets.iter().map(|t| t.weight).collect();
    assert_eq!(weights, [2, 1]);
    assert_eq!(items.targets[1].delivery.timeout, Duration::from_secs(3));

    assert_eq!(echo.path_pattern(), ("/action.Processor", true));
    assert_eq!(
        echo.match_headers,
        &[("x-action", "echo"), ("x-tenant", "a")],
        "names lowercase, sorted by name"
    );
    assert!(matches!(echo.targets[0].endpoint, Endpoint::Http(http) if http.http2));
}

#[test]
fn a_minimal_balance_route_takes_the_defaults() {
    let [route] = routes(
        r#"
routes:
  - name: api
    path: /api
    mode: balance
    targets:
      - { name: a, url: "http://127.0.0.1:5001" }
"#,
    )[..] else {
        panic!("one route")
    };
    assert_eq!(route.balance, BalancePolicy::DEFAULT);
    assert_eq!(route.balance.methods, MethodSet::ALL);
    assert_eq!(route.balance.strategy, Strategy::LeastInflight);
    assert_eq!(route.balance.attempts, 3);
    assert_eq!(route.targets[0].weight, 1);
    assert_eq!(
        route.max_body,
        u64::MAX,
        "a relayed body is not held: no limit"
    );
    assert_eq!(route.storage, Storage::Memory);
    assert_eq!(route.idempotency_window, Duration::ZERO);
}

#[test]
fn a_default_health_check_and_a_body_limit_for_signatures() {
    let [route] = routes(
        r#"
server: { max_body: 64KiB }
routes:
  - name: hooks
    path: /hooks
    mode: balance
    auth: { hmac: { header: X-Signature, secret: "${SECRET}" } }
    health: { path: /up }
    targets:
      - { name: a, url: "http://127.0.0.1:5001" }
"#,
    )[..] else {
        panic!("one route")
    };
    assert_eq!(
        route.max_body,
        64 * 1024,
        "a signature is verified over the whole body"
    );
    assert_eq!(
        route.balance.health,
        Some(HealthCheck {
            path: "/up",
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
        })
    );
}

#[test]
fn an_unset_health_timeout_fits_a_short_interval() {
    let [route] = routes(
        r#"
routes:
  - name: api
    path: /api
    mode: balance
    health: { path: /up, interval: 500ms }
    targets:
      - { name: a, url: "http://127.0.0.1:5001" }
"#,
    )[..] else {
        panic!("one route")
    };
    let health = route.balance.health.expect("health is set");
    assert_eq!(health.timeout, Duration::from_millis(500));
}

#[test]
fn fanout_settings_in_defaults_do_not_reach_balance_routes() {
    let [fanout, balance] = routes(
        r#"
defaults: { storage: disk, buffer: 5, idempotency_window: 1h, retry: { attempts: 9 } }
routes:
  - name: events
    path: /events
    targets:
      - { name: a, url: "http://127.0.0.1:5001" }
  - name: api
    path: /api/*
    mode: balance
    targets:
      - { name: a, url: "http://127.0.0.1:5001" }
"#,
    )[..] else {
        panic!("two routes")
    };
    assert_eq!(fanout.storage, Storage::Disk);
    assert_eq!(balance.storage, Storage::Memory);
    assert_eq!(balance.idempotency_window, Duration::ZERO);
    assert_eq!(balance.balance.attempts, 3);
}

/// Two routes on `paths`, each with the `match:` given (or none).
fn two_routes(paths: [&str; 2], matches: [&str; 2]) -> String {
    let mut yaml = String::from("routes:\n");
    for (i, (path, matched)) in paths.iter().zip(matches).enumerate() {
        yaml.push_str(&format!("  - name: r{i}\n    path: {path}\n"));
        if !matched.is_empty() {
            yaml.push_str(&format!("    match: {{ headers: {matched} }}\n"));
        }
        yaml.push_str("    targets: [{ name: a, url: \"http://127.0.0.1:5001\" }]\n");
    }
    yaml
}

#[test]
fn an_exact_path_shadows_a_prefix_route() {
    routes(&two_routes(["/a/*", "/a"], ["", ""]));
    routes(&two_routes(["/a/b", "/a/*"], ["", ""]));
}

#[test]
fn routes_on_one_path_told_apart_by_their_matches() {
    routes(&two_routes(
        ["/svc/*", "/svc/*"],
        ["{ x-action: echo }", "{ X-Action: sum }"],
    ));
    routes(&two_routes(["/svc", "/svc"], ["{ x-action: echo }", ""]));
    routes(&two_routes(
        ["/svc/*", "/svc/a/*"],
        ["", "{ x-action: echo }"],
    ));
}

#[test]
fn nested_prefixes_without_matches_are_refused() {
    let message = errors(&two_routes(["/a/*", "/a/b/*"], ["", ""]));
    assert!(
        message.contains(
            "route \"r1\", field \"path\": \"/a/b/*\" overlaps route \"r0\" (\"/a/*\"): give one of them a match"
        ),
        "{message}"
    );
    routes(&two_routes(["/a/*", "/ab/*"], ["", ""]));
}

#[test]
fn matches_that_a_request_could_satisfy_both_are_refused() {
    let message = errors(&two_routes(
        ["/svc/*", "/svc/*"],
        ["{ x-action: echo }", "{ x-tenant: a }"],
    ));
    assert!(message.contains("must name a header in both"), "{message}");
    let message = errors(&two_routes(["/svc", "/svc"], ["", ""]));
    assert!(
        message.contains("route \"r0\" has the path \"/svc\" too"),
        "{message}"
    );
}

#[test]
fn a_balance_route_has_at_most_64_backends() {
    let targets = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "      - {{ name: t{i}, url: \"http://127.0.0.1:{}\" }}\n",
                    5000 + i
                )
            })
            .collect()
    };
    let file = |n: usize| {
        format!(
            "routes:\n  - name: api\n    path: /api\n    mode: balance\n    targets:\n{}",
            targets(n)
        )
    };
    assert_eq!(routes(&file(64)).len(), 1);
    let error = errors(&file(65));
    assert!(
        error.contains(
            "route \"api\", field \"targets\": a balance route has at most 64 backends, not 65"
        ),
        "{error}"
    );
}
