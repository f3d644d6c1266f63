//! What can stop start-up: a missing environment variable, an unreadable CA file, an address
//! that cannot be bound. Each message says which route, target and field.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError(pub String);

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}
