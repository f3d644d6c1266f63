//! The fan-out mode: a request becomes one `crate::event` ([`ingest`]: body, id, keys of
//! [`idempotency`], 202), pushed into one [`lane`] per target of its route; the lanes'
//! [`workers`] ([`delivery`]) take events, alone or as a batch (`crate::sink::parcel`), and
//! send them through the target's sink with retries.

pub mod delivery;
pub mod idempotency;
pub mod ingest;
pub mod lane;
pub mod workers;
