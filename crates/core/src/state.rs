//! The lifecycle of one model version (TF Serving's states, plus a terminal failure).
//!
//! start → loading → available → unloading → end; loading → failed. A failed version keeps its
//! error message so the status endpoints can show it; it is retried only when its files change.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionState {
    Start,
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
            Self::Start => "START",
            Self::Loading => "LOADING",
            Self::Available => "AVAILABLE",
            Self::Unloading => "UNLOADING",
            Self::End | Self::Failed => "END",
        }
    }

    /// The KServe / Triton repository-index state name.
    pub fn repository_name(self) -> &'static str {
        match self {
            Self::Available => "READY",
            Self::Start | Self::Loading => "LOADING",
            Self::Unloading => "UNLOADING",
            Self::End | Self::Failed => "UNAVAILABLE",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tf_serving_name())
    }
}
