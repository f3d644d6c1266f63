//! Where accepted events wait for delivery, and where given-up ones end: a lane's bounded
//! queue in memory ([`memory`]), a durable route's write-ahead log on disk ([`wal`]) and each
//! lane's cursor over it ([`disk`]), and the dead letters ([`dead_letter`]).

pub mod dead_letter;
pub mod disk;
pub mod memory;
pub mod wal;
