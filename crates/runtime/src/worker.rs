//! The request queue of a loaded model version and the instance threads that drain it.
//!
//! Requests are pushed into a [`Batcher`] (the pure dynamic-batching state machine from core)
//! behind a mutex that is held only to push or to pick the next batch; a full queue answers 503
//! at once. Each instance thread (an OS thread, never the async runtime) owns one copy of the
//! model, waits on a condvar, prunes requests whose client went away or whose deadline passed,
//! and runs the batch the batcher hands it as one call of its [`Runner`]; results go back through
//! each request's `oneshot`. A panic in the model fails that batch only. When the [`Queue`] is
//! dropped the threads exit once it is empty.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use aiserve_core::batching::{BatchPolicy, Batcher, Decision, Refused};
use aiserve_core::BackendError;
use tokio::sync::oneshot;

use crate::error::Error;

/// One model copy as the queue sees it: takes the inputs of several requests (owned, so a lone
/// request's tensors can move into the model without a copy), gives one output per request, in
/// order.
pub trait Runner: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    fn run(&mut self, inputs: Vec<Self::Input>) -> Result<Vec<Self::Output>, BackendError>;

    /// The items (images, texts) one input holds, for the statistics' inference count.
    fn items(input: &Self::Input) -> usize;
}

enum JobError {
    Backend(BackendError),
    Expired,
}

struct Job<I, O> {
    input: I,
    reply: oneshot::Sender<Result<O, JobError>>,
}

struct State<I, O> {
    batcher: Batcher<Job<I, O>>,
    closed: bool,
}

struct Shared<I, O> {
    /// The batcher; held only while pushing a request or choosing a batch, never during a
    /// forward pass.
    state: Mutex<State<I, O>>,
    /// Wakes instance threads when a request arrives or the queue closes.
    ready: Condvar,
    metrics: QueueMetrics,
}

/// This queue's series of the process metrics.
struct QueueMetrics {
    depth: prometheus::IntGauge,
    wait: prometheus::Histogram,
    /// Requests per forward pass.
    batch: prometheus::Histogram,
    /// Batch units (images or tokens) per forward pass.
    units: prometheus::Histogram,
    /// The version's cumulative statistics (queue waits, passes, items).
    stats: Arc<crate::stats::VersionStats>,
}

/// What the `size` of a queued request counts, for the metrics.
#[derive(Clone, Copy, Debug)]
pub enum BatchUnit {
    Images,
    /// Rows along dimension 0 of a graph model's tensors.
    Rows,
    Tokens,
}

impl<I, O> Shared<I, O> {
    fn lock(&self) -> MutexGuard<'_, State<I, O>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where requests for one model version wait for an instance thread.
pub struct Queue<R: Runner> {
    model: String,
    version: String,
    shared: Arc<Shared<R::Input, R::Output>>,
}

impl<R: Runner> Queue<R> {
    /// Starts one thread per model copy in `instances` (each already warmed up).
    pub fn start(
        model: &str,
        version: &str,
        instances: Vec<R>,
        policy: BatchPolicy,
        unit: BatchUnit,
    ) -> std::io::Result<Self> {
        let m = &crate::metrics::METRICS;
        let units = match unit {
            BatchUnit::Images => &m.batch_images,
            BatchUnit::Rows => &m.batch_rows,
            BatchUnit::Tokens => &m.batch_tokens,
        };
        let metrics = QueueMetrics {
            depth: m.queue_depth.with_label_values(&[model, version]),
            wait: m.queue_seconds.with_label_values(&[model, version]),
            batch: m.batch_size.with_label_values(&[model, version]),
            units: units.with_label_values(&[model, version]),
            stats: Default::default(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State { batcher: Batcher::new(policy), closed: false }),
            ready: Condvar::new(),
            metrics,
        });
        for (i, runner) in instances.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("model-{model}-{version}-{i}"))
                .spawn(move || supervise(&shared, runner))?;
        }
        Ok(Self { model: model.to_owned(), version: version.to_owned(), shared })
    }

    /// This version's cumulative statistics.
    pub fn stats(&self) -> &Arc<crate::stats::VersionStats> {
        &self.shared.metrics.stats
    }

    /// Requests waiting for an instance thread now.
    pub fn depth(&self) -> usize {
        self.shared.lock().batcher.len()
    }

    /// Queues `input` (of `size` batch units: images, tokens) and waits for its output. Answers
    /// 503 when the queue is full and 504 if the deadline passes first (the request is then
    /// dropped from the queue, or its result ignored).
    pub async fn submit(&self, input: R::Input, size: usize, deadline: Option<Instant>) -> Result<R::Output, Error> {
        let (reply, rx) = oneshot::channel();
        {
            let mut q = self.shared.lock();
            match q.batcher.push(Job { input, reply }, size, Instant::now(), deadline) {
                Ok(()) => {}
                Err((_, Refused::QueueFull { limit })) => {
                    return Err(Error::Overloaded {
                        model: self.model.clone(),
                        version: self.version.clone(),
                        queued: limit,
                    })
                }
                // Callers split requests to fit; one that still does not is refused, never queued.
                Err((_, Refused::TooBig { size, limit })) => {
                    return Err(aiserve_core::InputError::too_large("batch", limit, size).into())
                }
            }
            self.shared.metrics.depth.set(q.batcher.len() as i64);
        }
        self.shared.ready.notify_one();
        let outcome = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), rx).await {
                Ok(r) => r,
                Err(_) => Ok(Err(JobError::Expired)),
            },
            None => rx.await,
        };
        match outcome {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(JobError::Expired)) => Err(Error::Timeout),
            Ok(Err(JobError::Backend(e))) => Err(Error::backend(&self.model, &self.version, &e)),
            Err(_) => Err(Error::backend(
                &self.model,
                &self.version,
                &BackendError("model thread dropped the request".into()),
            )),
        }
    }
}

impl<R: Runner> Drop for Queue<R> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// Runs the instance loop, restarting it (with the same model copy) if anything outside the
/// guarded model call panics, so a version never silently loses an instance.
fn supervise<R: Runner>(shared: &Shared<R::Input, R::Output>, mut runner: R) {
    loop {
        match catch_unwind(AssertUnwindSafe(|| instance_thread(shared, &mut runner))) {
            Ok(()) => return,
            Err(_) => tracing::error!("model instance loop panicked; restarting it"),
        }
    }
}

fn instance_thread<R: Runner>(shared: &Shared<R::Input, R::Output>, runner: &mut R) {
    let mut q = shared.lock();
    loop {
        let now = Instant::now();
        for expired in q.batcher.prune(now, |job| !job.reply.is_closed()) {
            let _ = expired.item.reply.send(Err(JobError::Expired));
        }
        let decision = q.batcher.next(now);
        shared.metrics.depth.set(q.batcher.len() as i64);
        match decision {
            Decision::Run(batch) => {
                drop(q);
                shared.metrics.batch.observe(batch.len() as f64);
                shared.metrics.units.observe(batch.iter().map(|p| p.size).sum::<usize>() as f64);
                for p in &batch {
                    let waited = now.duration_since(p.enqueued);
                    shared.metrics.wait.observe(waited.as_secs_f64());
                    shared.metrics.stats.queue.add(1, waited);
                }
                let jobs: Vec<Job<R::Input, R::Output>> = batch.into_iter().map(|p| p.item).collect();
                let items = jobs.iter().map(|j| R::items(&j.input)).sum();
                let (requests, started) = (jobs.len(), Instant::now());
                run_batch(runner, jobs);
                shared.metrics.stats.execution(requests, items, started.elapsed());
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

fn run_batch<R: Runner>(runner: &mut R, jobs: Vec<Job<R::Input, R::Output>>) {
    let (inputs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.input, j.reply)).unzip();
    let result = catch_unwind(AssertUnwindSafe(|| runner.run(inputs)))
        .unwrap_or_else(|_| Err(BackendError("the model panicked".into())));
    match result {
        Ok(outs) if outs.len() == replies.len() => {
            for (reply, out) in replies.into_iter().zip(outs) {
                let _ = reply.send(Ok(out));
            }
        }
        Ok(outs) => {
            let err = BackendError(format!("model returned {} results for {} requests", outs.len(), replies.len()));
            replies.into_iter().for_each(|r| drop(r.send(Err(JobError::Backend(err.clone())))));
        }
        Err(e) => replies.into_iter().for_each(|r| drop(r.send(Err(JobError::Backend(e.clone()))))),
    }
}
