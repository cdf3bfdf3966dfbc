//! A loaded model version: its metadata and the dedicated OS thread that owns the model.
//!
//! Requests reach the thread through a bounded queue (`try_send`: a full queue answers 503 at
//! once instead of piling up). The thread blocks for the first request, then drains whatever else
//! is already queued, up to `max_batch` images, and runs them as one forward pass; results go
//! back by index through each request's `oneshot`. Requests whose client went away are dropped
//! before they cost compute. A panic in the model fails that batch only. The thread ends when the
//! last [`Servable`] handle (and so the queue's sender) is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};

use aiserve_core::config::VersionConfig;
use aiserve_core::tensor::{BatchLimits, ImageSpec};
use aiserve_core::{BackendError, ImageBatch, ImageClassifier, ModelName, Version};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, BackendError>>;

struct Job {
    batch: ImageBatch,
    reply: Reply,
}

/// A model version that is ready to serve. Holding an `Arc<Servable>` keeps it alive.
pub struct Servable {
    pub model: ModelName,
    pub version: Version,
    pub config: VersionConfig,
    pub spec: ImageSpec,
    pub max_batch: usize,
    /// Bounded queue to the model thread; its capacity is the model's `max_queue_size`.
    queue: mpsc::Sender<Job>,
}

impl Servable {
    /// Starts the model thread. `model` must already be loaded and warmed up.
    pub fn start(
        model_name: ModelName,
        version: Version,
        config: VersionConfig,
        model: Box<dyn ImageClassifier>,
        max_batch: usize,
        max_queue: usize,
    ) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel(max_queue.max(1));
        let spec = ImageSpec::from(&config.input);
        let name = format!("model-{model_name}-{version}");
        std::thread::Builder::new().name(name).spawn(move || model_thread(model, rx, max_batch))?;
        Ok(Self { model: model_name, version, config, spec, max_batch, queue })
    }

    pub fn limits(&self) -> BatchLimits {
        BatchLimits { max_batch: self.max_batch }
    }

    /// Runs a validated batch through the model; probabilities per image.
    pub async fn classify(&self, batch: ImageBatch) -> Result<Vec<Vec<f32>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        let version = self.version.to_string();
        self.queue.try_send(Job { batch, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Overloaded {
                model: self.model.to_string(),
                version: version.clone(),
                queued: self.queue.max_capacity(),
            },
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::backend(self.model.as_str(), &version, &BackendError("model thread has stopped".into()))
            }
        })?;
        match rx.await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(ApiError::backend(self.model.as_str(), &version, &e)),
            Err(_) => Err(ApiError::backend(
                self.model.as_str(),
                &version,
                &BackendError("model thread dropped the request".into()),
            )),
        }
    }
}

fn model_thread(mut model: Box<dyn ImageClassifier>, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        let mut images = first.batch.n;
        let mut jobs = vec![first];
        while images < max_batch {
            let Ok(job) = rx.try_recv() else { break };
            if job.reply.is_closed() {
                continue;
            }
            if images + job.batch.n > max_batch {
                pending = Some(job);
                break;
            }
            images += job.batch.n;
            jobs.push(job);
        }
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        run_batch(model.as_mut(), jobs);
    }
}

fn run_batch(model: &mut dyn ImageClassifier, jobs: Vec<Job>) {
    let result = if jobs.len() == 1 {
        catch_unwind(AssertUnwindSafe(|| model.predict(&jobs[0].batch)))
    } else {
        let (all, _) = ImageBatch::concat(&jobs.iter().map(|j| &j.batch).collect::<Vec<_>>());
        catch_unwind(AssertUnwindSafe(|| model.predict(&all)))
    };
    let result = result.unwrap_or_else(|_| Err(BackendError("the model panicked".into())));
    match result {
        Ok(rows) if rows.len() == jobs.iter().map(|j| j.batch.n).sum::<usize>() => {
            let mut rows = rows.into_iter();
            for job in jobs {
                let mine: Vec<_> = rows.by_ref().take(job.batch.n).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Ok(rows) => {
            let err = BackendError(format!(
                "model returned {} rows for {} images",
                rows.len(),
                jobs.iter().map(|j| j.batch.n).sum::<usize>()
            ));
            jobs.into_iter().for_each(|j| drop(j.reply.send(Err(err.clone()))));
        }
        Err(e) => jobs.into_iter().for_each(|j| drop(j.reply.send(Err(e.clone())))),
    }
}
