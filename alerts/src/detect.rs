//! Detectors that turn a stream of events into alerts: [`DenialBursts`] and [`FirstUse`].
//!
//! Both are pure (no clock, no I/O: the caller passes the time and the history) and bounded
//! in memory, so they are unit-tested here and wrapped by [`crate::Alerts`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Whose denials are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BurstKey {
    /// Every denial met by one skill (any user).
    Skill(String),
    /// Every denial met by one user (any skill).
    User(String),
}

impl BurstKey {
    /// `skill` or `user`.
    pub fn scope(&self) -> &'static str {
        match self {
            BurstKey::Skill(_) => "skill",
            BurstKey::User(_) => "user",
        }
    }

    /// The skill's or the user's name.
    pub fn name(&self) -> &str {
        match self {
            BurstKey::Skill(name) | BurstKey::User(name) => name,
        }
    }
}

/// A burst found by [`DenialBursts::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// Whose denials.
    pub key: BurstKey,
    /// How many within the window (the threshold, at least).
    pub count: u32,
    /// The window.
    pub window: Duration,
}

#[derive(Debug, Default)]
struct Track {
    /// The most recent denials (at most `count` of them).
    times: VecDeque<Instant>,
    /// When this key last raised a burst alert.
    alerted: Option<Instant>,
}

/// Counts denials per skill and per user: `count` of them within `window` is a burst, and a
/// key raises at most one burst per window (a denial storm that goes on raises one alert per
/// window, not one per denial).
#[derive(Debug)]
pub struct DenialBursts {
    count: u32,
    window: Duration,
    tracks: HashMap<BurstKey, Track>,
}

impl DenialBursts {
    /// Most keys tracked; past it, keys quiet for a window are forgotten (and, if that is not
    /// enough, all of them: a burst may then be missed, memory is never unbounded).
    pub const MAX_KEYS: usize = 10_000;

    /// `count` denials (at least 1) within `window` is a burst.
    pub fn new(count: u32, window: Duration) -> DenialBursts {
        DenialBursts { count: count.max(1), window, tracks: HashMap::new() }
    }

    /// Notes a denial met by `skill` running for `user` at `now`; returns the bursts it
    /// completes (per skill, per user, or both).
    pub fn record(&mut self, skill: &str, user: &str, now: Instant) -> Vec<Burst> {
        if self.tracks.len() >= Self::MAX_KEYS {
            self.prune(now);
        }
        let mut bursts = Vec::new();
        for key in [BurstKey::Skill(skill.to_owned()), BurstKey::User(user.to_owned())] {
            let track = self.tracks.entry(key.clone()).or_default();
            track.times.push_back(now);
            while track.times.len() > self.count as usize {
                track.times.pop_front();
            }
            while track.times.front().is_some_and(|t| now.saturating_duration_since(*t) > self.window) {
                track.times.pop_front();
            }
            let quiet = track.alerted.is_none_or(|t| now.saturating_duration_since(t) >= self.window);
            if track.times.len() >= self.count as usize && quiet {
                track.alerted = Some(now);
                bursts.push(Burst { key, count: track.times.len() as u32, window: self.window });
            }
        }
        bursts
    }

    fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.tracks.retain(|_, t| {
            let last = t.times.back().copied().max(t.alerted);
            last.is_some_and(|last| now.saturating_duration_since(last) < window)
        });
        if self.tracks.len() >= Self::MAX_KEYS {
            self.tracks.clear();
        }
    }
}

/// A credential, as audit rows name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    /// Owner namespace.
    pub owner: String,
    /// Environment.
    pub environment: String,
    /// Name.
    pub name: String,
}

/// Who used a credential once: one `use` audit row, or the use being checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UseRecord {
    /// The skill.
    pub skill: Option<String>,
    /// The host it was sent to (HTTP uses).
    pub host: Option<String>,
    /// Who ran it (the audit row's actor).
    pub user: Option<String>,
}

/// Something a credential can be used by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// A skill.
    Skill(String),
    /// A host.
    Host(String),
    /// A user.
    User(String),
}

impl Party {
    /// `skill`, `host` or `user`.
    pub fn scope(&self) -> &'static str {
        match self {
            Party::Skill(_) => "skill",
            Party::Host(_) => "host",
            Party::User(_) => "user",
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        match self {
            Party::Skill(n) | Party::Host(n) | Party::User(n) => n,
        }
    }
}

fn parties(record: &UseRecord) -> impl Iterator<Item = Party> + '_ {
    let skill = record.skill.iter().map(|s| Party::Skill(s.clone()));
    let host = record.host.iter().map(|h| Party::Host(h.clone()));
    let user = record.user.iter().map(|u| Party::User(u.clone()));
    skill.chain(host).chain(user)
}

/// Which skills, hosts and users each credential has been used by: seeded once per
/// credential from its `use` audit rows (see [`FirstUse::seed`]), then kept up to date by
/// [`FirstUse::observe`], which reports the parties a use is the first by.
#[derive(Debug, Default)]
pub struct FirstUse {
    seen: HashMap<CredentialKey, HashSet<Party>>,
}

impl FirstUse {
    /// Most parties remembered per credential; past it, new ones are still reported but the
    /// set is not grown (a credential used by that many parties alerts on each new one).
    pub const MAX_PARTIES: usize = 100_000;
    /// Most credentials remembered; past it, the tracker starts again empty (and reseeds).
    pub const MAX_CREDENTIALS: usize = 10_000;

    /// An empty tracker.
    pub fn new() -> FirstUse {
        FirstUse::default()
    }

    /// Whether `credential`'s history has been loaded.
    pub fn is_seeded(&self, credential: &CredentialKey) -> bool {
        self.seen.contains_key(credential)
    }

    /// Loads `credential`'s past uses (its `use` audit rows, before the use being checked).
    pub fn seed(&mut self, credential: &CredentialKey, history: impl IntoIterator<Item = UseRecord>) {
        if self.seen.len() >= Self::MAX_CREDENTIALS && !self.seen.contains_key(credential) {
            self.seen.clear();
        }
        let set = self.seen.entry(credential.clone()).or_default();
        for record in history {
            for party in parties(&record) {
                if set.len() < Self::MAX_PARTIES {
                    set.insert(party);
                }
            }
        }
    }

    /// Notes a use of `credential`; returns the parties it had never been used by (empty when
    /// none). A credential never seeded counts as never used.
    pub fn observe(&mut self, credential: &CredentialKey, record: &UseRecord) -> Vec<Party> {
        if !self.is_seeded(credential) {
            self.seed(credential, []);
        }
        let set = self.seen.get_mut(credential).expect("seeded above");
        let mut new = Vec::new();
        for party in parties(record) {
            if !set.contains(&party) {
                if set.len() < Self::MAX_PARTIES {
                    set.insert(party.clone());
                }
                new.push(party);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_burst_is_n_denials_within_the_window_and_alerts_once_per_window() {
        let mut bursts = DenialBursts::new(3, 5 * MIN);
        let t0 = Instant::now();
        assert!(bursts.record("s", "u", t0).is_empty());
        assert!(bursts.record("s", "u", t0 + MIN).is_empty());
        let found = bursts.record("s", "u", t0 + 2 * MIN);
        assert_eq!(
            found,
            vec![
                Burst { key: BurstKey::Skill("s".into()), count: 3, window: 5 * MIN },
                Burst { key: BurstKey::User("u".into()), count: 3, window: 5 * MIN },
            ]
        );
        // The storm goes on: no second alert within the window of the first ...
        for i in 0..20 {
            assert!(bursts.record("s", "u", t0 + 2 * MIN + Duration::from_secs(i)).is_empty());
        }
        // ... and one more once a window has passed since it.
        assert_eq!(bursts.record("s", "u", t0 + 7 * MIN).len(), 2);
    }

    #[test]
    fn denials_spread_wider_than_the_window_are_no_burst() {
        let mut bursts = DenialBursts::new(3, 5 * MIN);
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(bursts.record("s", "u", t0 + 3 * MIN * i).is_empty(), "denial {i}");
        }
    }

    #[test]
    fn skills_and_users_are_counted_separately() {
        let mut bursts = DenialBursts::new(2, 5 * MIN);
        let t0 = Instant::now();
        assert!(bursts.record("a", "alice", t0).is_empty());
        // Another skill, same user: the user's burst, not a skill's.
        assert_eq!(
            bursts.record("b", "alice", t0).iter().map(|b| b.key.clone()).collect::<Vec<_>>(),
            vec![BurstKey::User("alice".into())]
        );
        // Skill a again for another user: skill a's burst.
        assert_eq!(
            bursts.record("a", "bob", t0).iter().map(|b| b.key.clone()).collect::<Vec<_>>(),
            vec![BurstKey::Skill("a".into())]
        );
    }

    #[test]
    fn a_threshold_of_one_alerts_on_the_first_denial() {
        let mut bursts = DenialBursts::new(1, MIN);
        assert_eq!(bursts.record("s", "u", Instant::now()).len(), 2);
    }

    #[test]
    fn keys_are_bounded() {
        let mut bursts = DenialBursts::new(5, MIN);
        let t0 = Instant::now();
        for i in 0..DenialBursts::MAX_KEYS {
            bursts.record(&format!("s{i}"), "u", t0);
        }
        bursts.record("late", "u", t0 + 2 * MIN);
        assert!(bursts.tracks.len() <= 3, "{}", bursts.tracks.len());
    }

    fn cred(name: &str) -> CredentialKey {
        CredentialKey { owner: "default".into(), environment: "dev".into(), name: name.into() }
    }

    fn used(skill: &str, host: Option<&str>, user: &str) -> UseRecord {
        UseRecord { skill: Some(skill.into()), host: host.map(Into::into), user: Some(user.into()) }
    }

    #[test]
    fn first_use_reports_only_parties_the_history_does_not_hold() {
        let mut first = FirstUse::new();
        let gh = cred("github");
        assert!(!first.is_seeded(&gh));
        first.seed(&gh, [used("issues", Some("api.github.com"), "ada"), used("issues", None, "bob")]);
        assert!(first.is_seeded(&gh));
        assert!(first.observe(&gh, &used("issues", Some("api.github.com"), "ada")).is_empty());
        assert!(first.observe(&gh, &used("issues", Some("api.github.com"), "bob")).is_empty());
        assert_eq!(
            first.observe(&gh, &used("issues", Some("evil.example"), "ada")),
            vec![Party::Host("evil.example".into())]
        );
        // Reported once: the second use by that host is not a first.
        assert!(first.observe(&gh, &used("issues", Some("evil.example"), "ada")).is_empty());
        assert_eq!(
            first.observe(&gh, &used("stealer", Some("api.github.com"), "eve")),
            vec![Party::Skill("stealer".into()), Party::User("eve".into())]
        );
    }

    #[test]
    fn an_unseeded_credential_counts_as_never_used_and_credentials_are_separate() {
        let mut first = FirstUse::new();
        let new = first.observe(&cred("a"), &used("s", Some("h"), "u"));
        assert_eq!(new.len(), 3);
        assert!(first.observe(&cred("a"), &used("s", Some("h"), "u")).is_empty());
        // The same parties are new for another credential, and for the same name elsewhere.
        assert_eq!(first.observe(&cred("b"), &used("s", Some("h"), "u")).len(), 3);
        let prod = CredentialKey { environment: "production".into(), ..cred("a") };
        assert_eq!(first.observe(&prod, &used("s", Some("h"), "u")).len(), 3);
    }
}
