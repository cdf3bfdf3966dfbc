//! Which store a repository URL names, opened with credentials from that cloud's standard
//! environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as the object_store crate reads them.
//!
//! Each repository gets two clients. The listing one gives up within seconds (a round must not
//! hang on an unreachable store while serving goes on); the download one has no overall time
//! limit (a model of many gigabytes takes minutes) but gives up on a read stalled for 30 s, and
//! resumes an interrupted body where it stopped. Timeouts set in the environment
//! (`AWS_TIMEOUT`, `AWS_READ_TIMEOUT`, ...) win over these.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::StoreError;

/// Schemes served from object storage rather than a local directory.
const REMOTE_SCHEMES: [&str; 10] = ["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https"];

/// Whether `repo` names a remote repository (`s3://`, `gs://`, `az://`, `http(s)://`, ...).
pub fn is_remote(repo: &str) -> bool {
    repo.split_once("://").is_some_and(|(scheme, _)| REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// The URL without user, password, query or fragment: what logs and errors may show.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// A directory name for the mirror of `repo` (the URL without secrets, made file-name safe, and
/// a hash so that distinct URLs never share one).
pub fn cache_dir_name(repo: &str) -> String {
    use sha2::Digest;
    let shown = Url::parse(repo).map(|u| redact(&u)).unwrap_or_else(|_| repo.to_owned());
    let safe: String = shown
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .take(80)
        .collect();
    let hash = sha2::Sha256::digest(shown.as_bytes());
    format!("{safe}-{:02x}{:02x}{:02x}{:02x}", hash[0], hash[1], hash[2], hash[3])
}

/// A repository's clients (see the module's notes), its prefix in the store and its URL as shown.
pub struct Opened {
    pub list: Arc<dyn ObjectStore>,
    pub get: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub shown: String,
}

/// How a client behaves: the listing one fails fast, the download one waits as long as data flows.
#[derive(Clone, Copy)]
enum Use {
    List,
    Get,
}

impl Use {
    fn retry(self) -> RetryConfig {
        match self {
            Use::List => RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
            },
            Use::Get => RetryConfig::default(),
        }
    }

    /// Client settings the environment did not set (`<PREFIX>TIMEOUT`, `<PREFIX>READ_TIMEOUT`).
    fn client(self, env_prefix: &str) -> Vec<(ClientConfigKey, &'static str)> {
        let unset = |name: &str| env_prefix.is_empty() || std::env::var_os(format!("{env_prefix}{name}")).is_none();
        let mut out = Vec::new();
        if unset("CONNECT_TIMEOUT") {
            out.push((ClientConfigKey::ConnectTimeout, "5s"));
        }
        match self {
            Use::List if unset("TIMEOUT") => out.push((ClientConfigKey::Timeout, "10s")),
            Use::Get if unset("TIMEOUT") => out.push((ClientConfigKey::Timeout, "24h")),
            _ => {}
        }
        if let (Use::Get, true) = (self, unset("READ_TIMEOUT")) {
            out.push((ClientConfigKey::ReadTimeout, "30s"));
        }
        out
    }
}

fn build(scheme: &ObjectStoreScheme, repo: &str, url: &Url, how: Use) -> object_store::Result<Arc<dyn ObjectStore>> {
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let b = how.client("AWS_").into_iter().fold(AmazonS3Builder::from_env().with_url(repo), |b, (k, v)| {
                b.with_config(AmazonS3ConfigKey::Client(k), v)
            });
            Arc::new(b.with_retry(how.retry()).build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let b = how
                .client("GOOGLE_")
                .into_iter()
                .fold(GoogleCloudStorageBuilder::from_env().with_url(repo), |b, (k, v)| {
                    b.with_config(GoogleConfigKey::Client(k), v)
                });
            Arc::new(b.with_retry(how.retry()).build()?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let b =
                how.client("AZURE_").into_iter().fold(MicrosoftAzureBuilder::from_env().with_url(repo), |b, (k, v)| {
                    b.with_config(AzureConfigKey::Client(k), v)
                });
            Arc::new(b.with_retry(how.retry()).build()?)
        }
        // A WebDAV server: the prefix is the URL's path, so the store is rooted at the host.
        _ => {
            let mut root = url.clone();
            root.set_path("/");
            let b = how
                .client("")
                .into_iter()
                .fold(HttpBuilder::new().with_url(root.as_str()), |b, (k, v)| b.with_config(k, v));
            Arc::new(b.with_retry(how.retry()).build()?)
        }
    })
}

/// Opens the repository at `repo`.
pub fn open(repo: &str) -> Result<Opened, StoreError> {
    let url = Url::parse(repo).map_err(|e| StoreError::Url(format!("{e}")))?;
    let shown = redact(&url);
    if url.password().is_some() || !url.username().is_empty() {
        return Err(StoreError::Url(format!(
            "{shown}: credentials in the URL are refused (they would end up in process listings); use the store's environment variables"
        )));
    }
    let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|e| StoreError::Url(format!("{shown}: {e}")))?;
    if matches!(scheme, ObjectStoreScheme::Local | ObjectStoreScheme::Memory) {
        return Err(StoreError::Url(format!("{shown}: {scheme:?} is not an object store")));
    }
    let open = |how| build(&scheme, repo, &url, how).map_err(|e| StoreError::Open(shown.clone(), e.to_string()));
    Ok(Opened { list: open(Use::List)?, get: open(Use::Get)?, prefix, shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_schemes() {
        for r in ["s3://b/p", "S3://b", "gs://b/p", "az://c/p", "abfss://c@a.dfs.core.windows.net/p", "https://h/r"] {
            assert!(is_remote(r), "{r}");
        }
        for r in ["models", "/srv/models", "file:///srv", "./s3://x", "ftp://h/x"] {
            assert!(!is_remote(r), "{r}");
        }
    }

    #[test]
    fn urls_are_shown_without_secrets_and_credentials_in_them_are_refused() {
        let u: Url = "https://user:pw@host/repo?sig=secret#f".parse().unwrap();
        assert_eq!(redact(&u), "https://host/repo");
        let err = open("s3://AKIA:secret@bucket/p").err().unwrap().to_string();
        assert!(err.contains("credentials in the URL") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn cache_names_are_file_names_without_secrets() {
        let a = cache_dir_name("s3://bucket/prod/models?token=secret");
        assert!(a.starts_with("s3___bucket_prod_models-") && !a.contains("secret") && !a.contains('/'), "{a}");
        assert_ne!(a, cache_dir_name("s3://bucket/prod/model"));
    }

    #[test]
    fn prefixes() {
        let s3 = open("s3://bucket/prod/models").unwrap();
        assert_eq!((s3.prefix.as_ref(), s3.shown.as_str()), ("prod/models", "s3://bucket/prod/models"));
        let dav = open("http://127.0.0.1:9/dav/models/").unwrap();
        assert_eq!(dav.prefix.as_ref(), "dav/models");
    }
}
