//! Remembered keys: a client that retries a POST with the same `Idempotency-Key` within the
//! route's `idempotency_window` (or the same Standard Webhooks `webhook-id` within twice its
//! tolerance and a second, `gate`) gets the first event's id back with 202, and the event is
//! not taken in twice. A request holds what it claimed in [`Claims`] until its event is in or refused.
//!
//! A retry that arrives while the first request is still under way (its event not yet
//! written) gets `409` with `Retry-After: 1`: it cannot be told the id yet, since that event
//! may still be refused. The keys of a route live in a map bounded by [`MAX_KEYS`] (past it, the oldest key is
//! forgotten early) and expire after the window. A durable route also appends each key to
//! `idempotency-keys` in its log directory before the 202, and reads that file back at start-up
//! (keeping the keys still in their window), so a restart does not forget them (`file.rs`).

mod file;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::spec::RouteSpec;
use file::KeyFile;

/// Keys a route remembers at most.
pub const MAX_KEYS: usize = 100_000;
/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A route's remembered keys; a clone shares them (a request's claims hold one).
#[derive(Clone)]
pub struct IdempotencyKeys {
    window: Duration,
    keys: Arc<Mutex<Keys>>,
}

#[derive(Default)]
struct Keys {
    /// Each key's event id, whether that event was taken in (not yet while its request is
    /// under way), and when the key expires (Unix milliseconds).
    ids: HashMap<Box<[u8]>, ([u8; 16], bool, u64)>,
    /// When each key expires, oldest first. A key given back and claimed again is here twice:
    /// only the entry whose time its `ids` entry holds forgets it.
    expiry: VecDeque<(u64, Box<[u8]>)>,
    /// The durable route's file.
    file: Option<KeyFile>,
}

/// What a key says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new key, now taken for the request's event.
    New,
    /// Taken within the window by the event with this id.
    Seen([u8; 16]),
    /// Taken by a request still under way.
    InProgress,
}

impl IdempotencyKeys {
    pub fn new(route: &RouteSpec) -> IdempotencyKeys {
        IdempotencyKeys::with_window(route.idempotency_window)
    }

    /// Keys remembered for `window` (zero: none).
    pub fn with_window(window: Duration) -> IdempotencyKeys {
        IdempotencyKeys {
            window,
            keys: Arc::new(Mutex::new(Keys::default())),
        }
    }

    /// Whether the route looks at `Idempotency-Key` at all (a window of 0s turns it off).
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `key` for the event `id`, unless it is taken already.
    pub fn claim(&self, key: &[u8], id: [u8; 16]) -> Claim {
        self.claim_at(key, id, unix_millis(SystemTime::now()))
    }

    /// [`IdempotencyKeys::claim`] at `now` (Unix milliseconds).
    fn claim_at(&self, key: &[u8], id: [u8; 16], now: u64) -> Claim {
        let mut keys = self.lock();
        keys.expire(now);
        if let Some(&(first, taken, _)) = keys.ids.get(key) {
            return if taken {
                Claim::Seen(first)
            } else {
                Claim::InProgress
            };
        }
        if keys.ids.len() >= MAX_KEYS {
            keys.forget_oldest();
        }
        // Keys given back leave their expiry entries behind: drop them once they are many.
        if keys.expiry.len() > 2 * keys.ids.len() + 1024 {
            let Keys { ids, expiry, .. } = &mut *keys;
            expiry.retain(|(expires, key)| ids.get(key).is_some_and(|entry| entry.2 == *expires));
        }
        let expires = now + self.window.as_millis() as u64;
        keys.ids.insert(key.into(), (id, false, expires));
        keys.expiry.push_back((expires, key.into()));
        Claim::New
    }

    /// Marks `key`'s event taken in: a retry now gets its id.
    /// (Only if the claim is still the one made for the event `id`: a claim that expired
    /// under a slow request may have been made again by another.)
    pub fn taken(&self, key: &[u8], id: [u8; 16]) {
        if let Some(entry) = self.lock().ids.get_mut(key).filter(|entry| entry.0 == id) {
            entry.1 = true;
        }
    }

    /// Gives `key` back: the event `id` was not taken in after all.
    pub fn release(&self, key: &[u8], id: [u8; 16]) {
        let mut keys = self.lock();
        if keys
            .ids
            .get(key)
            .is_some_and(|entry| entry.0 == id && !entry.1)
        {
            keys.ids.remove(key);
        }
    }

    /// Writes `key` to the durable route's file, if it has one.
    pub fn persist(&self, key: &[u8], id: [u8; 16]) -> io::Result<()> {
        let mut keys = self.lock();
        let live = keys.ids.len();
        let Some(file) = &mut keys.file else {
            return Ok(());
        };
        let expires = unix_millis(SystemTime::now()) + self.window.as_millis() as u64;
        file.append(expires, &id, key, live, &self.keys)
    }

    /// Reads the keys a durable route kept in `path` (those still in their window), and
    /// appends to it from now on.
    pub fn open(&self, path: &Path) -> io::Result<()> {
        let (file, live) = KeyFile::open(path)?;
        let mut keys = self.lock();
        for (expires, id, key) in live {
            keys.ids.insert(key.clone().into(), (id, true, expires));
            keys.expiry.push_back((expires, key.into()));
        }
        keys.file = Some(file);
        Ok(())
    }
}

impl Keys {
    fn expire(&mut self, now: u64) {
        while self
            .expiry
            .front()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            self.pop_front();
        }
    }

    /// Forgets the key that expires first.
    fn forget_oldest(&mut self) {
        while !self.expiry.is_empty() && !self.pop_front() {}
    }

    /// Takes the first expiry entry, forgetting its key unless the key was claimed again
    /// since (a later entry holds it then); whether it forgot one.
    fn pop_front(&mut self) -> bool {
        let Some((expires, key)) = self.expiry.pop_front() else {
            return false;
        };
        let live = self.ids.get(&key).is_some_and(|entry| entry.2 == expires);
        if live {
            self.ids.remove(&key);
        }
        live
    }
}

/// The keys one request has claimed for its event (its `webhook-id`, its `Idempotency-Key`):
/// taken once the event is in (and written to a durable route's file), given back if the
/// request ends otherwise. Owned, so that a durable route's commit can settle them after the
/// request is gone.
pub struct Claims {
    route: &'static str,
    id: [u8; 16],
    /// At most two (a `webhook-id` and an `Idempotency-Key`).
    held: [Option<(IdempotencyKeys, Box<[u8]>)>; 2],
}

impl Claims {
    pub fn new(route: &'static str, id: [u8; 16]) -> Claims {
        Claims {
            route,
            id,
            held: [None, None],
        }
    }

    /// Claims `key` for the event, unless it is taken already.
    pub fn claim(&mut self, keys: &IdempotencyKeys, key: &[u8]) -> Result<(), Duplicate> {
        match keys.claim(key, self.id) {
            Claim::New => {
                let free = self.held.iter_mut().find(|slot| slot.is_none());
                *free.expect("a request claims at most two keys") =
                    Some((keys.clone(), key.into()));
                Ok(())
            }
            Claim::Seen(first) => Err(Duplicate::Seen(first)),
            Claim::InProgress => Err(Duplicate::InProgress),
        }
    }

    /// The event is in (`taken`): a retry now gets its id; else the keys are given back.
    pub fn settle(&mut self, taken: bool) {
        for (keys, key) in self.held.iter_mut().filter_map(Option::take) {
            if !taken {
                keys.release(&key, self.id);
                continue;
            }
            keys.taken(&key, self.id);
            if let Err(e) = keys.persist(&key, self.id) {
                tracing::warn!(route = self.route, error = %e, "cannot write a remembered key");
            }
        }
    }
}

impl Drop for Claims {
    /// A request that ends before its event is in gives its keys back.
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// Why a key could not be claimed: taken by an event already in (its id), or by a request
/// still under way.
#[derive(Debug, PartialEq, Eq)]
pub enum Duplicate {
    Seen([u8; 16]),
    InProgress,
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `key` is a key this proxy takes: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn valid(key: &[u8]) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_seen_until_released_or_taken() {
        let route = crate::spec::RouteSpec {
            name: "r",
            path: "/r",
            max_body: 1,
            mode: crate::spec::Mode::Fanout,
            storage: crate::spec::Storage::Memory,
            disk: crate::spec::DiskPolicy {
                budget: 1,
                fsync: crate::spec::Fsync::Always,
            },
            idempotency_window: Duration::from_secs(60),
            auth: None,
            rate_limit: None,
            match_headers: &[],
            balance: crate::spec::BalancePolicy::DEFAULT,
            targets: &[],
        };
        let keys = IdempotencyKeys::new(Box::leak(Box::new(route)));
        assert_eq!(keys.claim(b"k", [1; 16]), Claim::New);
        assert_eq!(keys.claim(b"k", [2; 16]), Claim::InProgress);
        keys.taken(b"k", [1; 16]);
        assert_eq!(keys.claim(b"k", [2; 16]), Claim::Seen([1; 16]));
        keys.release(b"k", [1; 16]);
        assert_eq!(
            keys.claim(b"k", [2; 16]),
            Claim::Seen([1; 16]),
            "taken: not given back"
        );
        assert_eq!(keys.claim(b"j", [3; 16]), Claim::New);
        keys.release(b"j", [9; 16]);
        assert_eq!(
            keys.claim(b"j", [4; 16]),
            Claim::InProgress,
            "only its own claim is given back"
        );
        keys.release(b"j", [3; 16]);
        assert_eq!(keys.claim(b"j", [4; 16]), Claim::New);

        // Given back at 0 and claimed again at 30 s: the first claim's expiry (60 s) does not
        // forget the second's (90 s).
        let keys = IdempotencyKeys::with_window(Duration::from_secs(60));
        assert_eq!(keys.claim_at(b"k", [4; 16], 0), Claim::New);
        keys.release(b"k", [4; 16]);
        assert_eq!(keys.claim_at(b"k", [5; 16], 30_000), Claim::New);
        keys.taken(b"k", [5; 16]);
        assert_eq!(keys.claim_at(b"k", [6; 16], 60_000), Claim::Seen([5; 16]));
        assert_eq!(keys.claim_at(b"k", [6; 16], 90_000), Claim::New);
        assert!(valid(b"abc-123") && !valid(b"") && !valid(b"a b"));
    }
}
