//! Pipelines (Triton's ensembles): a model whose `model.toml` has a `[pipeline]` section runs
//! steps — other repository models, or built-in processing — wired by value names, as
//! Triton's `input_map` / `output_map` wire an ensemble's tensors.
//!
//! This module owns the configuration and the pure half of loading one: given each step's
//! ports (what its model or built-in takes and gives), [`wire`] checks that every value a step
//! reads is made by exactly one pipeline input or step, that the steps form no cycle, and that
//! each value's datatype, shape and list-ness fit the port that reads it, and orders the steps
//! for running. A pipeline that fails here fails its version load with the message; the server
//! keeps serving.
//!
//! A value is one tensor or a *list* of tensors (a picture's text lines: one crop each, each its
//! own size). A model step given lists runs once per element, each run going through the
//! model's own queue (so elements of many requests share its passes), and gives lists back.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::dtype::Datatype;
use crate::graph::TensorSpec;

/// `[pipeline]` in `model.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// What a request gives: each input's name, datatype and dims (-1: any size).
    pub inputs: Vec<PipelineInput>,
    /// The values answered, by name, in this order.
    pub outputs: Vec<String>,
    /// The steps, in any order: they run in the order their values allow.
    #[serde(rename = "step")]
    pub steps: Vec<StepConfig>,
}

/// One input of a pipeline.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInput {
    pub name: String,
    pub datatype: String,
    pub dims: Vec<i64>,
}

/// `[[pipeline.step]]`: a repository model (`model`, optionally `version`) or a built-in
/// (`builtin`, with its `params`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub name: String,
    pub model: Option<String>,
    /// A fixed version of `model`; absent: its highest available version at each request.
    pub version: Option<u64>,
    pub builtin: Option<String>,
    /// The step's input (port) name → the pipeline value it reads.
    #[serde(default)]
    pub input_map: BTreeMap<String, String>,
    /// The step's output (port) name → the pipeline value it makes (unmapped outputs are dropped).
    #[serde(default)]
    pub output_map: BTreeMap<String, String>,
    /// A built-in's parameters.
    #[serde(default)]
    pub params: toml::Table,
}

/// Most steps one pipeline may have.
pub const MAX_STEPS: usize = 64;

impl PipelineConfig {
    /// The checks that need no step's ports.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(format!("`pipeline.step` must have 1..={MAX_STEPS} steps, got {}", self.steps.len()));
        }
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err("`pipeline.inputs` and `pipeline.outputs` must each name at least one value".into());
        }
        for input in &self.inputs {
            if Datatype::parse(&input.datatype).is_none() {
                return Err(format!(
                    "`pipeline.inputs` `{}`: datatype must be a KServe datatype (FP32, BYTES, ...), got {:?}",
                    input.name, input.datatype
                ));
            }
            if input.dims.len() > 8 || input.dims.iter().any(|&d| d < -1) {
                return Err(format!(
                    "`pipeline.inputs` `{}`: dims must be at most 8 sizes, each -1 (any) or more, got {:?}",
                    input.name, input.dims
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return Err(format!("`pipeline.step[{i}].name` must be unique and not empty, got {:?}", s.name));
            }
            match (&s.model, &s.builtin) {
                (Some(_), None) if s.params.is_empty() => {}
                (Some(_), None) => return Err(format!("step `{}`: `params` are for built-in steps", s.name)),
                (None, Some(_)) if s.version.is_none() => {}
                (None, Some(_)) => return Err(format!("step `{}`: `version` is for model steps", s.name)),
                _ => return Err(format!("step `{}` must name exactly one of `model` and `builtin`", s.name)),
            }
        }
        Ok(())
    }
}

/// The type of a value, or of a step's port.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueType {
    pub datatype: Datatype,
    /// -1 where any size goes.
    pub dims: Vec<i64>,
    /// A list of tensors of this type (one per text line, say) rather than one tensor.
    pub list: bool,
}

impl ValueType {
    pub fn one(datatype: Datatype, dims: &[i64]) -> Self {
        Self { datatype, dims: dims.to_vec(), list: false }
    }

    pub fn list(datatype: Datatype, dims: &[i64]) -> Self {
        Self { datatype, dims: dims.to_vec(), list: true }
    }

    fn describe(&self) -> String {
        let one = format!("{} {:?}", self.datatype, self.dims);
        if self.list {
            format!("a list of {one}")
        } else {
            one
        }
    }

    /// Whether a value of type `given` fits this port (sizes fixed on both sides must agree).
    fn fits(&self, given: &ValueType) -> bool {
        self.datatype == given.datatype
            && self.dims.len() == given.dims.len()
            && self.dims.iter().zip(&given.dims).all(|(&a, &b)| a < 0 || b < 0 || a == b)
    }
}

/// What one step takes and gives, by port name.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPorts {
    pub inputs: Vec<(String, ValueType)>,
    pub outputs: Vec<(String, ValueType)>,
    /// A model step: given lists, it runs per element and gives lists (its ports are tensors).
    pub maps_lists: bool,
}

/// A checked pipeline: values are numbered slots, steps run in `order`.
#[derive(Clone, Debug, PartialEq)]
pub struct Wiring {
    /// Value names, by slot.
    pub values: Vec<String>,
    /// The pipeline's inputs as requests give them, and their slots.
    pub inputs: Vec<(TensorSpec, usize)>,
    /// The pipeline's outputs as answered, and their slots.
    pub outputs: Vec<(TensorSpec, usize)>,
    /// Step indices in running order.
    pub order: Vec<usize>,
    /// Per step: the slot each input port reads, in port order.
    pub reads: Vec<Vec<usize>>,
    /// Per step: the slot each output port writes (None: dropped), in port order.
    pub writes: Vec<Vec<Option<usize>>>,
    /// Per step: whether it runs per element of list inputs.
    pub mapped: Vec<bool>,
    /// Per step: the slots no later step reads, to free once it has run.
    pub frees: Vec<Vec<usize>>,
}

/// Checks the wiring of `config`'s steps, whose ports are `ports` (same order), and orders them.
pub fn wire(config: &PipelineConfig, ports: &[StepPorts]) -> Result<Wiring, String> {
    config.validate()?;
    let steps = &config.steps;
    let mut slot_of: HashMap<String, usize> = HashMap::new();
    let mut values: Vec<String> = Vec::new();
    // Who makes each value: None for a pipeline input, Some(step).
    let mut maker: Vec<Option<usize>> = Vec::new();
    let mut types: Vec<Option<ValueType>> = Vec::new();
    let mut made = |name: &str, by: Option<usize>, ty: Option<ValueType>| -> Result<usize, String> {
        if let Some(&slot) = slot_of.get(name) {
            let who = |m: Option<usize>| match m {
                Some(s) => format!("step `{}`", steps[s].name),
                None => "a pipeline input".to_owned(),
            };
            return Err(format!("value `{name}` is made by both {} and {}", who(maker[slot]), who(by)));
        }
        slot_of.insert(name.to_owned(), values.len());
        values.push(name.to_owned());
        maker.push(by);
        types.push(ty);
        Ok(values.len() - 1)
    };
    let mut inputs = Vec::new();
    for input in &config.inputs {
        let datatype = Datatype::parse(&input.datatype).expect("validated");
        let slot = made(&input.name, None, Some(ValueType::one(datatype, &input.dims)))?;
        inputs.push((TensorSpec { name: input.name.clone(), datatype, dims: input.dims.clone() }, slot));
    }
    let mut writes = Vec::with_capacity(steps.len());
    for (s, (step, p)) in steps.iter().zip(ports).enumerate() {
        if let Some(unknown) = step.output_map.keys().find(|k| !p.outputs.iter().any(|(n, _)| n == *k)) {
            return Err(format!("step `{}` has no output `{unknown}`; it gives {}", step.name, port_names(&p.outputs)));
        }
        let mut w = Vec::with_capacity(p.outputs.len());
        for (port, _) in &p.outputs {
            w.push(match step.output_map.get(port) {
                Some(value) => Some(made(value, Some(s), None)?),
                None => None,
            });
        }
        writes.push(w);
    }
    let mut reads = Vec::with_capacity(steps.len());
    for (step, p) in steps.iter().zip(ports) {
        if let Some(unknown) = step.input_map.keys().find(|k| !p.inputs.iter().any(|(n, _)| n == *k)) {
            return Err(format!("step `{}` has no input `{unknown}`; it takes {}", step.name, port_names(&p.inputs)));
        }
        let mut r = Vec::with_capacity(p.inputs.len());
        for (port, _) in &p.inputs {
            let value = step
                .input_map
                .get(port)
                .ok_or_else(|| format!("step `{}`: input `{port}` is not wired (add it to `input_map`)", step.name))?;
            let slot = *slot_of.get(value).ok_or_else(|| {
                format!("step `{}` reads value `{value}`, which no pipeline input or step makes", step.name)
            })?;
            r.push(slot);
        }
        reads.push(r);
    }

    // Kahn's algorithm, taking the lowest ready step first so the order is stable.
    let deps: Vec<Vec<usize>> = reads.iter().map(|r| r.iter().filter_map(|&slot| maker[slot]).collect()).collect();
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..steps.len()).filter(|&s| waiting[s] == 0).collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(s) = ready.pop_first() {
        order.push(s);
        for (t, d) in deps.iter().enumerate() {
            for _ in d.iter().filter(|&&m| m == s) {
                waiting[t] -= 1;
                if waiting[t] == 0 {
                    ready.insert(t);
                }
            }
        }
    }
    if order.len() < steps.len() {
        // Steps merely downstream of a cycle are not named: drop, until none is left, every
        // stuck step no other stuck step reads from.
        let mut stuck: Vec<usize> = (0..steps.len()).filter(|s| !order.contains(s)).collect();
        while let Some(i) = stuck.iter().position(|&s| !stuck.iter().any(|&t| deps[t].contains(&s))) {
            stuck.remove(i);
        }
        let names: Vec<String> = stuck.iter().map(|&s| format!("`{}`", steps[s].name)).collect();
        return Err(format!("steps {} wait on each other's values: a cycle", names.join(", ")));
    }

    // Types, in running order.
    let mut mapped = vec![false; steps.len()];
    for &s in &order {
        let (step, p) = (&steps[s], &ports[s]);
        let given: Vec<&ValueType> = reads[s].iter().map(|&slot| types[slot].as_ref().expect("made earlier")).collect();
        let lists = given.iter().filter(|t| t.list).count();
        if p.maps_lists && lists > 0 && lists < given.len() {
            return Err(format!(
                "step `{}` is given lists for some inputs and single tensors for others; give it all of one kind",
                step.name
            ));
        }
        mapped[s] = p.maps_lists && lists > 0;
        for ((port, want), got) in p.inputs.iter().zip(&given) {
            let list_ok = if p.maps_lists { true } else { want.list == got.list };
            if !list_ok || !want.fits(got) {
                let value = &step.input_map[port];
                let want = if p.maps_lists { ValueType { list: got.list, ..want.clone() } } else { want.clone() };
                return Err(format!(
                    "step `{}` input `{port}` takes {}, but value `{value}` is {}",
                    step.name,
                    want.describe(),
                    got.describe()
                ));
            }
        }
        for ((_, ty), w) in p.outputs.iter().zip(&writes[s]) {
            if let Some(slot) = w {
                types[*slot] = Some(ValueType { list: ty.list || mapped[s], ..ty.clone() });
            }
        }
    }

    let mut outputs = Vec::with_capacity(config.outputs.len());
    for name in &config.outputs {
        let slot = *slot_of.get(name).ok_or_else(|| format!("pipeline output `{name}` is not made by any step"))?;
        let ty = types[slot].clone().expect("every slot is typed once its maker ran");
        if ty.list {
            return Err(format!(
                "pipeline output `{name}` is {}; an output must be one tensor (join the list with a step)",
                ty.describe()
            ));
        }
        if outputs.iter().any(|(o, _): &(TensorSpec, usize)| &o.name == name) {
            return Err(format!("pipeline output `{name}` is named twice"));
        }
        outputs.push((TensorSpec { name: name.clone(), datatype: ty.datatype, dims: ty.dims }, slot));
    }

    // Free each value after the last step that reads it (outputs live to the end).
    let mut last_read: Vec<Option<usize>> = vec![None; values.len()];
    for (i, &s) in order.iter().enumerate() {
        for &slot in &reads[s] {
            last_read[slot] = Some(i);
        }
    }
    let mut frees = vec![Vec::new(); steps.len()];
    for (slot, last) in last_read.iter().enumerate() {
        if let Some(i) = last {
            if !outputs.iter().any(|(_, o)| *o == slot) {
                frees[order[*i]].push(slot);
            }
        }
    }
    Ok(Wiring { values, inputs, outputs, order, reads, writes, mapped, frees })
}

fn port_names(ports: &[(String, ValueType)]) -> String {
    let names: Vec<String> = ports.iter().map(|(n, _)| format!("`{n}`")).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCR: &str = r#"
inputs = [{ name = "picture", datatype = "BYTES", dims = [1] }]
outputs = ["texts"]

[[step]]
name = "read"
model = "rec"
input_map = { x = "lines" }
output_map = { y = "scores" }

[[step]]
name = "decode"
builtin = "picture.decode"
input_map = { bytes = "picture" }
output_map = { picture = "pixels" }

[[step]]
name = "crop"
builtin = "crop"
input_map = { picture = "pixels" }
output_map = { lines = "lines" }

[[step]]
name = "ctc"
builtin = "ctc"
input_map = { scores = "scores" }
output_map = { texts = "texts" }
"#;

    fn ports() -> Vec<StepPorts> {
        let f = |d: &[i64]| ValueType::one(Datatype::Fp32, d);
        vec![
            StepPorts {
                inputs: vec![("x".into(), f(&[-1, 3, 48, -1]))],
                outputs: vec![("y".into(), f(&[-1, -1, 10]))],
                maps_lists: true,
            },
            StepPorts {
                inputs: vec![("bytes".into(), ValueType::one(Datatype::Bytes, &[1]))],
                outputs: vec![("picture".into(), ValueType::one(Datatype::Uint8, &[-1, -1, 3]))],
                maps_lists: false,
            },
            StepPorts {
                inputs: vec![("picture".into(), ValueType::one(Datatype::Uint8, &[-1, -1, 3]))],
                outputs: vec![("lines".into(), ValueType::list(Datatype::Fp32, &[-1, 3, 48, -1]))],
                maps_lists: false,
            },
            StepPorts {
                inputs: vec![("scores".into(), ValueType::list(Datatype::Fp32, &[-1, -1, -1]))],
                outputs: vec![("texts".into(), ValueType::one(Datatype::Bytes, &[-1]))],
                maps_lists: false,
            },
        ]
    }

    fn config(text: &str) -> PipelineConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn steps_run_in_the_order_their_values_allow() {
        let w = wire(&config(OCR), &ports()).unwrap();
        assert_eq!(w.order, [1, 2, 0, 3]);
        assert_eq!(w.mapped, [true, false, false, false], "the model step runs per line");
        assert_eq!(w.outputs[0].0, TensorSpec { name: "texts".into(), datatype: Datatype::Bytes, dims: vec![-1] });
        assert_eq!(w.inputs[0].0.dims, [1]);
        // Each value is freed by the last step reading it; the output never.
        let slot = |n: &str| w.values.iter().position(|v| v == n).unwrap();
        assert_eq!(w.frees[1], [slot("picture")]);
        assert_eq!(w.frees[0], [slot("lines")]);
        assert!(!w.frees.iter().flatten().any(|&s| s == slot("texts")));
    }

    #[test]
    fn wiring_mistakes_are_named() {
        let err = |text: &str, ports: &[StepPorts]| wire(&config(text), ports).unwrap_err();
        let e = err(&OCR.replace("x = \"lines\"", "x = \"line\""), &ports());
        assert!(e.contains("step `read` reads value `line`, which no pipeline input or step makes"), "{e}");
        let e = err(&OCR.replace("y = \"scores\"", "y = \"lines\""), &ports());
        assert!(e.contains("value `lines` is made by both step `read` and step `crop`"), "{e}");
        let e = err(&OCR.replace("output_map = { picture", "output_map = { pic"), &ports());
        assert!(e.contains("step `decode` has no output `pic`; it gives `picture`"), "{e}");
        let e = err(&OCR.replace("input_map = { bytes = \"picture\" }", ""), &ports());
        assert!(e.contains("step `decode`: input `bytes` is not wired"), "{e}");
        // A cycle: the crop reads what the recogniser makes, which reads the crop's lines.
        let e =
            err(&OCR.replace("input_map = { picture = \"pixels\" }", "input_map = { picture = \"scores\" }"), &ports());
        assert!(e.contains("steps `read`, `crop` wait on each other's values: a cycle"), "{e}");
        let e = err(&OCR.replace("outputs = [\"texts\"]", "outputs = [\"lines\"]"), &ports());
        assert!(e.contains("pipeline output `lines` is a list of FP32"), "{e}");
        let e = err(&OCR.replace("outputs = [\"texts\"]", "outputs = [\"nothing\"]"), &ports());
        assert!(e.contains("pipeline output `nothing` is not made"), "{e}");
    }

    #[test]
    fn types_and_shapes_are_checked() {
        let mut p = ports();
        p[0].inputs[0].1.dims = vec![-1, 3, 32, -1];
        let e = wire(&config(OCR), &p).unwrap_err();
        assert!(e.contains("step `read` input `x` takes a list of FP32 [-1, 3, 32, -1], but value `lines` is a list of FP32 [-1, 3, 48, -1]"), "{e}");
        let mut p = ports();
        p[1].inputs[0].1.datatype = Datatype::Uint8;
        let e = wire(&config(OCR), &p).unwrap_err();
        assert!(e.contains("takes UINT8 [1], but value `picture` is BYTES [1]"), "{e}");
        // A built-in that takes a list is not given a single tensor.
        let mut p = ports();
        p[2].outputs[0].1.list = false;
        let e = wire(&config(OCR), &p).unwrap_err();
        assert!(
            e.contains(
                "step `ctc` input `scores` takes a list of FP32 [-1, -1, -1], but value `scores` is FP32 [-1, -1, 10]"
            ),
            "{e}"
        );
    }

    #[test]
    fn configs_are_checked_before_wiring() {
        let e = config(&OCR.replace("model = \"rec\"", "model = \"rec\"\nbuiltin = \"x\"")).validate().unwrap_err();
        assert!(e.contains("exactly one of `model` and `builtin`"), "{e}");
        let e = config(&OCR.replace("name = \"crop\"", "name = \"read\"")).validate().unwrap_err();
        assert!(e.contains("must be unique"), "{e}");
        let e = config(&OCR.replace("\"BYTES\"", "\"STRING\"")).validate().unwrap_err();
        assert!(e.contains("got \"STRING\""), "{e}");
        assert!(toml::from_str::<PipelineConfig>(
            &OCR.replace("[[step]]\nname = \"read\"", "[[step]]\nnmae = \"read\"")
        )
        .is_err());
    }
}
