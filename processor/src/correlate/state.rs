//! The correlator's state as data: what a checkpoint saves and restores.
//!
//! [`CorrelatorState`] holds everything a [`Correlator`] knows: its
//! settings, per mail server the latest log time, the queue-run epoch and
//! the completed messages waiting for eviction, and per message the
//! lifecycle with its bookkeeping. Its serde form (JSON or any other
//! format) is versioned; a state written by another version is refused
//! rather than misread.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use exim_pilot_schema::lifecycle::Lifecycle;
use exim_pilot_schema::{MessageId, Zone};
use serde::{Deserialize, Serialize};

use super::message::{Detail, Tracked};
use super::{Correlator, CorrelatorConfig, HostTrack, KeyMap};

/// The version of the state format written by this build.
pub const STATE_VERSION: u32 = 1;

/// Why a saved state cannot be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// The state was written by an incompatible version.
    #[error(
        "correlator state version {found} cannot be read by this build (it reads version \
         {expected}); start correlation afresh from the logs"
    )]
    Version {
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The time zone is not one this build understands.
    #[error("correlator state names an unknown time zone {0:?}")]
    Zone(String),
    /// A message refers to a mail server the state does not list.
    #[error("correlator state is inconsistent: message {id} names mail server #{host}")]
    Host {
        /// The mail server's position.
        host: u32,
        /// The message.
        id: MessageId,
    },
}

/// Everything a [`Correlator`] knows, ready to be serialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrelatorState {
    version: u32,
    zone: String,
    grace_seconds: Option<i64>,
    stale_after_seconds: Option<i64>,
    #[serde(default)]
    keep_evicted: bool,
    hosts: Vec<SavedHost>,
    messages: Vec<SavedMessage>,
    dirty: Vec<(u32, MessageId)>,
    unreported: Vec<Lifecycle>,
    #[serde(default)]
    evicted: Vec<Lifecycle>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SavedHost {
    name: String,
    clock: Option<DateTime<Utc>>,
    queue_epoch: u64,
    expiring: Vec<(DateTime<Utc>, MessageId)>,
    last_sweep: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SavedMessage {
    host: u32,
    #[serde(flatten)]
    message: Tracked,
}

impl CorrelatorState {
    /// How many messages the state holds.
    pub fn messages(&self) -> usize {
        self.messages.len()
    }
}

impl Correlator {
    /// The whole state, for a checkpoint. Messages are listed in (host,
    /// id) order so that equal states serialise equally.
    pub fn save(&self) -> CorrelatorState {
        let hosts = self
            .hosts
            .iter()
            .map(|h| SavedHost {
                name: h.name.clone(),
                clock: h.clock,
                queue_epoch: h.queue_epoch,
                expiring: h.expiring.iter().copied().collect(),
                last_sweep: h.last_sweep,
            })
            .collect();
        let mut messages: Vec<SavedMessage> = self
            .messages
            .iter()
            .map(|(&(host, _), m)| SavedMessage {
                host,
                message: Tracked::clone(m),
            })
            .collect();
        messages.sort_by_key(|m| (m.host, m.message.lc.id));
        CorrelatorState {
            version: STATE_VERSION,
            zone: zone_name(self.zone),
            grace_seconds: self.config.grace.map(|d| d.num_seconds()),
            stale_after_seconds: self.config.stale_after.map(|d| d.num_seconds()),
            keep_evicted: self.config.keep_evicted,
            hosts,
            messages,
            dirty: self
                .dirty
                .iter()
                .filter(|k| self.messages.get(k).is_some_and(|m| m.track.dirty))
                .copied()
                .collect(),
            unreported: self.unreported.clone(),
            evicted: self.evicted.clone(),
        }
    }

    /// A correlator that continues from a saved state.
    pub fn restore(state: CorrelatorState) -> Result<Correlator, StateError> {
        if state.version != STATE_VERSION {
            return Err(StateError::Version {
                found: state.version,
                expected: STATE_VERSION,
            });
        }
        let zone = Zone::parse(&state.zone).ok_or_else(|| StateError::Zone(state.zone.clone()))?;
        let config = CorrelatorConfig {
            grace: state.grace_seconds.map(Duration::seconds),
            stale_after: state.stale_after_seconds.map(Duration::seconds),
            keep_evicted: state.keep_evicted,
        };

        let mut hosts = Vec::with_capacity(state.hosts.len());
        let mut host_ids = HashMap::new();
        for (i, h) in state.hosts.into_iter().enumerate() {
            host_ids.insert(h.name.clone(), i as u32);
            hosts.push(HostTrack {
                name: h.name,
                clock: h.clock,
                queue_epoch: h.queue_epoch,
                expiring: VecDeque::from(h.expiring),
                last_sweep: h.last_sweep,
            });
        }

        let mut messages = KeyMap::default();
        for saved in state.messages {
            let id = saved.message.lc.id;
            if saved.host as usize >= hosts.len() {
                return Err(StateError::Host {
                    host: saved.host,
                    id,
                });
            }
            messages.insert((saved.host, id), Box::new(saved.message));
        }

        Ok(Correlator {
            zone,
            config,
            hosts,
            host_ids,
            last_host: None,
            messages,
            dirty: state.dirty,
            unreported: state.unreported,
            evicted: state.evicted,
            track_changes: true,
            detail: Detail::Full,
        })
    }
}

/// A zone as [`Zone::parse`] reads it back.
fn zone_name(zone: Zone) -> String {
    match zone {
        Zone::Utc => "utc".to_string(),
        Zone::Local => "local".to_string(),
        Zone::Fixed(minutes) => {
            let sign = if minutes < 0 { '-' } else { '+' };
            let m = minutes.unsigned_abs();
            format!("{sign}{:02}{:02}", m / 60, m % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_survive_the_round_trip() {
        for zone in [Zone::Utc, Zone::Local, Zone::Fixed(-330), Zone::Fixed(120)] {
            assert_eq!(Zone::parse(&zone_name(zone)), Some(zone));
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let mut state = Correlator::new(Zone::Utc).save();
        state.version = 99;
        assert_eq!(
            Correlator::restore(state).err(),
            Some(StateError::Version {
                found: 99,
                expected: STATE_VERSION
            })
        );
    }
}
