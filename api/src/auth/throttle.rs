//! Slowing down password guessing.
//!
//! Failed logins are counted under three keys: the client IP (guessing
//! many accounts from one place), the account from that IP, and the
//! account from anywhere (guessing one account from many places). Past a
//! few free failures, each key makes further attempts wait, twice as long
//! after every new failure, up to a ceiling; an attempt during the wait is
//! refused without its password being looked at, and counts as a failure.
//! Counts are forgotten after a quiet period, and a successful login clears
//! the counts of its account from its IP.
//!
//! The account-wide key is what lets an attacker annoy a user from
//! elsewhere, so it is not applied to an IP the account logged in from
//! successfully before: an administrator keeps logging in from their
//! usual place whatever is tried against their name. The counts live in
//! the memory of one process; several API servers each count their own.
//!
//! Every attempt counts, whether it comes alone, as one of many aliases of
//! one request or in a batch: the login resolver asks here each time.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How failures turn into waits.
#[derive(Clone, Copy, Debug)]
pub struct ThrottleConfig {
    /// Failures of one account from one IP before waits start.
    pub account_free: u32,
    /// Failures from one IP (any account) before waits start.
    pub ip_free: u32,
    /// Failures of one account from anywhere before waits start.
    pub account_wide_free: u32,
    /// The first wait; each further failure doubles it.
    pub base: Duration,
    /// The longest wait.
    pub ceiling: Duration,
    /// Counts are forgotten after this long without a failure.
    pub forget_after: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> ThrottleConfig {
        ThrottleConfig {
            account_free: 3,
            ip_free: 10,
            account_wide_free: 20,
            base: Duration::from_secs(1),
            ceiling: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The failure counts of one process.
pub struct Throttle {
    config: ThrottleConfig,
    failures: Mutex<HashMap<String, Failures>>,
    known_good: Mutex<HashSet<(String, IpAddr)>>,
}

/// Most entries kept; past this, the oldest quiet ones are forgotten.
const MAX_ENTRIES: usize = 100_000;

impl Throttle {
    /// An empty throttle.
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            failures: Mutex::new(HashMap::new()),
            known_good: Mutex::new(HashSet::new()),
        }
    }

    fn keys(&self, account: &str, ip: IpAddr) -> Vec<(String, u32)> {
        let account = account.to_lowercase();
        let mut keys = vec![
            (format!("ip {ip}"), self.config.ip_free),
            (
                format!("account {account} from {ip}"),
                self.config.account_free,
            ),
        ];
        let known = self
            .known_good
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(account.clone(), ip));
        if !known {
            keys.push((format!("account {account}"), self.config.account_wide_free));
        }
        keys
    }

    fn wait(&self, f: &Failures, free: u32, now: Instant) -> Duration {
        if f.count < free {
            return Duration::ZERO;
        }
        let doublings = (f.count - free).min(20);
        let wait = self
            .config
            .base
            .saturating_mul(1 << doublings)
            .min(self.config.ceiling);
        (f.last + wait).saturating_duration_since(now)
    }

    /// How long this attempt must still wait; zero when it may go ahead.
    /// An attempt that must wait is counted as a failure, which makes the
    /// wait longer: the wait returned is the one that holds after counting
    /// it, so a caller who waits that long (and tries nothing else in the
    /// meantime) may go ahead.
    pub fn check(&self, account: &str, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let keys = self.keys(account, ip);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let wait = self.longest_wait(&failures, &keys, now);
        if wait.is_zero() {
            return wait;
        }
        for (key, _) in &keys {
            bump(&mut failures, key, now, self.config.forget_after);
        }
        self.longest_wait(&failures, &keys, now)
    }

    /// The longest wait any of `keys` imposes at `now`.
    fn longest_wait(
        &self,
        failures: &HashMap<String, Failures>,
        keys: &[(String, u32)],
        now: Instant,
    ) -> Duration {
        keys.iter()
            .filter_map(|(key, free)| {
                let f = failures.get(key)?;
                let fresh = now.duration_since(f.last) < self.config.forget_after;
                fresh.then(|| self.wait(f, *free, now))
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// How long an attempt would wait now, without counting one.
    #[cfg(test)]
    fn pending(&self, account: &str, ip: IpAddr) -> Duration {
        let keys = self.keys(account, ip);
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        self.longest_wait(&failures, &keys, Instant::now())
    }

    /// Counts a failed attempt.
    pub fn failed(&self, account: &str, ip: IpAddr) {
        let now = Instant::now();
        let keys = self.keys(account, ip);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ENTRIES {
            let forget = self.config.forget_after;
            failures.retain(|_, f| now.duration_since(f.last) < forget);
        }
        for (key, _) in &keys {
            bump(&mut failures, key, now, self.config.forget_after);
        }
    }

    /// Records a successful login: its account from its IP starts afresh,
    /// and the IP is known good for the account from now on.
    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        let account = account.to_lowercase();
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("account {account} from {ip}"));
        let mut known = self.known_good.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() < MAX_ENTRIES {
            known.insert((account, ip));
        }
    }
}

fn bump(failures: &mut HashMap<String, Failures>, key: &str, now: Instant, forget: Duration) {
    let f = failures.entry(key.to_string()).or_insert(Failures {
        count: 0,
        last: now,
    });
    if now.duration_since(f.last) >= forget {
        f.count = 0;
    }
    f.count = f.count.saturating_add(1);
    f.last = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn the_wait_told_is_the_wait_that_holds() {
        let t = Throttle::new(ThrottleConfig::default());
        for _ in 0..4 {
            t.failed("alice", ip(1));
        }
        let told = t.check("alice", ip(1));
        assert!(!told.is_zero());
        let holds = t.pending("alice", ip(1));
        assert!(
            holds <= told && told - holds < Duration::from_secs(1),
            "told {told:?}, holds {holds:?}"
        );
    }

    #[test]
    fn one_account_from_one_ip_waits_after_three_failures() {
        let t = Throttle::new(ThrottleConfig::default());
        for _ in 0..3 {
            assert!(t.check("ann", ip(1)).is_zero());
            t.failed("ann", ip(1));
        }
        let first = t.check("ann", ip(1));
        assert!(first > Duration::ZERO);
        let second = t.check("ann", ip(1));
        assert!(second > first, "waits grow: {first:?} then {second:?}");
        // Another user elsewhere is not affected.
        assert!(t.check("bob", ip(2)).is_zero());
    }

    #[test]
    fn many_accounts_from_one_ip_wait_after_ten_failures() {
        let t = Throttle::new(ThrottleConfig::default());
        for i in 0..10 {
            let user = format!("user{i}");
            assert!(t.check(&user, ip(1)).is_zero());
            t.failed(&user, ip(1));
        }
        assert!(t.check("someone-new", ip(1)) > Duration::ZERO);
        assert!(t.check("someone-new", ip(3)).is_zero());
    }

    #[test]
    fn guessing_from_elsewhere_does_not_lock_out_a_known_ip() {
        let t = Throttle::new(ThrottleConfig::default());
        assert!(t.check("admin", ip(1)).is_zero());
        t.succeeded("admin", ip(1));
        for n in 10..60 {
            t.failed("admin", ip(n));
        }
        assert!(t.check("admin", ip(99)) > Duration::ZERO);
        assert!(t.check("admin", ip(1)).is_zero());
    }
}
