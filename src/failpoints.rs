//! Fault injection for the tests of durable routes (cargo feature `failpoints`, which a
//! shipped build does not have): named points in the file operations of the log, the dead
//! letters and the remembered keys fail with a chosen `errno` when a test says so, through
//! the maintained `fail` crate (TiKV's).
//!
//! A test configures points at start-up with `FAILPOINTS="log::write=return(ENOSPC)"` (the
//! `fail` crate's syntax: `;` between points, `off` to clear one), or while fanout runs with
//! `PUT /failpoints?log::sync=return(EIO)` (several `&`-separated, percent-encoded where a URI
//! needs it; answered once applied). The argument of `return` is the error: `EIO`, `ENOSPC`,
//! `EDQUOT`, `EROFS` or `EACCES`.
//!
//! Points: `log::write`, `log::sync`, `log::roll` (before the next segment's file is made),
//! `log::roll_sync_dir` (once it is in place, before its directory is synced),
//! `log::save_position`, `log::read` (a lane reading records), `dead_letter::write`,
//! `keys::write`.

use std::io;

/// Sets up the points named in `FAILPOINTS`; they stay configured while the process lives.
pub fn setup() {
    std::mem::forget(fail::FailScenario::setup());
}

/// Fails with the configured error if point `name` is on.
pub fn io(name: &str) -> io::Result<()> {
    match fail::eval(name, |errno| error(errno.as_deref())) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn error(errno: Option<&str>) -> io::Error {
    let code = match errno {
        Some("ENOSPC") => libc::ENOSPC,
        Some("EDQUOT") => libc::EDQUOT,
        Some("EROFS") => libc::EROFS,
        Some("EACCES") => libc::EACCES,
        _ => libc::EIO,
    };
    io::Error::from_raw_os_error(code)
}

/// Applies `NAME=ACTIONS&...` (the query of `PUT /failpoints`, percent-decoded: a chain of
/// actions is written `1*sleep(300)-%3E1*return(EIO)`, as a URI cannot hold `>`); the error of
/// the first that does not parse.
pub fn configure(query: &str) -> Result<(), String> {
    let query = percent_decoded(query)?;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, actions) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not NAME=ACTIONS"))?;
        if actions == "off" {
            fail::remove(name);
        } else {
            fail::cfg(name, actions)?;
        }
    }
    Ok(())
}

fn percent_decoded(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text
                .get(at + 1..at + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad escape at {at} of {text:?}"))?;
            out.push(hex);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}
