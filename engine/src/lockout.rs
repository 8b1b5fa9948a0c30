//! The lockout ladder, kept in the store.
//!
//! Three keys per request and pathway: the account, the (account, client
//! address) pair, and the address across accounts. Each key keeps the
//! times of its failures inside a sliding window, its lock (until when, how
//! many times so far) and whether it is hard-locked. Its stage follows from
//! the manifest's ladder for that key: `none → challenge → throttle →
//! temporary_lock → hard_lock`. Temporary locks grow with each repeat
//! (linear or exponential, capped); after `hard_lock_after` of them the
//! next lock is hard and stays until an operator clears it. A success
//! clears failures and repeats (never a lock); a key idle for
//! `reset_after` forgets its repeats. Each value carries its own expiry:
//! the store needs no TTL.
//!
//! Policies decide which key's stage leads to which outcome; the engine
//! only counts. Synthetic and authentic traffic use different keys (the
//! pathway is part of the key), so one never moves the other's counters.

use crate::context::Pathway;
use crate::manifest::{Ladder, PathwayLockout};
use crate::request::{Event, Request};
use crate::store::{Entry, Write};
use serde::{Deserialize, Serialize};

/// Which counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The account, from any address.
    Account,
    /// The account from one address.
    AccountIp,
    /// One address, across accounts.
    Ip,
}

impl KeyKind {
    /// Name used in keys, context and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Account => "account",
            KeyKind::AccountIp => "account_ip",
            KeyKind::Ip => "ip",
        }
    }
}

/// A key's stage on the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Stage {
    /// Nothing to do.
    #[default]
    None,
    /// Ask for more proof.
    Challenge,
    /// Slow down.
    Throttle,
    /// Locked until `locked_until`.
    TemporaryLock,
    /// Locked until an operator clears it.
    HardLock,
}

impl Stage {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "none",
            Stage::Challenge => "challenge",
            Stage::Throttle => "throttle",
            Stage::TemporaryLock => "temporary_lock",
            Stage::HardLock => "hard_lock",
        }
    }
}

/// A key's record as stored (short field names: it is stored per key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Failure times inside the window, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub f: Vec<i64>,
    /// Locked until (seconds since the epoch); 0: not locked.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lu: i64,
    /// Temporary locks so far.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub r: u32,
    /// Hard-locked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h: bool,
    /// Last failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last: i64,
    /// When the whole record may be forgotten (hard locks: never, 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exp: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl Record {
    /// The record as it stands at `now`: failures outside the window
    /// dropped, an ended lock cleared, repeats forgotten after idling.
    pub fn at(entry: &Entry, cfg: &PathwayLockout, now: i64) -> Record {
        let Some(mut r) = entry
            .value
            .as_deref()
            .and_then(|v| serde_json::from_str::<Record>(v).ok())
        else {
            return Record::default();
        };
        if r.h {
            return r;
        }
        let since = now.saturating_sub(cfg.window.as_secs() as i64);
        r.f.retain(|t| *t > since && *t <= now);
        if r.lu <= now {
            r.lu = 0;
        }
        if r.lu == 0 && r.last.saturating_add(cfg.reset_after.as_secs() as i64) <= now {
            r.r = 0;
        }
        r
    }

    /// The record after `event`.
    pub fn apply(
        &self,
        event: Option<Event>,
        ladder: &Ladder,
        cfg: &PathwayLockout,
        now: i64,
    ) -> Record {
        let mut r = self.clone();
        match event {
            Some(Event::AuthFailure) if !r.h && r.lu <= now => {
                r.f.push(now);
                let keep = cfg.max_tracked.max(1) as usize;
                if r.f.len() > keep {
                    let cut = r.f.len() - keep;
                    r.f.drain(..cut);
                }
                r.last = now;
                if ladder.lock_after > 0 && r.f.len() as u32 >= ladder.lock_after {
                    r.r = r.r.saturating_add(1);
                    if ladder.hard_lock_after > 0 && r.r > ladder.hard_lock_after {
                        r.h = true;
                        r.lu = 0;
                    } else {
                        r.lu = now.saturating_add(ladder.lock_for(r.r).as_secs() as i64);
                    }
                    r.f.clear();
                }
            }
            Some(Event::AuthSuccess) if cfg.reset_on_success && !r.h && r.lu <= now => {
                r = Record::default();
            }
            _ => {}
        }
        r.exp = if r.h {
            0
        } else {
            r.lu.max(r.last.saturating_add(cfg.reset_after.as_secs() as i64))
        };
        r
    }

    /// Nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        self.f.is_empty() && self.lu == 0 && self.r == 0 && !self.h
    }

    /// What policies see of this key.
    pub fn state(&self, ladder: &Ladder, cfg: &PathwayLockout, now: i64) -> KeyState {
        let failures = self.f.len() as i64;
        let stage = if self.h {
            Stage::HardLock
        } else if self.lu > now {
            Stage::TemporaryLock
        } else if ladder.throttle_after > 0 && failures >= i64::from(ladder.throttle_after) {
            Stage::Throttle
        } else if ladder.challenge_after > 0 && failures >= i64::from(ladder.challenge_after) {
            Stage::Challenge
        } else {
            Stage::None
        };
        // When the stage eases: the lock ends, or enough failures leave the window.
        let retry_after = match stage {
            Stage::TemporaryLock => Some(self.lu - now),
            Stage::Throttle => {
                let over = failures - i64::from(ladder.throttle_after);
                self.f
                    .get(over as usize)
                    .map(|t| (t + cfg.window.as_secs() as i64 - now).max(1))
            }
            _ => None,
        };
        KeyState {
            failures,
            stage,
            locked_until: if self.lu > now { self.lu } else { 0 },
            repeat: i64::from(self.r),
            retry_after,
        }
    }
}

/// One key's facts, as policies see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Failures inside the window.
    pub failures: i64,
    /// Stage.
    pub stage: Stage,
    /// End of a temporary lock (seconds since the epoch), 0 if none.
    pub locked_until: i64,
    /// Temporary locks so far.
    pub repeat: i64,
    /// Seconds until the stage eases (temporary lock or throttle).
    pub retry_after: Option<i64>,
}

/// The store keys of a request on `pathway`: the account always, the pair
/// and the address when the request names a client address.
///
/// Account ids are compared without case; addresses in canonical form.
pub fn keys(namespace: &str, pathway: Pathway, req: &Request) -> Vec<(KeyKind, String)> {
    let p = pathway.as_str();
    let account = format!(
        "{}:{}",
        req.principal.kind,
        crate::normalise::account_id(&req.principal.id)
    );
    let mut keys = vec![(
        KeyKind::Account,
        format!("lk2:{p}:{namespace}:acct:{account}"),
    )];
    if let Some(ip) = req
        .context
        .ip
        .as_deref()
        .and_then(|i| i.parse::<std::net::IpAddr>().ok())
    {
        keys.push((
            KeyKind::AccountIp,
            format!("lk2:{p}:{namespace}:acip:{account}|{ip}"),
        ));
        keys.push((KeyKind::Ip, format!("lk2:{p}:{namespace}:ip:{ip}")));
    }
    keys
}

/// The write that stores `next` over `entry`, if anything changes.
pub fn write(entry: &Entry, current: &Record, next: &Record) -> Option<Write> {
    if next == current && entry.value.is_some() {
        return None;
    }
    let value = if next.is_empty() {
        None
    } else {
        serde_json::to_string(next).ok()
    };
    if value.is_none() && entry.version == 0 {
        return None;
    }
    Some(Write {
        key: entry.key.clone(),
        value,
        expected_version: entry.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PathwayLockout;

    fn entry(r: &Record) -> Entry {
        Entry {
            key: "k".into(),
            value: serde_json::to_string(r).ok(),
            version: 1,
        }
    }

    #[test]
    fn ladder_climbs_locks_grows_and_hardens() {
        let cfg = PathwayLockout::authentic();
        let ladder = &cfg.account_ip;
        let mut r = Record::default();
        let mut now = 1_000_000;
        let mut stages = Vec::new();
        for _ in 0..10 {
            r = Record::at(&entry(&r), &cfg, now).apply(
                Some(Event::AuthFailure),
                ladder,
                &cfg,
                now,
            );
            stages.push(r.state(ladder, &cfg, now).stage);
            now += 1;
        }
        assert_eq!(stages[1], Stage::None);
        assert_eq!(stages[2], Stage::Challenge);
        assert_eq!(stages[4], Stage::Throttle);
        assert_eq!(stages[9], Stage::TemporaryLock);
        assert_eq!(r.lu - (now - 1), 300, "first lock is 5 minutes");
        // Failures during the lock change nothing.
        let during =
            Record::at(&entry(&r), &cfg, now).apply(Some(Event::AuthFailure), ladder, &cfg, now);
        assert_eq!(during.f.len(), 0);
        // Second and third locks double; the fourth is hard.
        let mut lens = vec![];
        for _ in 0..3 {
            now = r.lu + 1;
            for _ in 0..10 {
                r = Record::at(&entry(&r), &cfg, now).apply(
                    Some(Event::AuthFailure),
                    ladder,
                    &cfg,
                    now,
                );
            }
            lens.push(if r.h { -1 } else { r.lu - now });
        }
        assert_eq!(lens, [600, 1200, -1]);
        assert_eq!(
            r.state(ladder, &cfg, now + 10_000_000).stage,
            Stage::HardLock
        );
        // A success does not lift a hard lock.
        let s =
            Record::at(&entry(&r), &cfg, now).apply(Some(Event::AuthSuccess), ladder, &cfg, now);
        assert!(s.h);
    }

    #[test]
    fn window_slides_and_repeats_expire() {
        let cfg = PathwayLockout::authentic();
        let ladder = &cfg.account_ip;
        let r = Record {
            f: vec![100, 200, 300],
            last: 300,
            r: 2,
            ..Record::default()
        };
        let at = |now| Record::at(&entry(&r), &cfg, now);
        assert_eq!(at(301).f.len(), 3);
        assert_eq!(at(100 + 900).f.len(), 2, "the oldest left the 15m window");
        assert_eq!(at(300 + 86_400).r, 0, "repeats forgotten after a day idle");
        assert_eq!(at(300 + 86_399).r, 2);
        assert!(at(301).state(ladder, &cfg, 301).stage == Stage::Challenge);
    }
}
