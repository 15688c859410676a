//! Failed sign-ins counted per client address and email together.
//!
//! Keyed on the pair, whether or not the email has an account, so that the answers do not
//! tell accounts apart and a stranger's guesses from one address do not lock the owner out
//! at another. In memory, bounded: the oldest entries go first when it is full (each node of a
//! cluster counts its own, which multiplies an attacker's budget by the number of nodes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::Timestamp;

/// Most pairs remembered.
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: i32,
    until: Option<Timestamp>,
    last: Timestamp,
}

/// Failures per (address, email).
#[derive(Debug, Default)]
pub struct Throttle {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl Throttle {
    fn key(ip: Option<&str>, email: &str) -> (String, String) {
        (ip.unwrap_or("-").to_owned(), email.to_ascii_lowercase())
    }

    /// How long the pair must still wait, if it is blocked at `now`.
    pub fn blocked(&self, ip: Option<&str>, email: &str, now: Timestamp) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let until = entries.get(&Self::key(ip, email))?.until?;
        (until > now).then(|| (until - now).to_std().unwrap_or_default())
    }

    /// Count a failure; `block` says for how long the pair is blocked after so many.
    /// Returns the failures counted and the block started, if any.
    pub fn fail(
        &self,
        ip: Option<&str>,
        email: &str,
        now: Timestamp,
        block: impl Fn(i32) -> Option<Duration>,
    ) -> (i32, Option<Duration>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            evict(&mut entries);
        }
        let e = entries.entry(Self::key(ip, email)).or_insert(Entry {
            failures: 0,
            until: None,
            last: now,
        });
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        let lock = block(e.failures);
        if let Some(d) = lock {
            e.until = Some(now + chrono::Duration::from_std(d).unwrap_or_default());
        }
        (e.failures, lock)
    }

    /// Forget the pair's failures (after a successful sign-in).
    pub fn clear(&self, ip: Option<&str>, email: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Self::key(ip, email));
    }
}

/// Drop the older half of the entries.
fn evict(entries: &mut HashMap<(String, String), Entry>) {
    let mut lasts: Vec<Timestamp> = entries.values().map(|e| e.last).collect();
    let mid = lasts.len() / 2;
    let (_, cut, _) = lasts.select_nth_unstable(mid);
    let cut = *cut;
    entries.retain(|_, e| e.last > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_counted_apart_and_cleared() {
        let t = Throttle::default();
        let now = crate::now();
        let block = |n: i32| (n >= 2).then_some(Duration::from_secs(30));
        assert_eq!(t.fail(Some("1.2.3.4"), "A@x.org", now, block), (1, None));
        assert_eq!(t.blocked(Some("1.2.3.4"), "a@x.org", now), None);
        let (n, lock) = t.fail(Some("1.2.3.4"), "a@x.org", now, block);
        assert_eq!((n, lock), (2, Some(Duration::from_secs(30))));
        assert!(t.blocked(Some("1.2.3.4"), "a@x.org", now).is_some());
        // Another address, or the same address for another email, is not blocked.
        assert_eq!(t.blocked(Some("5.6.7.8"), "a@x.org", now), None);
        assert_eq!(t.blocked(Some("1.2.3.4"), "b@x.org", now), None);
        // The block ends.
        let later = now + chrono::Duration::seconds(31);
        assert_eq!(t.blocked(Some("1.2.3.4"), "a@x.org", later), None);
        t.clear(Some("1.2.3.4"), "a@x.org");
        assert_eq!(t.fail(Some("1.2.3.4"), "a@x.org", later, block).0, 1);
    }

    #[test]
    fn a_full_table_drops_its_oldest_half() {
        let mut entries = HashMap::new();
        let now = crate::now();
        for i in 0..10 {
            let last = now + chrono::Duration::seconds(i);
            entries.insert(
                (i.to_string(), String::new()),
                Entry {
                    failures: 1,
                    until: None,
                    last,
                },
            );
        }
        evict(&mut entries);
        assert_eq!(entries.len(), 4);
        assert!(entries.contains_key(&("9".to_owned(), String::new())));
    }
}
