//! Where requests come in: the accept loop and shutdown ([`server`]), each connection's
//! protocol, TLS and idleness ([`connection`], [`tls`]), the route lookup that hands a request
//! to its route's mode ([`dispatch`]), bodies read whole within limits ([`request_body`]),
//! every refusal fanout answers itself ([`answer`]), and the admin listener ([`admin`]).

pub mod admin;
pub mod answer;
pub mod connection;
pub mod dispatch;
pub mod request_body;
pub mod server;
pub mod tls;
