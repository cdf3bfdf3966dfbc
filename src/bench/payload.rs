//! Request bodies for each protocol `aiserve bench` speaks, generated or read from a file.

use std::path::Path;

use serde_json::{json, Value};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /classify` with `{"image": 28x28}`.
    Classify,
    /// KServe v2 `POST /v2/models/{m}/infer` with one FP32 `[1,28,28,1]` tensor.
    Kserve,
    /// TF Serving `POST /v1/models/{m}:predict` with one instance.
    Tfserving,
    /// OpenAI `POST /v1/chat/completions` with a short user message.
    OpenaiChat,
    /// OpenAI `POST /v1/embeddings` with one sentence.
    Embeddings,
}

impl Protocol {
    /// The request path for `model`.
    pub fn path(self, model: &str) -> String {
        match self {
            Self::Classify => format!("/classify?model={model}"),
            Self::Kserve => format!("/v2/models/{model}/infer"),
            Self::Tfserving => format!("/v1/models/{model}:predict"),
            Self::OpenaiChat => "/v1/chat/completions".into(),
            Self::Embeddings => "/v1/embeddings".into(),
        }
    }

    /// A valid body: from `file` when given, else generated.
    pub fn body(self, model: &str, file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
        if let Some(f) = file {
            return std::fs::read(f).map_err(|e| anyhow::anyhow!("--payload {}: {e}", f.display()));
        }
        let image = digit_pattern();
        let value = match self {
            Self::Classify => json!({ "image": image }),
            Self::Kserve => {
                let flat: Vec<f64> = image.iter().flatten().copied().collect();
                json!({ "inputs": [{ "name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": flat }] })
            }
            Self::Tfserving => json!({ "instances": [image] }),
            Self::OpenaiChat => json!({
                "model": model,
                "messages": [{ "role": "user", "content": "What is the capital of France?" }],
                "max_tokens": 16
            }),
            Self::Embeddings => json!({ "model": model, "input": "The quick brown fox jumps over the lazy dog." }),
        };
        Ok(serde_json::to_vec(&value)?)
    }
}

/// A fixed 28x28 pattern in [0, 0.12] (the shape of `../shared/peers/payload_28x28.json`);
/// f64 so the JSON carries short decimals (`0.07`, not `0.07000000029802322`).
fn digit_pattern() -> Vec<Vec<f64>> {
    (0..28).map(|r| (0..28).map(|c| ((r * 5 + c) % 13) as f64 / 100.0).collect()).collect()
}

/// Whether a response body looks like success for the protocol (besides the 2xx status).
pub fn looks_valid(protocol: Protocol, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return false };
    match protocol {
        Protocol::Classify => v.get("label").is_some() || v.get("predictions").is_some(),
        Protocol::Kserve => v.get("outputs").is_some(),
        Protocol::Tfserving => v.get("predictions").is_some(),
        Protocol::OpenaiChat | Protocol::Embeddings => v.get("choices").is_some() || v.get("data").is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bodies_are_json_with_the_right_shape() {
        for p in [Protocol::Classify, Protocol::Kserve, Protocol::Tfserving, Protocol::OpenaiChat, Protocol::Embeddings]
        {
            let v: Value = serde_json::from_slice(&p.body("digits", None).unwrap()).unwrap();
            assert!(v.is_object(), "{p:?}");
        }
        let v: Value = serde_json::from_slice(&Protocol::Kserve.body("digits", None).unwrap()).unwrap();
        assert_eq!(v["inputs"][0]["data"].as_array().unwrap().len(), 784);
        assert_eq!(Protocol::Tfserving.path("digits"), "/v1/models/digits:predict");
        assert!(looks_valid(Protocol::Classify, br#"{"label": 3}"#));
        assert!(!looks_valid(Protocol::Kserve, br#"{"error": "x"}"#));
    }
}
