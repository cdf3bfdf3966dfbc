//! API keys: the key file, the scopes a key grants, and constant-time lookup.
//!
//! File format (`--api-keys-file`), one key per line, `#` starts a comment:
//!
//! ```text
//! <key> <scope>[,<scope>...] [rps=<requests per second>] [concurrency=<requests at once>]
//! ```
//!
//! Scopes: `infer` (prediction, metadata and status routes), `admin` (model management),
//! `metrics` (`/metrics`). Keys are at least 16 printable characters. Only a SHA-256 digest of
//! each key is kept in memory; a presented key is hashed and compared with every stored digest
//! in constant time, so neither timing nor an early exit reveals which bytes matched. Errors
//! name the line, never the key.

use std::num::NonZeroU32;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Infer,
    Admin,
    Metrics,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Infer => "infer",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "infer" => Some(Self::Infer),
            "admin" => Some(Self::Admin),
            "metrics" => Some(Self::Metrics),
            _ => None,
        }
    }
}

/// Per-key limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub requests_per_second: Option<NonZeroU32>,
    pub concurrency: Option<NonZeroU32>,
}

/// One configured key (its digest, never the key).
#[derive(Clone, Debug)]
pub struct KeyEntry {
    digest: [u8; 32],
    /// Line number in the key file: how logs and metrics name the key.
    pub line: usize,
    pub scopes: Vec<Scope>,
    pub limits: KeyLimits,
}

impl KeyEntry {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The name used for this key in logs: its line in the key file.
    pub fn label(&self) -> String {
        format!("key@line{}", self.line)
    }
}

const MIN_KEY_LEN: usize = 16;

/// Parses a key file; `defaults` apply where a line sets no limit.
pub fn parse(text: &str, defaults: KeyLimits) -> Result<Vec<KeyEntry>, String> {
    let mut out: Vec<KeyEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut parts = content.split_whitespace();
        let key = parts.next().expect("non-empty line has a first word");
        if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "line {line}: a key must be at least {MIN_KEY_LEN} printable ASCII characters without spaces"
            ));
        }
        let scopes_text =
            parts.next().ok_or_else(|| format!("line {line}: the key has no scopes (infer, admin, metrics)"))?;
        let mut scopes = Vec::new();
        for s in scopes_text.split(',').filter(|s| !s.is_empty()) {
            let scope =
                Scope::parse(s).ok_or_else(|| format!("line {line}: unknown scope {s:?} (infer, admin, metrics)"))?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err(format!("line {line}: the key has no scopes (infer, admin, metrics)"));
        }
        let mut limits = defaults;
        for opt in parts {
            let (name, value) = opt
                .split_once('=')
                .ok_or_else(|| format!("line {line}: expected `rps=N` or `concurrency=N`, got {opt:?}"))?;
            let n: NonZeroU32 = value
                .parse()
                .map_err(|_| format!("line {line}: `{name}` must be a positive integer, got {value:?}"))?;
            match name {
                "rps" => limits.requests_per_second = Some(n),
                "concurrency" => limits.concurrency = Some(n),
                other => return Err(format!("line {line}: unknown option `{other}` (rps, concurrency)")),
            }
        }
        let digest = digest(key);
        if out.iter().any(|e| bool::from(e.digest.ct_eq(&digest))) {
            return Err(format!("line {line}: the same key appears twice"));
        }
        out.push(KeyEntry { digest, line, scopes, limits });
    }
    Ok(out)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The index of the entry for a presented key, comparing against every entry in constant time.
pub fn lookup(entries: &[KeyEntry], presented: &str) -> Option<usize> {
    let d = digest(presented);
    let mut found = None;
    for (i, e) in entries.iter().enumerate() {
        if bool::from(e.digest.ct_eq(&d)) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# team keys\n\
        aaaaaaaaaaaaaaaa-infer infer\n\
        \n\
        bbbbbbbbbbbbbbbb-admin admin,metrics,infer rps=5 concurrency=2  # ops\n";

    #[test]
    fn parses_scopes_limits_and_comments() {
        let defaults = KeyLimits { requests_per_second: NonZeroU32::new(100), concurrency: None };
        let keys = parse(FILE, defaults).unwrap();
        assert_eq!(keys.len(), 2);
        let infer = &keys[lookup(&keys, "aaaaaaaaaaaaaaaa-infer").unwrap()];
        assert_eq!((infer.line, infer.scopes.clone()), (2, vec![Scope::Infer]));
        assert_eq!(infer.limits, defaults);
        let admin = &keys[lookup(&keys, "bbbbbbbbbbbbbbbb-admin").unwrap()];
        assert!(admin.allows(Scope::Admin) && admin.allows(Scope::Metrics) && admin.allows(Scope::Infer));
        assert_eq!(admin.limits.requests_per_second, NonZeroU32::new(5));
        assert_eq!(admin.limits.concurrency, NonZeroU32::new(2));
        assert!(lookup(&keys, "aaaaaaaaaaaaaaaa-infeR").is_none());
        assert!(lookup(&keys, "").is_none());
    }

    #[test]
    fn errors_name_the_line_and_never_the_key() {
        let cases = [
            ("short infer", "at least 16"),
            ("cccccccccccccccccc", "no scopes"),
            ("cccccccccccccccccc write", "unknown scope \"write\""),
            ("cccccccccccccccccc infer rps=0", "positive integer"),
            ("cccccccccccccccccc infer burst=3", "unknown option"),
            ("cccccccccccccccccc infer\ncccccccccccccccccc admin", "twice"),
        ];
        for (text, want) in cases {
            let err = parse(text, KeyLimits::default()).unwrap_err();
            assert!(err.contains(want) && err.starts_with("line "), "{text:?}: {err}");
            assert!(!err.contains("cccccccccccccccccc"), "the key leaked: {err}");
        }
    }
}
