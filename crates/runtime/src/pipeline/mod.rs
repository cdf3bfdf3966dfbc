//! A pipeline version (Triton's ensemble) as request handlers see it: its inputs and outputs,
//! and the steps that make one from the other.
//!
//! Loading resolves each step: a model step's ports are its model's declared inputs and
//! outputs (the model must be available: pipelines load after the models they use), a
//! built-in's come from its parameters; [`aiserve_core::pipeline::wire`] checks the wiring and
//! orders the steps. A request then runs the steps in that order on its own values. A model
//! step goes through the model's own queue (resolving its version at each request, so a swap
//! of the model reaches the pipeline), once per element when it is given lists, all elements
//! at once, so the lines of every concurrent request share the model's batches. Built-ins run
//! on the blocking pool. A failure names its step; dropping the request's future (the client
//! went away, a deadline passed) drops whatever step is pending, and queued model passes whose
//! requester is gone are skipped by the queue. Each step's time goes to
//! `aiserve_pipeline_step_duration_seconds`.

pub mod builtin;
mod labels;
mod model_step;
mod ocr;
mod picture;
pub mod value;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aiserve_core::pipeline::{wire, PipelineConfig, StepPorts, Wiring};
use aiserve_core::{GraphInfo, InputError, ModelName, Tensor, Version};
use prometheus::Histogram;

use self::builtin::Builtin;
use self::value::Value;
use crate::budget::Hold;
use crate::error::Error;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::stats::VersionStats;

/// A pipeline version.
pub struct Pipeline {
    /// Its inputs and outputs as the protocols show them (no batching: one request, one run).
    pub info: GraphInfo,
    wiring: Wiring,
    steps: Vec<Step>,
    stats: Arc<VersionStats>,
    /// `(model, version)` of the metrics series.
    labels: (String, String),
}

struct Step {
    name: String,
    run: Run,
    ports: StepPorts,
    seconds: Histogram,
}

enum Run {
    Model { model: String, version: Option<String> },
    Builtin(Arc<dyn Builtin>),
}

impl Pipeline {
    /// Resolves and checks the steps of `config` for version `version` in `dir`.
    pub fn load(
        model: &ModelName,
        version: Version,
        dir: &Path,
        config: &PipelineConfig,
        registry: &Registry,
    ) -> Result<Self, String> {
        config.validate()?;
        let mut metadata: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut runs = Vec::with_capacity(config.steps.len());
        let mut ports = Vec::with_capacity(config.steps.len());
        // Model steps first: a built-in may read a model step's metadata.
        let mut model_ports: BTreeMap<usize, StepPorts> = BTreeMap::new();
        for (i, step) in config.steps.iter().enumerate() {
            let Some(m) = &step.model else { continue };
            if m == model.as_str() {
                return Err(format!("step `{}` runs this pipeline itself: a cycle", step.name));
            }
            let v = step.version.map(|v| v.to_string());
            let servable = registry.resolve(m, v.as_deref()).map_err(|e| format!("step `{}`: {e}", step.name))?;
            let (step_ports, meta) = model_step::ports(&servable)
                .map_err(|e| format!("step `{}`: model `{m}` cannot be a step: {e}", step.name))?;
            metadata.insert(step.name.clone(), meta);
            model_ports.insert(i, step_ports);
        }
        let lookup = |name: &str| metadata.get(name).cloned();
        let ctx = builtin::Context { dir, step_metadata: &lookup };
        for (i, step) in config.steps.iter().enumerate() {
            match (&step.model, &step.builtin) {
                (Some(m), _) => {
                    ports.push(model_ports.remove(&i).expect("resolved above"));
                    runs.push(Run::Model { model: m.clone(), version: step.version.map(|v| v.to_string()) });
                }
                (None, Some(b)) => {
                    let made =
                        builtin::make(b, &step.params, &ctx).map_err(|e| format!("step `{}` ({b}): {e}", step.name))?;
                    ports.push(made.ports());
                    runs.push(Run::Builtin(made));
                }
                (None, None) => unreachable!("validated"),
            }
        }
        let wiring = wire(config, &ports)?;
        let labels = (model.to_string(), version.to_string());
        let steps = config
            .steps
            .iter()
            .zip(runs)
            .zip(ports)
            .map(|((s, run), ports)| Step {
                name: s.name.clone(),
                run,
                ports,
                seconds: crate::metrics::METRICS
                    .pipeline_step_seconds
                    .with_label_values(&[&labels.0, &labels.1, &s.name]),
            })
            .collect::<Vec<_>>();
        let order: Vec<&str> = wiring.order.iter().map(|&s| steps[s].name.as_str()).collect();
        let info = GraphInfo {
            inputs: wiring.inputs.iter().map(|(t, _)| t.clone()).collect(),
            outputs: wiring.outputs.iter().map(|(t, _)| t.clone()).collect(),
            batched: false,
            platform: "ensemble".into(),
            metadata: BTreeMap::from([("steps".to_owned(), order.join(", "))]),
            threads: 0,
            spinning: false,
            fuse: false,
            classifier: None,
            reader: None,
        };
        Ok(Self { info, wiring, steps, stats: Arc::new(VersionStats::default()), labels })
    }

    pub fn stats(&self) -> &Arc<VersionStats> {
        &self.stats
    }

    /// Runs the pipeline on named inputs (any order); the outputs come back in declaration order.
    pub async fn infer(
        &self,
        rt: &Runtime,
        named: Vec<(String, Tensor)>,
        hold: &Hold,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, Error> {
        let started = Instant::now();
        let result = self.run(rt, named, hold, deadline).await;
        self.stats.request(result.is_ok(), started.elapsed());
        result
    }

    async fn run(
        &self,
        rt: &Runtime,
        named: Vec<(String, Tensor)>,
        hold: &Hold,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, Error> {
        let w = &self.wiring;
        let inputs = self.info.order_inputs(named, 1)?;
        let mut slots: Vec<Option<Value>> = vec![None; w.values.len()];
        for ((_, slot), t) in w.inputs.iter().zip(inputs) {
            slots[*slot] = Some(Value::One(t));
        }
        for &s in &w.order {
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            let step = &self.steps[s];
            // A value this step reads last is moved in; others are copied (counted in the hold).
            let reads = &w.reads[s];
            let args: Vec<Value> = reads
                .iter()
                .enumerate()
                .map(|(j, &slot)| {
                    let last = w.frees[s].contains(&slot) && !reads[j + 1..].contains(&slot);
                    if last {
                        return Ok(slots[slot].take().expect("wiring runs makers before readers"));
                    }
                    let v = slots[slot].clone().expect("wiring runs makers before readers");
                    hold.grow(
                        v.heap_bytes(),
                        &format!("a copy of `{}` for pipeline step `{}`", w.values[slot], step.name),
                    )?;
                    Ok(v)
                })
                .collect::<Result<_, Error>>()?;
            let t0 = Instant::now();
            let outs = match &step.run {
                Run::Builtin(b) => {
                    let (b, hold) = (b.clone(), hold.clone());
                    rt.decode("a pipeline step", move || {
                        hold.grow(b.needs(&args)?, "a pipeline step's working memory")?;
                        b.run(args, &hold)
                    })
                    .await
                }
                Run::Model { model, version } => {
                    self.run_model(rt, step, model, version.as_deref(), args, w.mapped[s], hold, deadline).await
                }
            }
            .map_err(|e| self.in_step(e, &step.name))?;
            step.seconds.observe(t0.elapsed().as_secs_f64());
            let bytes: usize = outs.iter().map(Value::heap_bytes).sum();
            hold.grow(bytes, &format!("the values of pipeline step `{}`", step.name))?;
            for (out, slot) in outs.into_iter().zip(&w.writes[s]) {
                if let Some(slot) = slot {
                    slots[*slot] = Some(out);
                }
            }
            for &slot in &w.frees[s] {
                slots[slot] = None;
            }
        }
        w.outputs.iter().map(|(spec, slot)| slots[*slot].take().expect("outputs are made").one(&spec.name)).collect()
    }

    /// Runs a model step: once, or once per element of its list inputs (all at once, so the
    /// elements join the model's batches with other requests').
    #[allow(clippy::too_many_arguments)]
    async fn run_model(
        &self,
        rt: &Runtime,
        step: &Step,
        model: &str,
        version: Option<&str>,
        args: Vec<Value>,
        mapped: bool,
        hold: &Hold,
        deadline: Instant,
    ) -> Result<Vec<Value>, Error> {
        let servable = rt.registry.resolve(model, version)?;
        let (now, _) = model_step::ports(&servable).map_err(|e| Error::WrongModelKind {
            model: model.to_owned(),
            is: format!("no longer a model a step can run ({e})"),
            wants: "tensors (a pipeline's model step)".into(),
        })?;
        let names: Vec<&String> = step.ports.inputs.iter().map(|(n, _)| n).collect();
        let calls: Vec<Vec<(String, Tensor)>> = if mapped {
            let lists = args.into_iter().map(|v| v.many("input")).collect::<Result<Vec<_>, _>>()?;
            let n = lists.first().map_or(0, Vec::len);
            if lists.iter().any(|l| l.len() != n) {
                return Err(Error::invalid("inputs", "the lists given to a model step differ in length"));
            }
            let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
            (0..n)
                .map(|_| {
                    names
                        .iter()
                        .zip(iters.iter_mut())
                        .map(|(n, it)| ((*n).clone(), it.next().expect("same length")))
                        .collect()
                })
                .collect()
        } else {
            let one = names
                .iter()
                .zip(args)
                .map(|(n, v)| Ok(((*n).clone(), v.one(n)?)))
                .collect::<Result<Vec<_>, Error>>()?;
            vec![one]
        };
        let pending = calls.into_iter().map(|named| model_step::call(rt, &servable, named, hold, deadline));
        let results = futures_util::future::try_join_all(pending).await?;
        // The step's output ports by position in the model's (current) outputs.
        let picks = step
            .ports
            .outputs
            .iter()
            .map(|(name, _)| {
                now.outputs.iter().position(|(o, _)| o == name).ok_or_else(|| {
                    Error::internal(&format!("model `{model}` no longer gives the output `{name}` the pipeline wired"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !mapped {
            let mut outs: Vec<Option<Tensor>> =
                results.into_iter().next().expect("one call").into_iter().map(Some).collect();
            return Ok(picks
                .iter()
                .map(|&j| Value::One(outs[j].take().expect("each output is picked once")))
                .collect());
        }
        let mut lists: Vec<Vec<Tensor>> = vec![Vec::with_capacity(results.len()); picks.len()];
        for r in results {
            let mut r: Vec<Option<Tensor>> = r.into_iter().map(Some).collect();
            for (list, &j) in lists.iter_mut().zip(&picks) {
                list.push(r[j].take().expect("each output is picked once"));
            }
        }
        Ok(lists.into_iter().map(Value::Many).collect())
    }

    /// `e` as the pipeline's client sees it: naming the step it happened in.
    fn in_step(&self, e: Error, step: &str) -> Error {
        match e {
            Error::Input(InputError::Invalid { field, message }) => {
                Error::invalid(format!("step.{step}.{field}"), format!("pipeline step `{step}`: {message}"))
            }
            Error::Input(e @ InputError::TooLarge { .. }) => {
                Error::invalid(format!("step.{step}.{}", e.field()), format!("pipeline step `{step}`: {e}"))
            }
            e @ (Error::ModelNotFound(_)
            | Error::VersionNotFound { .. }
            | Error::WrongModelKind { .. }
            | Error::NotReady { .. }) => {
                Error::NotReady { model: self.labels.0.clone(), detail: format!(": its step `{step}` cannot run: {e}") }
            }
            Error::Internal { id } => {
                tracing::error!(error_id = %id, pipeline = %self.labels.0, step, "pipeline step failed");
                Error::Internal { id }
            }
            other => other,
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for s in &self.steps {
            let _ = crate::metrics::METRICS.pipeline_step_seconds.remove_label_values(&[
                &self.labels.0,
                &self.labels.1,
                &s.name,
            ]);
        }
    }
}
