//! The pure decision of what the version manager does next for one model.
//!
//! Given the versions on disk (with a fingerprint of their files), the versions the server holds
//! and their states, and the policy, `plan` returns loads and unloads. It preserves availability:
//! a version that leaves the desired set is unloaded only once a desired version is available
//! (or its files are gone, or nothing is desired any more), so a bad new version never leaves a
//! model without a serving version. A failed version is retried only when its files change.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::Version;
use crate::policy::VersionPolicy;
use crate::state::VersionState;

/// Changes whenever a version directory's files change (sizes and modification times).
pub type Fingerprint = u64;

/// What the server holds for one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveVersion {
    pub state: VersionState,
    /// Fingerprint of the files the last load attempt read.
    pub fingerprint: Fingerprint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Load(Version),
    Unload(Version),
    /// Drop a failed or ended version's record: it is neither on disk nor desired.
    Forget(Version),
}

pub fn plan(
    policy: &VersionPolicy,
    on_disk: &BTreeMap<Version, Fingerprint>,
    live: &BTreeMap<Version, LiveVersion>,
) -> Vec<Action> {
    let disk: BTreeSet<Version> = on_disk.keys().copied().collect();
    let desired = policy.select(&disk);
    let mut actions = Vec::new();

    for v in &desired {
        let load = match live.get(v) {
            None => true,
            Some(l) => match l.state {
                VersionState::End => true,
                VersionState::Failed => on_disk.get(v) != Some(&l.fingerprint),
                _ => false,
            },
        };
        if load {
            actions.push(Action::Load(*v));
        }
    }

    let desired_available = desired.iter().any(|v| live.get(v).is_some_and(|l| l.state == VersionState::Available));
    for (v, l) in live {
        if desired.contains(v) {
            continue;
        }
        match l.state {
            VersionState::Available if desired_available || desired.is_empty() || !disk.contains(v) => {
                actions.push(Action::Unload(*v))
            }
            VersionState::Failed | VersionState::End if !disk.contains(v) => actions.push(Action::Forget(*v)),
            _ => {}
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use VersionState::*;

    fn disk(v: &[u64]) -> BTreeMap<Version, Fingerprint> {
        v.iter().map(|&v| (Version(v), 7)).collect()
    }

    fn live(v: &[(u64, VersionState)]) -> BTreeMap<Version, LiveVersion> {
        v.iter().map(|&(v, state)| (Version(v), LiveVersion { state, fingerprint: 7 })).collect()
    }

    const LATEST: VersionPolicy = VersionPolicy::Latest(1);

    #[test]
    fn loads_the_latest_on_start() {
        assert_eq!(plan(&LATEST, &disk(&[1, 2]), &live(&[])), vec![Load(Version(2))]);
    }

    #[test]
    fn new_version_is_loaded_before_the_old_one_is_retired() {
        let step1 = plan(&LATEST, &disk(&[1, 2]), &live(&[(1, Available)]));
        assert_eq!(step1, vec![Load(Version(2))]);
        let step2 = plan(&LATEST, &disk(&[1, 2]), &live(&[(1, Available), (2, Loading)]));
        assert_eq!(step2, vec![]);
        let step3 = plan(&LATEST, &disk(&[1, 2]), &live(&[(1, Available), (2, Available)]));
        assert_eq!(step3, vec![Unload(Version(1))]);
    }

    #[test]
    fn failed_new_version_keeps_the_old_one_serving() {
        let p = plan(&LATEST, &disk(&[1, 2]), &live(&[(1, Available), (2, Failed)]));
        assert_eq!(p, vec![]);
    }

    #[test]
    fn failed_version_is_retried_when_its_files_change() {
        let mut d = disk(&[1, 2]);
        d.insert(Version(2), 8);
        let p = plan(&LATEST, &d, &live(&[(1, Available), (2, Failed)]));
        assert_eq!(p, vec![Load(Version(2))]);
    }

    #[test]
    fn removed_version_is_unloaded_and_older_one_comes_back() {
        let p = plan(&LATEST, &disk(&[1]), &live(&[(2, Available)]));
        assert_eq!(p, vec![Load(Version(1)), Unload(Version(2))]);
    }

    #[test]
    fn removed_model_unloads_everything() {
        let p = plan(&LATEST, &disk(&[]), &live(&[(2, Available), (3, Failed)]));
        assert_eq!(p, vec![Unload(Version(2)), Forget(Version(3))]);
    }

    #[test]
    fn all_and_specific() {
        let p = plan(&VersionPolicy::All, &disk(&[1, 2]), &live(&[(1, Available)]));
        assert_eq!(p, vec![Load(Version(2))]);
        let only1 = VersionPolicy::Specific([Version(1)].into());
        let p = plan(&only1, &disk(&[1, 2]), &live(&[(1, Available), (2, Available)]));
        assert_eq!(p, vec![Unload(Version(2))]);
    }

    #[test]
    fn unloaded_version_that_becomes_desired_again_is_reloaded() {
        let p = plan(&LATEST, &disk(&[3]), &live(&[(3, End)]));
        assert_eq!(p, vec![Load(Version(3))]);
    }
}
