//! The lifecycle of one model version (TF Serving's states, plus a terminal failure).
//!
//! loading → available → unloading → end; loading → failed (a version is registered when its
//! load starts, so TF Serving's START is never observable here). A failed version keeps its
//! error message so the status endpoints can show it; it is retried only when its files change.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionState {
    Loading,
    Available,
    Unloading,
    End,
    Failed,
}

impl VersionState {
    /// The TF Serving REST state name (a failed load is reported as END with an error status).
    pub fn tf_serving_name(self) -> &'static str {
        match self {
            Self::Loading => "LOADING",
            Self::Available => "AVAILABLE",
            Self::Unloading => "UNLOADING",
            Self::End | Self::Failed => "END",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tf_serving_name())
    }
}
