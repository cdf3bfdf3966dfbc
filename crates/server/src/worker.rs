//! A loaded model version: its metadata, its request queue and the instance threads that own
//! copies of the model.
//!
//! Requests are pushed into a [`Batcher`] (the pure dynamic-batching state machine from core)
//! behind a mutex that is held only to push or to pick the next batch; a full queue answers 503
//! at once. Each instance thread (an OS thread, never the async runtime) waits on a condvar,
//! prunes requests whose client went away or whose deadline passed, and runs the batch the
//! batcher hands it as one forward pass; results go back by index through each request's
//! `oneshot`. A panic in the model fails that batch only. When the last [`Servable`] handle is
//! dropped the queue is closed and the threads exit once it is empty.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use aiserve_core::batching::{BatchPolicy, Batcher, Decision, Pending};
use aiserve_core::config::VersionConfig;
use aiserve_core::tensor::{BatchLimits, ImageSpec};
use aiserve_core::{BackendError, ImageBatch, ImageClassifier, ModelName, Version};
use tokio::sync::oneshot;

use crate::error::ApiError;

enum JobError {
    Backend(BackendError),
    Expired,
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, JobError>>;

struct Job {
    batch: ImageBatch,
    reply: Reply,
}

struct Queue {
    batcher: Batcher<Job>,
    closed: bool,
}

struct Shared {
    /// The batcher; held only while pushing a request or choosing a batch, never during a
    /// forward pass.
    queue: Mutex<Queue>,
    /// Wakes instance threads when a request arrives or the queue closes.
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A model version that is ready to serve. Holding an `Arc<Servable>` keeps it alive.
pub struct Servable {
    pub model: ModelName,
    pub version: Version,
    pub config: VersionConfig,
    pub spec: ImageSpec,
    pub max_batch: usize,
    shared: Arc<Shared>,
}

impl Servable {
    /// Starts one thread per loaded copy in `instances` (each already warmed up).
    pub fn start(
        model_name: ModelName,
        version: Version,
        config: VersionConfig,
        instances: Vec<Box<dyn ImageClassifier>>,
        policy: BatchPolicy,
    ) -> std::io::Result<Self> {
        let max_batch = policy.max_batch_size;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { batcher: Batcher::new(policy), closed: false }),
            ready: Condvar::new(),
        });
        for (i, model) in instances.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("model-{model_name}-{version}-{i}"))
                .spawn(move || instance_thread(&shared, model))?;
        }
        let spec = ImageSpec::from(&config.input);
        Ok(Self { model: model_name, version, config, spec, max_batch, shared })
    }

    pub fn limits(&self) -> BatchLimits {
        BatchLimits { max_batch: self.max_batch }
    }

    /// Runs a validated batch through the model; probabilities per image. Answers 504 if the
    /// deadline passes first (the request is then dropped from the queue, or its result ignored).
    pub async fn classify(&self, batch: ImageBatch, deadline: Option<Instant>) -> Result<Vec<Vec<f32>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        let size = batch.n;
        {
            let mut q = self.shared.lock();
            if let Err((_, full)) = q.batcher.push(Job { batch, reply }, size, Instant::now(), deadline) {
                return Err(ApiError::Overloaded {
                    model: self.model.to_string(),
                    version: self.version.to_string(),
                    queued: full.limit,
                });
            }
        }
        self.shared.ready.notify_one();
        let outcome = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), rx).await {
                Ok(r) => r,
                Err(_) => Ok(Err(JobError::Expired)),
            },
            None => rx.await,
        };
        let version = self.version.to_string();
        match outcome {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(JobError::Expired)) => Err(ApiError::Timeout),
            Ok(Err(JobError::Backend(e))) => Err(ApiError::backend(self.model.as_str(), &version, &e)),
            Err(_) => Err(ApiError::backend(
                self.model.as_str(),
                &version,
                &BackendError("model thread dropped the request".into()),
            )),
        }
    }
}

impl Drop for Servable {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

fn instance_thread(shared: &Shared, mut model: Box<dyn ImageClassifier>) {
    let mut q = shared.lock();
    loop {
        let now = Instant::now();
        for expired in q.batcher.prune(now, |job| !job.reply.is_closed()) {
            let _ = expired.item.reply.send(Err(JobError::Expired));
        }
        match q.batcher.next(now) {
            Decision::Run(batch) => {
                drop(q);
                run_batch(model.as_mut(), batch);
                q = shared.lock();
            }
            Decision::WaitUntil(t) => {
                q = shared.ready.wait_timeout(q, t.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner()).0;
            }
            Decision::Idle if q.closed => return,
            Decision::Idle => q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

fn run_batch(model: &mut dyn ImageClassifier, jobs: Vec<Pending<Job>>) {
    let total: usize = jobs.iter().map(|j| j.item.batch.n).sum();
    let result = if jobs.len() == 1 {
        catch_unwind(AssertUnwindSafe(|| model.predict(&jobs[0].item.batch)))
    } else {
        let (all, _) = ImageBatch::concat(&jobs.iter().map(|j| &j.item.batch).collect::<Vec<_>>());
        catch_unwind(AssertUnwindSafe(|| model.predict(&all)))
    };
    let result = result.unwrap_or_else(|_| Err(BackendError("the model panicked".into())));
    match result {
        Ok(rows) if rows.len() == total => {
            let mut rows = rows.into_iter();
            for job in jobs {
                let mine: Vec<_> = rows.by_ref().take(job.item.batch.n).collect();
                let _ = job.item.reply.send(Ok(mine));
            }
        }
        Ok(rows) => {
            let err = BackendError(format!("model returned {} rows for {total} images", rows.len()));
            jobs.into_iter().for_each(|j| drop(j.item.reply.send(Err(JobError::Backend(err.clone())))));
        }
        Err(e) => jobs.into_iter().for_each(|j| drop(j.item.reply.send(Err(JobError::Backend(e.clone()))))),
    }
}
