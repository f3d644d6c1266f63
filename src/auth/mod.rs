//! What a request must show before its route takes it, for both modes: a route's [`gate`]
//! (bearer tokens, signature headers, replays), the signature checks over a body
//! ([`signature`]) and the per-route rate limit ([`rate_limit`]).

pub mod gate;
pub mod rate_limit;
pub mod signature;
