//! NATS targets: each event is published to the target's subject (a balance route's NATS
//! backends use the same client for requests, `crate::balance`), with its route, id, attempt
//! and content type as NATS headers (`fanout-route`, `fanout-event-id`, `fanout-attempt`,
//! `Content-Type`).
//!
//! With `ack: stream` (the default) the publish goes through JetStream: the event counts as
//! delivered once the stream on its subject acknowledged it (a PubAck), and carries its id in
//! `Nats-Msg-Id`, so a publish retried after a lost PubAck is stored once (within the
//! stream's duplicate window). With `ack: none` (core NATS) it counts as delivered once the
//! client has written it to the server: no subscriber may have seen it.
//!
//! One client per target, shared by the lane's workers: a NATS connection multiplexes, so
//! `concurrency` workers are as many publishes awaiting their PubAck at once. The client is
//! made when the lane's workers start ([`Endpoint::start`]) and connects in the background,
//! reconnecting for ever; `fanout_nats_connected{route,target}` says whether it is connected.
//! A publish while it is not waits within the target's `timeout`, then is retried with the
//! lane's backoff and counts against its breaker, like an HTTP failure.

mod publish;

pub use publish::headers_size;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, HeaderMap, ServerAddr};
use prometheus::{IntGauge, Opts, Registry};
use tokio::sync::{watch, OnceCell};

use super::substitute;
use crate::ops::startup::StartupError;
use crate::spec::{NatsAuth, NatsEndpoint, TargetSpec};

/// A NATS target resolved at start-up: its servers and credentials read, not connected yet.
pub struct Endpoint {
    spec: &'static TargetSpec,
    nats: &'static NatsEndpoint,
    servers: Vec<ServerAddr>,
    /// Credentials, as connect options are made of them.
    auth: Auth,
    /// Extra trusted roots for `tls://` servers.
    ca_file: Option<PathBuf>,
    /// Whether the client is connected, set by its events: waited on (nothing is published
    /// while the client reconnects: async-nats would queue it and send it, late, once
    /// connected again), and read into `fanout_nats_connected` at scrape time.
    online: watch::Sender<bool>,
    connected: IntGauge,
    /// The server's `max_payload` on the current connection, read from its server info once
    /// per connection (not once per event: the info is copied whole); 0 until read.
    max_payload: Arc<AtomicUsize>,
    client: OnceCell<Client>,
}

/// Credentials with their `${NAME}` placeholders substituted (a creds file read).
enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
    Creds(String),
}

struct Client {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
}

/// One delivery worker's way to a NATS target: the target's shared client.
pub struct Sink<'a> {
    endpoint: &'a Endpoint,
}

impl Endpoint {
    pub fn resolve(
        spec: &'static TargetSpec,
        nats: &'static NatsEndpoint,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, StartupError> {
        let place = format!("route \"{}\", target \"{}\"", spec.route, spec.name);
        let resolved = |field: &str, text: &str| {
            substitute(text, env).map_err(|e| StartupError(format!("{place}, {field}: {e}")))
        };
        let url = resolved("url", nats.url)?;
        let servers = url
            .split(',')
            .map(|server| {
                server.trim().parse::<ServerAddr>().map_err(|e| {
                    StartupError(format!(
                        "{place}: url \"{}\" is not a NATS server address once its variables \
                         are substituted: {e}",
                        nats.url
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match nats.auth {
            NatsAuth::None => Auth::None,
            NatsAuth::Token(token) => Auth::Token(resolved("token", token)?),
            NatsAuth::UserPassword { user, password } => {
                Auth::UserPassword(resolved("user", user)?, resolved("password", password)?)
            }
            NatsAuth::Creds(path) => {
                let path = resolved("creds", path)?;
                let creds = std::fs::read_to_string(&path)
                    .map_err(|e| StartupError(format!("{place}, creds \"{path}\": {e}")))?;
                ConnectOptions::with_credentials(&creds)
                    .map_err(|e| StartupError(format!("{place}, creds \"{path}\": {e}")))?;
                Auth::Creds(creds)
            }
        };
        let ca_file = match nats.ca_file {
            Some(ca_file) => {
                let path = resolved("ca_file", ca_file)?;
                // A file that is no PEM certificate would fail every handshake, for ever.
                crate::sink::http::roots_with(&path)
                    .map_err(|StartupError(e)| StartupError(format!("{place}, {e}")))?;
                Some(PathBuf::from(path))
            }
            None => None,
        };
        let opts = Opts::new(
            "fanout_nats_connected",
            "Whether the target's NATS client is connected (1) or not (0).",
        )
        .const_label("route", spec.route)
        .const_label("target", spec.name);
        let connected = IntGauge::with_opts(opts).expect("the metric's options are valid");
        Ok(Endpoint {
            spec,
            nats,
            servers,
            auth,
            ca_file,
            online: watch::Sender::new(false),
            connected,
            max_payload: Arc::default(),
            client: OnceCell::new(),
        })
    }

    pub fn register(&self, registry: &Registry) {
        registry
            .register(Box::new(self.connected.clone()))
            .expect("each NATS target registers its gauge once");
    }

    /// Whether the client is connected now.
    pub fn connected(&self) -> bool {
        *self.online.borrow()
    }

    /// Waits until the client is connected.
    async fn until_connected(&self) {
        let mut online = self.online.subscribe();
        // The sender lives as long as `self`: the wait ends only when connected.
        let _ = online.wait_for(|online| *online).await;
    }

    /// Sets `fanout_nats_connected` from the client's state (at scrape time).
    pub fn refresh_gauge(&self) {
        self.connected.set(i64::from(self.connected()));
    }

    /// The server's `max_payload` (which counts headers too) while the client is connected;
    /// `None` while it is not, or before the server has said it.
    pub fn max_payload(&self) -> Option<usize> {
        let client = &self.client.get()?.client;
        if !self.connected() {
            return None;
        }
        let known = self.max_payload.load(Ordering::Relaxed);
        if known > 0 {
            return Some(known);
        }
        let max_payload = client.server_info().max_payload;
        self.max_payload.store(max_payload, Ordering::Relaxed);
        (max_payload > 0).then_some(max_payload)
    }

    /// Sends a request to the subject and waits for its reply within `timeout` (a balance
    /// route's backend).
    pub async fn request(
        &self,
        headers: HeaderMap,
        payload: bytes::Bytes,
        timeout: Duration,
    ) -> Result<async_nats::Message, async_nats::RequestError> {
        let client = &self.client().await.client;
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(timeout));
        client.send_request(self.nats.subject, request).await
    }

    /// Makes the client, which connects in the background and reconnects for ever: called as
    /// the lane's workers start, so the connection (or the failure to make one) shows before
    /// the first event.
    pub async fn start(&self) {
        self.client().await;
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let client = self
                    .options()
                    .connect(self.servers.clone())
                    .await
                    .expect("a client that retries its first connection is always made");
                let mut jetstream = async_nats::jetstream::new(client.clone());
                // The PubAck's wait is the target's `timeout`, not the context's 5 s.
                jetstream.set_timeout(self.spec.delivery.timeout);
                Client { client, jetstream }
            })
            .await
    }

    fn options(&self) -> ConnectOptions {
        let options = match &self.auth {
            Auth::None => ConnectOptions::new(),
            Auth::Token(token) => ConnectOptions::with_token(token.clone()),
            Auth::UserPassword(user, password) => {
                ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Auth::Creds(creds) => {
                ConnectOptions::with_credentials(creds).expect("the creds were checked at start-up")
            }
        };
        let options = match &self.ca_file {
            Some(path) => options
                .add_root_certificates(path.clone())
                .require_tls(true),
            None => options,
        };
        let (online, max_payload, spec) =
            (self.online.clone(), self.max_payload.clone(), self.spec);
        options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(self.spec.delivery.timeout.max(Duration::from_secs(1)))
            .event_callback(move |event| {
                let (online, max_payload) = (online.clone(), max_payload.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            // Another server, perhaps another limit: read again when asked.
                            max_payload.store(0, Ordering::Relaxed);
                            online.send_replace(true);
                            tracing::info!(route = spec.route, target = spec.name, "NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            online.send_replace(false);
                            tracing::warn!(route = spec.route, target = spec.name, "NATS disconnected");
                        }
                        other => {
                            tracing::warn!(route = spec.route, target = spec.name, event = ?other, "NATS");
                        }
                    }
                }
            })
    }

    /// A worker's way to the target.
    pub fn connect(&self) -> Sink<'_> {
        Sink { endpoint: self }
    }
}
