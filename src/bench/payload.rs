//! Request bodies for each protocol `aiserve bench` speaks, generated or read from a file.

use std::path::Path;

use serde_json::{json, Value};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /classify` with `{"image": 28x28}`.
    Classify,
    /// KServe v2 `POST /v2/models/{m}/infer` with one FP32 `[N,28,28,1]` tensor as JSON.
    Kserve,
    /// KServe v2 infer with the binary tensor extension both ways (tritonclient's default).
    KserveBinary,
    /// KServe v2 gRPC `ModelInfer` with raw tensor bytes (tritonclient.grpc); --url is the gRPC address.
    KserveGrpc,
    /// TF Serving gRPC `Predict` with `tensor_content`; --url is the gRPC address.
    TfservingGrpc,
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
            Self::Kserve | Self::KserveBinary => format!("/v2/models/{model}/infer"),
            Self::KserveGrpc | Self::TfservingGrpc => String::new(),
            Self::Tfserving => format!("/v1/models/{model}:predict"),
            Self::OpenaiChat => "/v1/chat/completions".into(),
            Self::Embeddings => "/v1/embeddings".into(),
        }
    }

    /// Whether this protocol speaks gRPC (the rest speak HTTP/1.1).
    pub fn is_grpc(self) -> bool {
        matches!(self, Self::KserveGrpc | Self::TfservingGrpc)
    }

    /// The request's extra header, if the protocol needs one: (name, value).
    pub fn header(self, body: &[u8]) -> Option<(&'static str, String)> {
        match self {
            Self::KserveBinary => {
                // The JSON header ends where its one value does; tensor bytes follow.
                let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
                let _ = values.next();
                Some(("inference-header-content-length", values.byte_offset().to_string()))
            }
            _ => None,
        }
    }

    /// A valid HTTP body of `batch` images (the image protocols): from `file` when given, else
    /// generated.
    pub fn body(self, model: &str, file: Option<&Path>, batch: usize) -> anyhow::Result<Vec<u8>> {
        if let Some(f) = file {
            return std::fs::read(f).map_err(|e| anyhow::anyhow!("--payload {}: {e}", f.display()));
        }
        let image = digit_pattern();
        let value = match self {
            Self::Classify => json!({ "images": vec![image; batch] }),
            Self::Kserve => {
                let flat: Vec<f64> = image.iter().flatten().copied().collect();
                let data: Vec<f64> = flat.iter().copied().cycle().take(flat.len() * batch).collect();
                json!({ "inputs": [{ "name": "image", "shape": [batch, 28, 28, 1], "datatype": "FP32", "data": data }] })
            }
            Self::KserveBinary => {
                let raw = images_le(batch);
                let header = json!({
                    "inputs": [{ "name": "image", "shape": [batch, 28, 28, 1], "datatype": "FP32",
                                 "parameters": { "binary_data_size": raw.len() } }],
                    "parameters": { "binary_data_output": true }
                });
                let mut body = serde_json::to_vec(&header)?;
                body.extend_from_slice(&raw);
                return Ok(body);
            }
            Self::KserveGrpc | Self::TfservingGrpc => return Ok(Vec::new()),
            Self::Tfserving => json!({ "instances": vec![image; batch] }),
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

/// The bodies of `--payloads`: one JSON document per non-empty line of `file` (e.g. many
/// different sentences, so a text model sees a realistic mix of lengths, not one text).
pub fn body_lines(protocol: Protocol, file: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    if protocol.is_grpc() || protocol == Protocol::KserveBinary {
        anyhow::bail!("--payloads takes JSON bodies, one per line: not for {protocol:?}");
    }
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("--payloads {}: {e}", file.display()))?;
    let mut bodies = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if let Err(e) = serde_json::from_str::<Value>(line) {
            anyhow::bail!("--payloads {}: line {} is not a JSON document: {e}", file.display(), i + 1);
        }
        bodies.push(line.as_bytes().to_vec());
    }
    if bodies.is_empty() {
        anyhow::bail!("--payloads {}: no request bodies in it", file.display());
    }
    Ok(bodies)
}

/// `batch` copies of the pattern as little-endian f32 bytes (binary tensors, gRPC raw contents).
pub fn images_le(batch: usize) -> Vec<u8> {
    let one: Vec<u8> = digit_pattern().iter().flatten().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    one.repeat(batch)
}

/// A fixed 28x28 pattern in [0, 0.12] (the shape of `../shared/peers/payload_28x28.json`);
/// f64 so the JSON carries short decimals (`0.07`, not `0.07000000029802322`).
fn digit_pattern() -> Vec<Vec<f64>> {
    (0..28).map(|r| (0..28).map(|c| ((r * 5 + c) % 13) as f64 / 100.0).collect()).collect()
}

/// Whether a response body looks like success for the protocol (besides the 2xx status);
/// `json_len`: the length of its JSON part when the rest is binary tensors.
pub fn looks_valid(protocol: Protocol, body: &[u8], json_len: Option<usize>) -> bool {
    let json = &body[..json_len.unwrap_or(body.len()).min(body.len())];
    let Ok(v) = serde_json::from_slice::<Value>(json) else { return false };
    match protocol {
        Protocol::Classify => v.get("label").is_some() || v.get("predictions").is_some(),
        Protocol::Kserve | Protocol::KserveBinary => v.get("outputs").is_some(),
        Protocol::KserveGrpc | Protocol::TfservingGrpc => false,
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
            let v: Value = serde_json::from_slice(&p.body("digits", None, 1).unwrap()).unwrap();
            assert!(v.is_object(), "{p:?}");
        }
        let v: Value = serde_json::from_slice(&Protocol::Kserve.body("digits", None, 2).unwrap()).unwrap();
        assert_eq!(v["inputs"][0]["data"].as_array().unwrap().len(), 2 * 784);
        assert_eq!(v["inputs"][0]["shape"][0], 2);
        assert_eq!(Protocol::Tfserving.path("digits"), "/v1/models/digits:predict");
        assert!(looks_valid(Protocol::Classify, br#"{"label": 3}"#, None));
        assert!(!looks_valid(Protocol::Kserve, br#"{"error": "x"}"#, None));
        // Binary: the JSON header's length comes from the header, the tensor bytes follow.
        let body = Protocol::KserveBinary.body("digits", None, 3).unwrap();
        let (_, len) = Protocol::KserveBinary.header(&body).unwrap();
        let len: usize = len.parse().unwrap();
        let head: Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(head["inputs"][0]["parameters"]["binary_data_size"], 3 * 784 * 4);
        assert_eq!(body.len() - len, 3 * 784 * 4);
        assert!(looks_valid(Protocol::KserveBinary, &[br#"{"outputs":[]}"#.as_slice(), &[1, 2]].concat(), Some(14)));
    }

    #[test]
    fn payload_lines_are_json_documents() {
        let dir = std::env::temp_dir().join(format!("aiserve-payloads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bodies.jsonl");
        std::fs::write(&file, "{\"input\": \"a\"}\n\n{\"input\": \"b c\"}\n").unwrap();
        let bodies = body_lines(Protocol::Embeddings, &file).unwrap();
        assert_eq!(bodies, [br#"{"input": "a"}"#.to_vec(), br#"{"input": "b c"}"#.to_vec()]);
        std::fs::write(&file, "{\"input\": \"a\"}\n{\"input\": \n").unwrap();
        let err = body_lines(Protocol::Embeddings, &file).unwrap_err().to_string();
        assert!(err.contains("line 2 is not a JSON document"), "{err}");
        std::fs::write(&file, "\n  \n").unwrap();
        assert!(body_lines(Protocol::Embeddings, &file).unwrap_err().to_string().contains("no request bodies"));
        assert!(body_lines(Protocol::KserveBinary, &file).unwrap_err().to_string().contains("not for"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
