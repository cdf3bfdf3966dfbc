//! Version policy: which of the versions on disk should be served (TF Serving / Triton vocabulary).
//!
//! In `model.toml`, exactly one of:
//! ```toml
//! [version_policy]
//! latest = 2          # the 2 highest version numbers (default: latest = 1)
//! # all = true        # every version on disk
//! # specific = [1, 3] # exactly these
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::Version;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub enum VersionPolicy {
    /// Serve the N highest versions.
    Latest(usize),
    /// Serve every version.
    All,
    /// Serve exactly these versions (those present on disk).
    Specific(BTreeSet<Version>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        Self::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions that should be served, given those present on disk.
    pub fn select(&self, on_disk: &BTreeSet<Version>) -> BTreeSet<Version> {
        match self {
            Self::Latest(n) => on_disk.iter().rev().take(*n).copied().collect(),
            Self::All => on_disk.clone(),
            Self::Specific(wanted) => on_disk.intersection(wanted).copied().collect(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Latest(0) => Err("`version_policy.latest` must be at least 1, got 0".into()),
            Self::Specific(v) if v.is_empty() => Err("`version_policy.specific` must list at least one version".into()),
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latest: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    specific: Option<Vec<u64>>,
}

impl TryFrom<RawPolicy> for VersionPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let policy = match (raw.latest, raw.all, raw.specific) {
            (Some(n), None, None) => Self::Latest(n),
            (None, Some(true), None) => Self::All,
            (None, None, Some(list)) => {
                if let Some(bad) = list.iter().find(|&&v| v == 0) {
                    return Err(format!("`version_policy.specific` versions must be positive, got {bad}"));
                }
                Self::Specific(list.into_iter().map(Version).collect())
            }
            _ => {
                return Err("`version_policy` needs exactly one of `latest = N`, `all = true`, `specific = [..]`".into())
            }
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl From<VersionPolicy> for RawPolicy {
    fn from(p: VersionPolicy) -> Self {
        match p {
            VersionPolicy::Latest(n) => Self { latest: Some(n), ..Self::default() },
            VersionPolicy::All => Self { all: Some(true), ..Self::default() },
            VersionPolicy::Specific(v) => {
                Self { specific: Some(v.into_iter().map(|v| v.0).collect()), ..Self::default() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u64]) -> BTreeSet<Version> {
        v.iter().copied().map(Version).collect()
    }

    #[test]
    fn selects() {
        let disk = set(&[1, 2, 5, 10]);
        assert_eq!(VersionPolicy::Latest(1).select(&disk), set(&[10]));
        assert_eq!(VersionPolicy::Latest(2).select(&disk), set(&[5, 10]));
        assert_eq!(VersionPolicy::Latest(9).select(&disk), disk);
        assert_eq!(VersionPolicy::All.select(&disk), disk);
        assert_eq!(VersionPolicy::Specific(set(&[2, 3])).select(&disk), set(&[2]));
        assert_eq!(VersionPolicy::Latest(1).select(&set(&[])), set(&[]));
    }

    #[derive(Deserialize)]
    struct Wrap {
        version_policy: VersionPolicy,
    }

    fn parse(s: &str) -> Result<VersionPolicy, String> {
        toml::from_str::<Wrap>(s).map(|w| w.version_policy).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_strictly() {
        assert_eq!(parse("[version_policy]\nlatest = 3").unwrap(), VersionPolicy::Latest(3));
        assert_eq!(parse("[version_policy]\nall = true").unwrap(), VersionPolicy::All);
        assert_eq!(parse("[version_policy]\nspecific = [4, 1]").unwrap(), VersionPolicy::Specific(set(&[1, 4])));
        assert!(parse("[version_policy]\nlatest = 0").unwrap_err().contains("at least 1"));
        assert!(parse("[version_policy]\nlatest = 1\nall = true").unwrap_err().contains("exactly one"));
        assert!(parse("[version_policy]\nnewest = 1").is_err());
        assert!(parse("[version_policy]\nspecific = [0]").unwrap_err().contains("positive"));
    }
}
