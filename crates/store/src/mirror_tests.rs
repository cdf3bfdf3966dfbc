//! The mirror against an in-memory store (and one that fails on demand): new, rewritten and
//! removed versions and model files, a failed listing or download, restarts, and the cache
//! directory's guards.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aiserve_runtime::source::SyncReport;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::Mirror;

/// An in-memory store whose listing, or downloads of one key, fail when asked.
#[derive(Debug, Default)]
struct Flaky {
    inner: InMemory,
    fail_list: AtomicBool,
    fail_get: Mutex<Option<String>>,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky")
    }
}

fn refused() -> object_store::Error {
    object_store::Error::Generic { store: "Flaky", source: "connection refused".into() }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(&self, l: &Key, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(&self, l: &Key, o: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Key, o: GetOptions) -> Result<GetResult> {
        if self.fail_get.lock().unwrap().as_deref() == Some(l.as_ref()) {
            return Err(refused());
        }
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(&self, l: BoxStream<'static, Result<Key>>) -> BoxStream<'static, Result<Key>> {
        self.inner.delete_stream(l)
    }
    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.fail_list.load(Ordering::SeqCst) {
            return futures_util::stream::once(async { Err(refused()) }).boxed();
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Key, to: &Key, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

struct Fixture {
    store: Arc<Flaky>,
    cache: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self { store: Arc::default(), cache: tempfile::tempdir().unwrap() }
    }
    fn mirror(&self) -> Mirror {
        Mirror::new(self.store.clone(), Key::from("prod/models"), "memory:///prod/models".into(), self.dir()).unwrap()
    }
    fn dir(&self) -> std::path::PathBuf {
        self.cache.path().join("mirror")
    }
    async fn put(&self, key: &str, body: &str) {
        self.store.put(&Key::from(format!("prod/models/{key}")), body.to_owned().into()).await.unwrap();
    }
    async fn delete(&self, key: &str) {
        self.store.delete(&Key::from(format!("prod/models/{key}"))).await.unwrap();
    }
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir().join(rel)).ok()
    }
    /// Every entry under the mirror (dot files included), sorted.
    fn tree(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir(), &self.dir(), &mut out);
        out.sort();
        out
    }
}

fn report(downloaded: usize, removed: usize, failed: usize) -> SyncReport {
    SyncReport { downloaded, removed, failed }
}

#[tokio::test]
async fn new_rewritten_and_removed_versions_and_model_files() {
    let fx = Fixture::new();
    fx.put("digits/1/model.safetensors", "weights-1").await;
    fx.put("digits/1/sub/labels.txt", "a\nb").await;
    fx.put("digits/model.toml", "max_batch_size = 8").await;
    fx.put("digits/.tmp-9/x", "staging").await;
    fx.put("README.md", "not a model").await;
    let mirror = fx.mirror();
    assert_eq!(mirror.sync().await.unwrap(), report(2, 0, 0));
    assert_eq!(fx.read("digits/1/model.safetensors").as_deref(), Some("weights-1"));
    assert_eq!(fx.read("digits/1/sub/labels.txt").as_deref(), Some("a\nb"));
    assert_eq!(fx.read("digits/model.toml").as_deref(), Some("max_batch_size = 8"));
    let first = fx.tree();
    assert!(!first.iter().any(|p| p.contains("tmp-9") || p.contains("README") || p.contains(".dl-")), "{first:?}");
    // Nothing changed: nothing downloaded.
    assert_eq!(mirror.sync().await.unwrap(), report(0, 0, 0));
    // A rewritten file (new ETag) downloads its version again; a new version arrives.
    fx.put("digits/1/model.safetensors", "weights-1b").await;
    fx.put("digits/2/model.safetensors", "weights-2").await;
    assert_eq!(mirror.sync().await.unwrap(), report(2, 0, 0));
    assert_eq!(fx.read("digits/1/model.safetensors").as_deref(), Some("weights-1b"));
    assert_eq!(fx.read("digits/2/model.safetensors").as_deref(), Some("weights-2"));
    // A version deleted from the bucket leaves the mirror, and so does the model file.
    fx.delete("digits/1/model.safetensors").await;
    fx.delete("digits/1/sub/labels.txt").await;
    fx.delete("digits/model.toml").await;
    assert_eq!(mirror.sync().await.unwrap(), report(0, 1, 0));
    assert!(!fx.dir().join("digits/1").exists() && !fx.dir().join("digits/model.toml").exists());
    assert!(fx.dir().join("digits/2").is_dir());
    // The whole model leaves.
    fx.delete("digits/2/model.safetensors").await;
    assert_eq!(mirror.sync().await.unwrap(), report(0, 1, 0));
    assert!(!fx.dir().join("digits").exists());
}

#[tokio::test]
async fn a_failed_listing_keeps_the_mirror_and_a_failed_download_keeps_the_old_copy() {
    let fx = Fixture::new();
    fx.put("m/1/w", "one").await;
    let mirror = fx.mirror();
    mirror.sync().await.unwrap();
    let before = fx.tree();
    fx.store.fail_list.store(true, Ordering::SeqCst);
    let err = mirror.sync().await.unwrap_err().to_string();
    assert!(
        err.contains("memory:///prod/models: cannot list the repository") && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(fx.tree(), before, "a failed listing must not touch the mirror");
    fx.store.fail_list.store(false, Ordering::SeqCst);
    // Version 1 rewritten and version 2 added, but one of version 2's files cannot be fetched.
    fx.put("m/1/w", "one-b").await;
    fx.put("m/2/a", "two-a").await;
    fx.put("m/2/b", "two-b").await;
    *fx.store.fail_get.lock().unwrap() = Some("prod/models/m/2/b".into());
    assert_eq!(mirror.sync().await.unwrap(), report(1, 0, 1));
    assert_eq!(fx.read("m/1/w").as_deref(), Some("one-b"));
    let tree = fx.tree();
    assert!(!tree.iter().any(|p| p.starts_with("m/2") || p.contains(".dl-")), "no partial version: {tree:?}");
    // Fixed: the next round brings it.
    *fx.store.fail_get.lock().unwrap() = None;
    assert_eq!(mirror.sync().await.unwrap(), report(1, 0, 0));
    assert_eq!(fx.read("m/2/b").as_deref(), Some("two-b"));
}

#[tokio::test]
async fn a_restart_downloads_only_what_changed_and_cleans_interrupted_downloads() {
    let fx = Fixture::new();
    fx.put("m/1/w", "one").await;
    fx.put("m/2/w", "two").await;
    let mirror = fx.mirror();
    assert_eq!(mirror.sync().await.unwrap(), report(2, 0, 0));
    drop(mirror);
    // What an interrupted download leaves behind.
    std::fs::create_dir_all(fx.dir().join("m/.dl-3")).unwrap();
    std::fs::write(fx.dir().join("m/.dl-3/w"), "partial").unwrap();
    fx.put("m/2/w", "two-b").await;
    let mirror = fx.mirror();
    assert_eq!(mirror.sync().await.unwrap(), report(1, 0, 0));
    assert_eq!(fx.read("m/2/w").as_deref(), Some("two-b"));
    assert!(!fx.dir().join("m/.dl-3").exists());
}

#[tokio::test]
async fn the_cache_must_be_the_mirrors_own() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.dir()).unwrap();
    std::fs::write(fx.dir().join("precious.txt"), "a user's file").unwrap();
    let err = Mirror::new(fx.store.clone(), Key::from("p"), "s".into(), fx.dir()).err().unwrap().to_string();
    assert!(err.contains("is not a repository mirror"), "{err}");
    assert!(fx.dir().join("precious.txt").exists());
    std::fs::remove_file(fx.dir().join("precious.txt")).unwrap();
    let held = fx.mirror();
    let err = Mirror::new(fx.store.clone(), Key::from("p"), "s".into(), fx.dir()).err().unwrap().to_string();
    assert!(err.contains("another aiserve process"), "{err}");
    drop(held);
    fx.mirror();
}
