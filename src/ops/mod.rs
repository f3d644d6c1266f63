//! The process around the proxy: flags ([`cli`]), start-up errors ([`startup`]), signals
//! ([`shutdown`]), the data directory with its lock and hand-over ([`data_dir`]), the
//! operator's commands ([`tools`]: `dead-letters`, `log verify`) and `fanout demo` ([`demo`]).

pub mod cli;
pub mod data_dir;
pub mod demo;
pub mod shutdown;
pub mod startup;
pub mod tools;
