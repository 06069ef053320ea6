//! Slowing down password guessing, across every API process of a store.
//!
//! Failed logins are counted under three keys: the client IP (guessing
//! many accounts from one place), the account from that IP, and the
//! account from anywhere (guessing one account from many places). Past a
//! few free failures, each key makes further attempts wait, twice as long
//! after every new failure, up to a ceiling; an attempt during the wait is
//! refused without its password being looked at. Only a password that was
//! checked and found wrong counts as a failure: an attempt refused during
//! a wait says nothing about the password, so it leaves the wait as it
//! was. Were it counted, anyone could keep an account waiting at the
//! ceiling for ever with one attempt per wait from a few addresses, and a
//! user retrying with the right password would lengthen their own wait.
//! Counts are forgotten after a quiet period, and a successful login clears
//! the counts of its account from its IP.
//!
//! The account-wide key is what lets an attacker annoy a user from
//! elsewhere, so it is not applied to an IP the account logged in from
//! successfully in the last [`LOGIN_MARK_DAYS`] days: an administrator
//! keeps logging in from their usual place whatever is tried against
//! their name.
//!
//! # Shared counts
//!
//! The counts live in the store, in the login ledger (see
//! `exim_pilot_store::login`), so that every API process of a fleet (any
//! number of `exim-pilot serve` behind a load balancer) counts the
//! attempts made through all of them: N processes give an attacker no
//! more attempts than one. The ledger is append-only: a failure appends a
//! mark under each key it counts against, a success a reset of its
//! account from its IP and a mark that trusts the pair. Each decision
//! reads the newest marks of the attempt's keys (one query by key and
//! time) and works out the counts from them: a key's count is its run of
//! failures back to its latest reset or to the first gap longer than the
//! quiet period, and at most the free failures and twenty doublings of
//! them are read, since more change nothing. Nothing is cached in the
//! process, so a decision never misses an attempt another process has
//! stored.
//!
//! Attempts that run at the same moment are all checked before any of
//! them fails, as before in one process: the password check takes tens
//! of milliseconds, and attempts sent together in that time are counted
//! only once they have failed.
//!
//! Every wrong password counts, whether it comes alone, as one of many
//! aliases of one request or in a batch: the login resolver asks here each
//! time. A request refused for holding too many logins is counted against
//! its client's address only (see `Auth::count_failures`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use exim_pilot_store::{LoginMark, LoginMarkKind, Store, StoreError, LOGIN_MARK_DAYS};

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

/// Doublings of the wait past which more failures change nothing.
const MAX_DOUBLINGS: u32 = 20;

/// Account names longer than this are named in keys by their hash.
const LONGEST_NAME: usize = 100;

/// The keys of one attempt.
struct Keys {
    ip: String,
    pair: String,
    account: String,
    trusted: String,
}

impl Keys {
    /// Keys quote the account name, so that no name can make the key of
    /// another (`bob from 192.0.2.1` is not bob from that address), and
    /// name very long ones by their hash.
    fn new(account: &str, ip: IpAddr) -> Keys {
        let account = account.to_lowercase();
        let name = if account.len() > LONGEST_NAME {
            let digest = Sha256::digest(account.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        } else {
            format!("{account:?}")
        };
        Keys {
            ip: format!("ip {ip}"),
            pair: format!("account {name} from {ip}"),
            account: format!("account {name}"),
            trusted: format!("trusted {name} from {ip}"),
        }
    }

    fn all(&self) -> Vec<String> {
        vec![
            self.ip.clone(),
            self.pair.clone(),
            self.account.clone(),
            self.trusted.clone(),
        ]
    }
}

/// The login limits, counted in the store.
#[derive(Clone)]
pub struct Throttle {
    config: ThrottleConfig,
    store: Arc<dyn Store>,
}

impl Throttle {
    /// Limits counted in `store`'s login ledger.
    pub fn new(store: Arc<dyn Store>, config: ThrottleConfig) -> Throttle {
        Throttle { config, store }
    }

    /// How long this attempt must still wait; zero when it may go ahead.
    /// Asking counts nothing (only [`Throttle::failed`] does), so a caller
    /// who waits that long may go ahead, however often they asked.
    pub async fn check(&self, account: &str, ip: IpAddr) -> Result<Duration, StoreError> {
        self.check_at(account, ip, Utc::now()).await
    }

    async fn check_at(
        &self,
        account: &str,
        ip: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Duration, StoreError> {
        let keys = Keys::new(account, ip);
        let marks = self.marks(&keys, now).await?;
        let counted = self.counted(&keys, &marks);
        Ok(self.longest_wait(&marks, &counted, now))
    }

    /// Counts `n` failed attempts.
    pub async fn failed(&self, account: &str, ip: IpAddr, n: usize) -> Result<(), StoreError> {
        self.failed_at(account, ip, n, Utc::now()).await
    }

    async fn failed_at(
        &self,
        account: &str,
        ip: IpAddr,
        n: usize,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let keys = Keys::new(account, ip);
        let trusted = self
            .store
            .login_marks(std::slice::from_ref(&keys.trusted), trusted_since(now), 1)
            .await?;
        let counted = self.counted(&keys, &trusted);
        self.store
            .append_login_marks(&failures(&counted, now, n))
            .await
    }

    /// Records a successful login: its account from its IP starts afresh,
    /// and the IP is trusted for the account from now on.
    pub async fn succeeded(&self, account: &str, ip: IpAddr) -> Result<(), StoreError> {
        self.succeeded_at(account, ip, Utc::now()).await
    }

    async fn succeeded_at(
        &self,
        account: &str,
        ip: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let keys = Keys::new(account, ip);
        let mark = |key: String, kind| LoginMark { key, at: now, kind };
        self.store
            .append_login_marks(&[
                mark(keys.pair, LoginMarkKind::Reset),
                mark(keys.trusted, LoginMarkKind::Trusted),
            ])
            .await
    }

    /// The newest marks of every key of an attempt: as many as can change
    /// a count, and the trust marks of the last [`LOGIN_MARK_DAYS`] days.
    async fn marks(&self, keys: &Keys, now: DateTime<Utc>) -> Result<Vec<LoginMark>, StoreError> {
        let c = &self.config;
        let most_free = c.account_free.max(c.ip_free).max(c.account_wide_free);
        let per_key = (most_free + MAX_DOUBLINGS + 1) as usize;
        self.store
            .login_marks(&keys.all(), trusted_since(now), per_key)
            .await
    }

    /// The keys failures count against, with their free failures: the
    /// account-wide one only from an address the account is not trusted
    /// from.
    fn counted(&self, keys: &Keys, marks: &[LoginMark]) -> Vec<(String, u32)> {
        let c = &self.config;
        let mut out = vec![
            (keys.ip.clone(), c.ip_free),
            (keys.pair.clone(), c.account_free),
        ];
        let trusted = marks
            .iter()
            .any(|m| m.key == keys.trusted && m.kind == LoginMarkKind::Trusted);
        if !trusted {
            out.push((keys.account.clone(), c.account_wide_free));
        }
        out
    }

    /// The longest wait any of `counted` imposes at `now`.
    fn longest_wait(
        &self,
        marks: &[LoginMark],
        counted: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> Duration {
        counted
            .iter()
            .map(|(key, free)| self.wait(marks, key, *free, now))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// What one key imposes: nothing within its free failures, then the
    /// base wait doubled for each further failure, from its latest one.
    fn wait(&self, marks: &[LoginMark], key: &str, free: u32, now: DateTime<Utc>) -> Duration {
        let Some((count, last)) = self.run(marks, key, now) else {
            return Duration::ZERO;
        };
        if count < free {
            return Duration::ZERO;
        }
        let doublings = (count - free).min(MAX_DOUBLINGS);
        let wait = self
            .config
            .base
            .saturating_mul(1 << doublings)
            .min(self.config.ceiling);
        let since_last = (now - last).to_std().unwrap_or(Duration::ZERO);
        wait.saturating_sub(since_last)
    }

    /// The failures of a key that still count, and the latest one: newest
    /// first, back to a reset or to a quiet gap of `forget_after` (the
    /// first one counted from `now`).
    fn run(
        &self,
        marks: &[LoginMark],
        key: &str,
        now: DateTime<Utc>,
    ) -> Option<(u32, DateTime<Utc>)> {
        let mut of_key: Vec<&LoginMark> = marks.iter().filter(|m| m.key == key).collect();
        of_key.sort_by_key(|m| std::cmp::Reverse(m.at));
        let forget = chrono::Duration::from_std(self.config.forget_after).ok()?;
        let (mut count, mut latest, mut previous) = (0u32, None, now);
        for m in of_key {
            match m.kind {
                LoginMarkKind::Reset => break,
                LoginMarkKind::Trusted => continue,
                LoginMarkKind::Failure => {
                    if previous - m.at >= forget {
                        break;
                    }
                    count = count.saturating_add(1);
                    latest.get_or_insert(m.at);
                    previous = m.at;
                }
            }
        }
        latest.map(|l| (count, l))
    }
}

/// `n` failures at `now` under each of `counted`.
fn failures(counted: &[(String, u32)], now: DateTime<Utc>, n: usize) -> Vec<LoginMark> {
    counted
        .iter()
        .flat_map(|(key, _)| {
            std::iter::repeat_n(
                LoginMark {
                    key: key.clone(),
                    at: now,
                    kind: LoginMarkKind::Failure,
                },
                n,
            )
        })
        .collect()
}

/// The oldest mark an attempt at `now` reads.
fn trusted_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::days(LOGIN_MARK_DAYS as i64)
}

#[cfg(test)]
mod tests {
    use exim_pilot_store::SqliteStore;

    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    /// A throttle over a fresh store; the directory lives as long as it.
    fn throttle() -> (Throttle, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_dir(dir.path()).expect("store");
        (
            Throttle::new(Arc::new(store), ThrottleConfig::default()),
            dir,
        )
    }

    #[tokio::test]
    async fn the_wait_told_is_the_wait_that_holds() {
        let (t, _dir) = throttle();
        t.failed("alice", ip(1), 4).await.unwrap();
        // The store keeps milliseconds.
        let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let told = t.check_at("alice", ip(1), now).await.unwrap();
        assert!(!told.is_zero());
        let holds = t.check_at("alice", ip(1), now).await.unwrap();
        assert_eq!(holds, told);
        let later = now + chrono::Duration::from_std(told).unwrap();
        assert!(t.check_at("alice", ip(1), later).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn one_account_from_one_ip_waits_after_three_failures() {
        let (t, _dir) = throttle();
        for _ in 0..3 {
            assert!(t.check("ann", ip(1)).await.unwrap().is_zero());
            t.failed("ann", ip(1), 1).await.unwrap();
        }
        let first = t.check("ann", ip(1)).await.unwrap();
        assert!(first > Duration::ZERO);

        // Each further wrong password doubles the wait.
        t.failed("ann", ip(1), 1).await.unwrap();
        let second = t.check("ann", ip(1)).await.unwrap();
        assert!(second > first, "waits grow: {first:?} then {second:?}");

        // Another user elsewhere is not affected.
        assert!(t.check("bob", ip(2)).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn attempts_refused_during_a_wait_do_not_lengthen_it() {
        let (t, _dir) = throttle();
        let start = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
            - chrono::Duration::minutes(5);
        t.failed_at("ann", ip(1), 4, start).await.unwrap();
        let first = t.check_at("ann", ip(1), start).await.unwrap();
        assert_eq!(first, Duration::from_secs(2));

        // Asking again and again, from the same address or from many (the
        // account-wide key), during the wait changes nothing.
        for n in 0..40 {
            let at = start + chrono::Duration::milliseconds(n * 10);
            t.check_at("ann", ip(1), at).await.unwrap();
            t.check_at("ann", ip(100 + n as u8), at).await.unwrap();
        }
        let at = start + chrono::Duration::milliseconds(400);
        let told = t.check_at("ann", ip(1), at).await.unwrap();
        assert_eq!(told, Duration::from_millis(1600));
        let after = start + chrono::Duration::from_std(first).unwrap();
        assert!(t.check_at("ann", ip(1), after).await.unwrap().is_zero());
        assert!(t.check_at("ann", ip(99), after).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn many_accounts_from_one_ip_wait_after_ten_failures() {
        let (t, _dir) = throttle();
        for i in 0..10 {
            let user = format!("user{i}");
            assert!(t.check(&user, ip(1)).await.unwrap().is_zero());
            t.failed(&user, ip(1), 1).await.unwrap();
        }
        assert!(t.check("someone-new", ip(1)).await.unwrap() > Duration::ZERO);
        assert!(t.check("someone-new", ip(3)).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn guessing_from_elsewhere_does_not_lock_out_a_trusted_ip() {
        let (t, _dir) = throttle();
        assert!(t.check("admin", ip(1)).await.unwrap().is_zero());
        t.succeeded("admin", ip(1)).await.unwrap();
        for n in 10..60 {
            t.failed("admin", ip(n), 1).await.unwrap();
        }
        assert!(t.check("admin", ip(99)).await.unwrap() > Duration::ZERO);
        assert!(t.check("Admin", ip(1)).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn a_success_resets_its_account_from_its_ip() {
        let (t, _dir) = throttle();
        t.failed("ann", ip(1), 3).await.unwrap();
        t.succeeded("ann", ip(1)).await.unwrap();
        assert!(t.check("ann", ip(1)).await.unwrap().is_zero());
        t.failed("ann", ip(1), 2).await.unwrap();
        assert!(t.check("ann", ip(1)).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn counts_are_forgotten_after_a_quiet_period() {
        let (t, _dir) = throttle();
        let start = Utc::now() - chrono::Duration::hours(2);
        t.failed_at("ann", ip(1), 8, start).await.unwrap();
        let soon = start + chrono::Duration::seconds(1);
        assert!(!t.check_at("ann", ip(1), soon).await.unwrap().is_zero());
        let quiet = start + chrono::Duration::minutes(16);
        assert!(t.check_at("ann", ip(1), quiet).await.unwrap().is_zero());
        // A failure after the quiet period starts a new count.
        t.failed_at("ann", ip(1), 1, quiet).await.unwrap();
        let after = quiet + chrono::Duration::seconds(1);
        assert!(t.check_at("ann", ip(1), after).await.unwrap().is_zero());
    }

    #[tokio::test]
    async fn a_crafted_name_does_not_count_against_another_key() {
        let (t, _dir) = throttle();
        // The account-wide key of this name would be bob's key from
        // 192.0.2.1 were names not quoted.
        t.failed("bob from 192.0.2.1", ip(7), 10).await.unwrap();
        t.failed(&"x".repeat(5000), ip(8), 10).await.unwrap();
        assert!(t.check("bob", ip(1)).await.unwrap().is_zero());
    }
}
