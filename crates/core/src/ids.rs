//! Validated model names and numeric versions.
//!
//! A model name becomes a directory name under the repository and a URL path segment, so it is
//! restricted to a safe alphabet: no separators, no `..`, no leading dot, bounded length.

use std::fmt;
use std::str::FromStr;

use crate::error::InputError;

/// Longest model name accepted, in bytes.
pub const MAX_MODEL_NAME_LEN: usize = 128;

/// A model name that is safe to use as a path segment: `[A-Za-z0-9][A-Za-z0-9_.-]*`, no `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName(String);

impl ModelName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModelName {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| InputError::invalid("model", format!("{reason}, got {s:?}"));
        if s.is_empty() {
            return Err(invalid("model name must not be empty"));
        }
        if s.len() > MAX_MODEL_NAME_LEN {
            return Err(invalid(&format!("model name must be at most {MAX_MODEL_NAME_LEN} bytes")));
        }
        let first_ok = s.as_bytes()[0].is_ascii_alphanumeric();
        let rest_ok = s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !first_ok || !rest_ok || s.contains("..") {
            return Err(invalid(
                "model name must start with a letter or digit and use only letters, digits, '_', '-' and '.' (no '..')",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A model version: a positive integer, as in TF Serving and Triton repositories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl FromStr for Version {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InputError::invalid("version", format!("version must be a positive integer, got {s:?}"));
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match s.parse::<u64>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(v) => Ok(Self(v)),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        for ok in ["digits", "minilm-L6", "a.b_c", "9"] {
            assert!(ok.parse::<ModelName>().is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a\\b", "a..b", "-x", "é", &"x".repeat(129)] {
            let err = bad.parse::<ModelName>().unwrap_err();
            assert_eq!(err.field(), "model", "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!("12".parse::<Version>().unwrap(), Version(12));
        for bad in ["0", "", "-1", "1.0", "+3", "99999999999999999999", "abc"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }
}
