//! The `server:` section: start-up defaults and the limits on what clients may spend.

use std::net::SocketAddr;
use std::time::Duration;

use super::Checker;
use crate::model::leak_str;
use crate::raw;
use crate::spec::ServerSpec;

impl Checker<'_> {
    pub(super) fn server(&mut self, raw: raw::Server) -> ServerSpec {
        const CONTEXT: &str = "section \"server\"";
        let listen = raw.listen.unwrap_or_else(|| "127.0.0.1:8000".to_owned());
        if listen.parse::<SocketAddr>().is_err() {
            self.report_field(
                "server",
                CONTEXT,
                "listen",
                format!("\"{listen}\" is not an address: write IP:PORT, e.g. 127.0.0.1:8000"),
            );
        }
        let max_body = raw.max_body.map_or(1 << 20, |s| s.0);
        if let Err(message) = check_max_body(max_body) {
            self.report_field("server", CONTEXT, "max_body", message);
        }
        let secs =
            |d: Option<raw::Dur>, default: u64| d.map_or(Duration::from_secs(default), |d| d.0);
        let max_connections = raw.max_connections.unwrap_or(10_000);
        let http2_max_streams = raw.http2_max_streams.unwrap_or(32);
        let max_header_bytes = raw.max_header_bytes.map_or(16 * 1024, |s| s.0);
        let memory_budget = raw.memory_budget.map_or(1 << 30, |s| s.0);
        let server = ServerSpec {
            listen: leak_str(listen),
            max_body,
            drain_timeout: secs(raw.drain_timeout, 10),
            metrics_log_interval: secs(raw.metrics_log_interval, 5),
            first_byte_timeout: secs(raw.first_byte_timeout, 10),
            header_read_timeout: secs(raw.header_read_timeout, 10),
            body_read_timeout: secs(raw.body_read_timeout, 30),
            idle_timeout: secs(raw.idle_timeout, 60),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            tcp_keepalive: secs(raw.tcp_keepalive, 60),
            http2_max_streams: u32::try_from(http2_max_streams).unwrap_or(u32::MAX),
            max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
            memory_budget: usize::try_from(memory_budget).unwrap_or(usize::MAX),
            data_dir: raw.data_dir.map(leak_str),
            tls: raw.tls.as_ref().map(|tls| self.tls(tls, CONTEXT)),
            admin_listen: raw.admin_listen.map(leak_str),
        };
        if let Some(admin) = server.admin_listen {
            let message = match admin.parse::<SocketAddr>() {
                Err(_) => Some(format!(
                    "\"{admin}\" is not an address: write IP:PORT, e.g. 127.0.0.1:9100"
                )),
                Ok(_) if admin == server.listen => Some(
                    "must differ from listen: it moves /metrics and /healthz off the ingest port"
                        .into(),
                ),
                Ok(_) => None,
            };
            if let Some(message) = message {
                self.report_field("server", CONTEXT, "admin_listen", message);
            }
        }
        if let Some(dir) = server.data_dir {
            let problem = if dir.is_empty() {
                Some("must name a directory".to_owned())
            } else {
                super::targets::check_placeholders(dir).err()
            };
            if let Some(message) = problem {
                self.report_field("server", CONTEXT, "data_dir", message);
            }
        }
        for (field, zero) in [
            ("first_byte_timeout", server.first_byte_timeout.is_zero()),
            ("header_read_timeout", server.header_read_timeout.is_zero()),
            ("body_read_timeout", server.body_read_timeout.is_zero()),
            ("idle_timeout", server.idle_timeout.is_zero()),
        ] {
            if zero {
                self.report_field("server", CONTEXT, field, "must be longer than 0s".into());
            }
        }
        if !(1..=1_000_000).contains(&max_connections) {
            let message = "must be from 1 to 1000000".into();
            self.report_field("server", CONTEXT, "max_connections", message);
        }
        if !(1..=1000).contains(&http2_max_streams) {
            let message = "must be from 1 to 1000".into();
            self.report_field("server", CONTEXT, "http2_max_streams", message);
        }
        if !(8 * 1024..=1 << 20).contains(&max_header_bytes) {
            let message = "must be from 8KiB to 1MiB".into();
            self.report_field("server", CONTEXT, "max_header_bytes", message);
        }
        if memory_budget < max_body {
            let message = format!(
                "must be at least max_body ({max_body} bytes), or no event that large could be held"
            );
            self.report_field("server", CONTEXT, "memory_budget", message);
        }
        server
    }
}

pub(super) fn check_max_body(max_body: u64) -> Result<(), String> {
    match max_body {
        0 => Err("must be at least 1 byte".into()),
        n if n > crate::contract::MAX_BODY_LIMIT => {
            Err("must be less than 1GiB (an event's length has 30 bits)".into())
        }
        _ => Ok(()),
    }
}
