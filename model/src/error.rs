//! Config errors that name the place and the problem, e.g.
//! `routes.yaml:14:9: route "leads", target "crm", field "buffer": must be at least 1`.

use std::fmt;

/// One problem in a routes file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The routes file as the user named it.
    pub file: String,
    /// 1-based line and column of the offending node, when the parser knows it.
    pub position: Option<(usize, usize)>,
    /// Where in the document: `route "leads", target "crm", field "buffer"`; empty for the file.
    pub context: String,
    /// What is wrong, and where it helps, how to fix it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn whole_file(file: &str, message: String) -> Self {
        ConfigError {
            file: file.to_owned(),
            position: None,
            context: String::new(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one routes file, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
