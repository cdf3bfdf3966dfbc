//! The digit-string reader as a served graph: pictures `[N, 28, 128, 1]` (FP32 in [0, 1], light
//! digits on black) in; each picture's string (BYTES `[N]`) and the probability of each
//! character read and of the end (FP32 `[N, 7]`, 0 past the end) out. As a graph it is batched
//! by the model's queue and reachable through KServe v2 (REST and gRPC), TF Serving and
//! pipelines; `/classify` fits an uploaded picture to the input and answers the string.

use std::collections::BTreeMap;

use aiserve_core::config::VersionConfig;
use aiserve_core::graph::GraphReader;
use aiserve_core::{
    BackendError, Datatype, GraphError, GraphInfo, GraphModel, LoadError, Tensor, TensorData, TensorSpec,
};
use candle_core::Device;

use super::{DigitStrings, ARCHITECTURE, HEIGHT, MARGIN, MAX_DIGITS, WIDTH};

/// The platform name metadata reports for graphs aiserve's own code runs.
pub const PLATFORM: &str = "aiserve_candle";
/// The probabilities output's name.
pub const PROBABILITIES: &str = "probabilities";

/// What an `image_to_text` version of this architecture takes and gives.
pub fn describe(config: &VersionConfig) -> Result<GraphInfo, LoadError> {
    if config.architecture != ARCHITECTURE {
        return Err(LoadError::Unsupported(format!(
            "image_to_text architecture `{}` is not known to this build (it reads `{ARCHITECTURE}`)",
            config.architecture
        )));
    }
    if config.input.shape != [HEIGHT, WIDTH, 1] || config.output.shape != [MAX_DIGITS] {
        return Err(LoadError::Config(format!(
            "{ARCHITECTURE} takes [{HEIGHT}, {WIDTH}, 1] pictures and reads up to {MAX_DIGITS} digits; the config says \
             input {:?}, output {:?}",
            config.input.shape, config.output.shape
        )));
    }
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    if config.labels != digits {
        return Err(LoadError::Config(format!(
            "{ARCHITECTURE} writes the digits 0-9; `labels` says {:?}",
            config.labels
        )));
    }
    if config.input.range != [0.0, 1.0] || config.input.background != 0.0 {
        return Err(LoadError::Config(format!(
            "{ARCHITECTURE} takes values in [0, 1] on a background of 0; the config says range {:?}, background {}",
            config.input.range, config.input.background
        )));
    }
    let spec = |name: &str, datatype, dims: Vec<i64>| TensorSpec { name: name.into(), datatype, dims };
    let metadata = BTreeMap::from([
        ("architecture".to_owned(), ARCHITECTURE.to_owned()),
        ("characters".to_owned(), config.labels.concat()),
    ]);
    Ok(GraphInfo {
        inputs: vec![spec(&config.input.name, Datatype::Fp32, vec![-1, HEIGHT as i64, WIDTH as i64, 1])],
        outputs: vec![
            spec(&config.output.name, Datatype::Bytes, vec![-1]),
            spec(PROBABILITIES, Datatype::Fp32, vec![-1, MAX_DIGITS as i64 + 1]),
        ],
        batched: true,
        platform: PLATFORM.into(),
        metadata,
        threads: crate::compute_threads(),
        spinning: false,
        fuse: false,
        classifier: None,
        reader: Some(GraphReader { input: 0, text: 0, probabilities: 1, height: HEIGHT, width: WIDTH, margin: MARGIN }),
    })
}

pub struct StringReader {
    model: DigitStrings,
    device: Device,
}

impl StringReader {
    pub fn new(model: DigitStrings, device: Device) -> Self {
        Self { model: model.detached(), device }
    }
}

impl GraphModel for StringReader {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, GraphError> {
        let backend = |e: candle_core::Error| GraphError::Backend(BackendError(e.to_string()));
        let [input] = &inputs[..] else {
            return Err(GraphError::Rejected(format!("{ARCHITECTURE} takes one input, got {}", inputs.len())));
        };
        let (TensorData::F32(values), &[n, HEIGHT, WIDTH, 1]) = (&input.data, &input.shape[..]) else {
            return Err(GraphError::Rejected(format!(
                "{ARCHITECTURE} takes FP32 [N, {HEIGHT}, {WIDTH}, 1], got {} {:?}",
                input.datatype(),
                input.shape
            )));
        };
        let x = candle_core::Tensor::from_slice(values, (n, HEIGHT, WIDTH, 1), &self.device).map_err(backend)?;
        let readings = self.model.read(&x).map_err(backend)?;
        let positions = MAX_DIGITS + 1;
        let mut probabilities = vec![0f32; n * positions];
        for (row, r) in probabilities.chunks_exact_mut(positions).zip(&readings) {
            row[..r.probabilities.len()].copy_from_slice(&r.probabilities);
        }
        let text = readings.iter().map(|r| r.text().into_bytes()).collect();
        let out = |shape, data| Tensor::new(shape, data).map_err(|e| GraphError::Backend(BackendError(e)));
        Ok(vec![out(vec![n], TensorData::Bytes(text))?, out(vec![n, positions], TensorData::F32(probabilities))?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digit_strings::publish::version_config;

    #[test]
    fn reads_a_batch_as_tensors_and_refuses_other_shapes() {
        let (m, _) = DigitStrings::init(2, 16, &Device::Cpu).unwrap();
        let mut r = StringReader::new(m.clone(), Device::Cpu);
        let values: Vec<f32> = (0..2 * HEIGHT * WIDTH).map(|i| ((i * 37) % 255) as f32 / 255.0).collect();
        let input = Tensor::new(vec![2, HEIGHT, WIDTH, 1], TensorData::F32(values.clone())).unwrap();
        let out = r.run(vec![input]).unwrap();
        let x = candle_core::Tensor::from_vec(values, (2, HEIGHT, WIDTH, 1), &Device::Cpu).unwrap();
        let want = m.detached().read(&x).unwrap();
        let TensorData::Bytes(text) = &out[0].data else { panic!("text is BYTES") };
        assert_eq!(text, &want.iter().map(|w| w.text().into_bytes()).collect::<Vec<_>>());
        assert_eq!(out[1].shape, [2, MAX_DIGITS + 1]);
        let wrong = Tensor::new(vec![1, 28, 28, 1], TensorData::F32(vec![0.0; 784])).unwrap();
        assert!(matches!(r.run(vec![wrong]), Err(GraphError::Rejected(_))));
        let info = describe(&version_config(None)).unwrap();
        assert_eq!(info.outputs[0].datatype, Datatype::Bytes);
        let mut other = version_config(None);
        other.input.shape = [28, 28, 1];
        assert!(describe(&other).is_err());
    }
}
