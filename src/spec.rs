//! The shapes of what the `routes!` macro compiles in, defined once in `fanout-model` (see
//! its `spec` module) and re-exported here, plus the listing `fanout --routes` prints. Nothing
//! here is parsed at run time, and nothing here depends on the rest of the server.

use std::fmt;

pub use fanout_model::spec::*;

/// The compiled routes as `fanout --routes` prints them.
pub struct Listing<'a> {
    pub server: &'a ServerSpec,
    pub routes: Vec<&'a RouteSpec>,
}

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.server;
        let d = humantime::format_duration;
        writeln!(
            f,
            "server  listen={} max_body={} drain_timeout={} metrics_log_interval={}",
            s.listen,
            s.max_body,
            d(s.drain_timeout),
            d(s.metrics_log_interval),
        )?;
        writeln!(
            f,
            "  first_byte_timeout={} header_read_timeout={} body_read_timeout={} idle_timeout={}",
            d(s.first_byte_timeout),
            d(s.header_read_timeout),
            d(s.body_read_timeout),
            d(s.idle_timeout),
        )?;
        writeln!(
            f,
            "  max_connections={} tcp_keepalive={} http2_max_streams={} max_header_bytes={} memory_budget={}",
            s.max_connections,
            d(s.tcp_keepalive),
            s.http2_max_streams,
            s.max_header_bytes,
            s.memory_budget,
        )?;
        if let Some(data_dir) = s.data_dir {
            writeln!(f, "  data_dir={data_dir}")?;
        }
        if let Some(tls) = &s.tls {
            writeln!(f, "  tls: cert={} key={}", tls.cert, tls.key)?;
        }
        if let Some(admin) = s.admin_listen {
            writeln!(f, "  admin_listen={admin}")?;
        }
        for route in &self.routes {
            if route.mode == Mode::Balance {
                balance_route(f, route)?;
                continue;
            }
            writeln!(
                f,
                "route {}  POST {}  max_body={} mode={} storage={}",
                route.name,
                route.path,
                route.max_body,
                route.mode.as_str(),
                route.storage.as_str(),
            )?;
            match_headers(f, route)?;
            if route.storage == Storage::Disk {
                writeln!(
                    f,
                    "  disk_buffer={} fsync={}",
                    route.disk.budget, route.disk.fsync
                )?;
            }
            writeln!(f, "  idempotency_window={}", d(route.idempotency_window))?;
            gate(f, route)?;
            for t in route.targets {
                writeln!(f, "  target {}  {}", t.name, t.endpoint.address())?;
                let (lane, delivery) = (&t.lane, &t.delivery);
                if route.storage == Storage::Memory {
                    write!(
                        f,
                        "    buffer={} buffer_bytes={} overflow={}",
                        lane.buffer,
                        lane.buffer_bytes,
                        lane.overflow.as_str(),
                    )?;
                } else {
                    write!(f, "   ")?;
                }
                writeln!(
                    f,
                    " timeout={} concurrency={}",
                    d(delivery.timeout),
                    delivery.concurrency,
                )?;
                let retry = &delivery.retry;
                writeln!(
                    f,
                    "    retry: attempts={} backoff={} max_backoff={} on=[{}]",
                    retry.attempts,
                    d(retry.backoff),
                    d(retry.max_backoff),
                    retry.on,
                )?;
                let breaker = &delivery.breaker;
                writeln!(
                    f,
                    "    breaker: failures={} cooldown={} max_cooldown={}",
                    breaker.failures,
                    d(breaker.cooldown),
                    d(breaker.max_cooldown),
                )?;
                if let Some(max_age) = delivery.max_age {
                    writeln!(f, "    max_age={}", d(max_age))?;
                }
                if let Some(batch) = &delivery.batch {
                    writeln!(
                        f,
                        "    batch: max_events={} max_bytes={} max_wait={}",
                        batch.max_events,
                        batch.max_bytes,
                        d(batch.max_wait),
                    )?;
                }
                match &t.endpoint {
                    Endpoint::Http(http) => {
                        if http.http2 {
                            writeln!(f, "    http2: true")?;
                        }
                        for (name, value) in http.headers {
                            writeln!(f, "    header {name}: {value}")?;
                        }
                        if let Some(ca_file) = http.ca_file {
                            writeln!(f, "    ca_file: {ca_file}")?;
                        }
                        if let Some(sign) = &http.sign {
                            writeln!(f, "    sign: secrets={}", sign.secrets.len())?;
                        }
                    }
                    Endpoint::Nats(nats) => {
                        writeln!(
                            f,
                            "    subject: {}  ack: {}",
                            nats.subject,
                            nats.ack.as_str()
                        )?;
                        if let Some(ca_file) = nats.ca_file {
                            writeln!(f, "    ca_file: {ca_file}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Who may send to `route`, and how fast, as `--routes` prints it.
fn gate(f: &mut fmt::Formatter<'_>, route: &RouteSpec) -> fmt::Result {
    let d = humantime::format_duration;
    match &route.auth {
        // Secrets are shown as written: `${NAME}`, never a value.
        Some(Auth::StandardWebhooks(scheme)) => writeln!(
            f,
            "  auth: standard_webhooks secrets={} tolerance={}",
            scheme.secrets.len(),
            d(scheme.tolerance)
        )?,
        Some(Auth::Hmac(scheme)) => writeln!(
            f,
            "  auth: hmac header={} encoding={} prefix={:?}",
            scheme.header,
            scheme.encoding.as_str(),
            scheme.prefix
        )?,
        Some(auth) => writeln!(f, "  auth: {}", auth.scheme())?,
        None => {}
    }
    if let Some(limit) = &route.rate_limit {
        writeln!(
            f,
            "  rate_limit: events={} per={} burst={}",
            limit.events,
            d(limit.per),
            limit.burst
        )?;
    }
    Ok(())
}

/// `match: { headers }` of `route`, if it has one.
fn match_headers(f: &mut fmt::Formatter<'_>, route: &RouteSpec) -> fmt::Result {
    for (name, value) in route.match_headers {
        writeln!(f, "  match header {name}: {value}")?;
    }
    Ok(())
}

/// A balance route as `--routes` prints it: its policy, then each backend.
fn balance_route(f: &mut fmt::Formatter<'_>, route: &RouteSpec) -> fmt::Result {
    let d = humantime::format_duration;
    let balance = &route.balance;
    let methods = match balance.methods {
        MethodSet::ALL => "ANY".to_owned(),
        set => set.names().collect::<Vec<_>>().join(","),
    };
    writeln!(
        f,
        "route {}  {methods} {}  mode=balance",
        route.name, route.path
    )?;
    match_headers(f, route)?;
    writeln!(
        f,
        "  strategy={} attempts={} retry_on=[{}] retry_non_idempotent={}",
        balance.strategy.as_str(),
        balance.attempts,
        balance.retry_on,
        balance.retry_non_idempotent,
    )?;
    if route.max_body != u64::MAX {
        writeln!(f, "  max_body={}", route.max_body)?;
    }
    if let Some(check) = &balance.health {
        writeln!(
            f,
            "  health: path={} interval={} timeout={} unhealthy_after={} healthy_after={}",
            check.path,
            d(check.interval),
            d(check.timeout),
            check.unhealthy_after,
            check.healthy_after,
        )?;
    }
    gate(f, route)?;
    for t in route.targets {
        let breaker = &t.delivery.breaker;
        writeln!(
            f,
            "  backend {}  {}  weight={}",
            t.name,
            t.endpoint.address(),
            t.weight
        )?;
        writeln!(
            f,
            "    timeout={} ejection: failures={} cooldown={} max_cooldown={}",
            d(t.delivery.timeout),
            breaker.failures,
            d(breaker.cooldown),
            d(breaker.max_cooldown),
        )?;
        if let Endpoint::Http(http) = &t.endpoint {
            if http.http2 {
                writeln!(f, "    http2: true")?;
            }
            for (name, value) in http.headers {
                writeln!(f, "    header {name}: {value}")?;
            }
        }
    }
    Ok(())
}
