//! A loaded model version as request handlers see it: its name, its kind-specific metadata and
//! the [`Queue`] in front of its instance threads. Holding an `Arc<Servable>` keeps it alive.

use std::sync::Arc;
use std::time::Instant;

use aiserve_core::config::VersionConfig;
use aiserve_core::tensor::ImageSpec;
use aiserve_core::text::{EmbedderInfo, TextTokenizer};
use aiserve_core::{BackendError, ImageBatch, ImageClassifier, ModelName, TextEmbedder, Version};

use crate::budget::Hold;
use crate::error::Error;
use crate::generation::GenModel;
use crate::graph::Graph;
use crate::pipeline::Pipeline;
use crate::scorer::ScoreModel;
use crate::worker::{Queue, Runner};

pub struct Servable {
    pub model: ModelName,
    pub version: Version,
    pub kind: Kind,
    /// When the version became available (OpenAI's `created`).
    pub loaded_at: std::time::SystemTime,
}

// One value per loaded version: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Kind {
    Image(ImageModel),
    Embedder(EmbedModel),
    Scorer(ScoreModel),
    Generator(GenModel),
    Graph(Graph),
    Pipeline(Pipeline),
}

impl Servable {
    /// The image classifier behind this version, or a 400 naming what it is instead.
    pub fn image(&self) -> Result<&ImageModel, Error> {
        match &self.kind {
            Kind::Image(m) => Ok(m),
            Kind::Embedder(_) => Err(self.wrong_kind("a text embedding model", "images")),
            Kind::Scorer(_) => Err(self.wrong_kind("a reranker", "images")),
            Kind::Generator(_) => Err(self.wrong_kind("a text generation model", "images")),
            Kind::Graph(_) => Err(self.wrong_kind("an ONNX model", "images")),
            Kind::Pipeline(_) => Err(self.wrong_kind("a pipeline", "images")),
        }
    }

    /// The text embedding model behind this version, or a 400 naming what it is instead.
    pub fn embedder(&self) -> Result<&EmbedModel, Error> {
        match &self.kind {
            Kind::Embedder(m) => Ok(m),
            Kind::Image(_) => Err(self.wrong_kind("an image classifier", "text to embed")),
            Kind::Scorer(_) => Err(self.wrong_kind("a reranker (use /v1/rerank)", "text to embed")),
            Kind::Generator(_) => Err(self.wrong_kind("a text generation model", "text to embed")),
            Kind::Graph(_) => Err(self.wrong_kind("an ONNX model", "text to embed")),
            Kind::Pipeline(_) => Err(self.wrong_kind("a pipeline", "text to embed")),
        }
    }

    /// The text generation model behind this version, or a 400 naming what it is instead.
    pub fn generator(&self) -> Result<&GenModel, Error> {
        match &self.kind {
            Kind::Generator(m) => Ok(m),
            Kind::Image(_) => Err(self.wrong_kind("an image classifier", "a prompt to complete")),
            Kind::Embedder(_) => Err(self.wrong_kind("a text embedding model", "a prompt to complete")),
            Kind::Scorer(_) => Err(self.wrong_kind("a reranker", "a prompt to complete")),
            Kind::Graph(_) => Err(self.wrong_kind("an ONNX model", "a prompt to complete")),
            Kind::Pipeline(_) => Err(self.wrong_kind("a pipeline", "a prompt to complete")),
        }
    }

    /// The cross-encoder behind this version, or a 400 naming what it is instead.
    pub fn scorer(&self) -> Result<&ScoreModel, Error> {
        match &self.kind {
            Kind::Scorer(m) => Ok(m),
            Kind::Image(_) => Err(self.wrong_kind("an image classifier", "a query and documents to rerank")),
            Kind::Embedder(_) => Err(self.wrong_kind(
                "a text embedding model (rank by the cosine of its /v1/embeddings vectors, or serve a cross-encoder)",
                "a query and documents to rerank",
            )),
            Kind::Generator(_) => Err(self.wrong_kind("a text generation model", "a query and documents to rerank")),
            Kind::Graph(_) => Err(self.wrong_kind("an ONNX model", "a query and documents to rerank")),
            Kind::Pipeline(_) => Err(self.wrong_kind("a pipeline", "a query and documents to rerank")),
        }
    }

    /// This version's cumulative statistics (Triton's `ModelStatistics`).
    pub fn stats(&self) -> &Arc<crate::stats::VersionStats> {
        match &self.kind {
            Kind::Image(m) => m.queue.stats(),
            Kind::Embedder(m) => m.queue.stats(),
            Kind::Scorer(m) => m.queue.stats(),
            Kind::Generator(m) => m.engine.stats(),
            Kind::Graph(m) => m.queue.stats(),
            Kind::Pipeline(p) => p.stats(),
        }
    }

    fn wrong_kind(&self, is: &str, wants: &str) -> Error {
        Error::WrongModelKind { model: self.model.to_string(), is: is.into(), wants: wants.into() }
    }
}

/// An image classification version.
pub struct ImageModel {
    pub config: VersionConfig,
    pub spec: ImageSpec,
    /// Most images in one forward pass (`max_batch_size`); bigger requests are split.
    pub max_batch: usize,
    pub queue: Queue<ImageRunner>,
}

impl ImageModel {
    /// Class probabilities per image of a validated batch. A batch larger than `max_batch` is
    /// queued as pieces of at most `max_batch` images (copies counted against `hold`), which
    /// other requests' images may join; the rows come back in order.
    pub async fn classify(
        &self,
        batch: ImageBatch,
        deadline: Option<Instant>,
        hold: &Hold,
    ) -> Result<Vec<Vec<f32>>, Error> {
        if batch.n <= self.max_batch {
            let size = batch.n;
            return self.queue.submit(batch, size, deadline).await;
        }
        hold.grow(batch.data.len() * size_of::<f32>(), "splitting the batch of images")?;
        let pending = batch.split(self.max_batch).into_iter().map(|piece| {
            let size = piece.n;
            self.queue.submit(piece, size, deadline)
        });
        let parts = futures_util::future::try_join_all(pending).await?;
        Ok(parts.into_iter().flatten().collect())
    }
}

/// Runs merged image batches; one row of probabilities per image, split back per request.
pub struct ImageRunner(pub Box<dyn ImageClassifier>);

impl Runner for ImageRunner {
    type Input = ImageBatch;
    type Output = Vec<Vec<f32>>;

    fn run(&mut self, inputs: Vec<ImageBatch>) -> Result<Vec<Vec<Vec<f32>>>, BackendError> {
        let total: usize = inputs.iter().map(|b| b.n).sum();
        let rows = if let [one] = inputs.as_slice() {
            self.0.predict(one)?
        } else {
            let (all, _) = ImageBatch::concat(&inputs.iter().collect::<Vec<_>>());
            self.0.predict(&all)?
        };
        if rows.len() != total {
            return Err(BackendError(format!("model returned {} rows for {total} images", rows.len())));
        }
        let mut rows = rows.into_iter();
        Ok(inputs.iter().map(|b| rows.by_ref().take(b.n).collect()).collect())
    }

    fn items(input: &ImageBatch) -> usize {
        input.n
    }
}

/// A text embedding version.
pub struct EmbedModel {
    pub info: EmbedderInfo,
    pub tokenizer: Arc<dyn TextTokenizer>,
    /// Most tokens one forward pass takes; bigger requests are split.
    pub max_batch_tokens: usize,
    pub queue: Queue<EmbedRunner>,
}

impl EmbedModel {
    /// One vector per token sequence. Sequences are queued in chunks of at most
    /// `max_batch_tokens` tokens, so one huge request cannot hold a forward pass alone for long
    /// and other clients' texts are packed in beside its pieces.
    pub async fn embed(&self, sequences: Vec<Vec<u32>>, deadline: Option<Instant>) -> Result<Vec<Vec<f32>>, Error> {
        let chunks = token_chunks(sequences, Vec::len, self.max_batch_tokens);
        let pending = chunks.into_iter().map(|(c, tokens)| self.queue.submit(c, tokens, deadline));
        let parts = futures_util::future::try_join_all(pending).await?;
        Ok(parts.into_iter().flatten().collect())
    }
}

/// `items` in order, in chunks of at most `max_tokens` tokens (`len` of each; an item longer
/// than that is a chunk of its own), with each chunk's token count.
pub(crate) fn token_chunks<T>(items: Vec<T>, len: impl Fn(&T) -> usize, max_tokens: usize) -> Vec<(Vec<T>, usize)> {
    let mut chunks: Vec<(Vec<T>, usize)> = Vec::new();
    for item in items {
        let n = len(&item);
        match chunks.last_mut() {
            Some((c, tokens)) if *tokens + n <= max_tokens => {
                c.push(item);
                *tokens += n;
            }
            _ => chunks.push((vec![item], n)),
        }
    }
    chunks
}

/// Runs the sequences of several requests as one packed forward pass.
pub struct EmbedRunner(pub Box<dyn TextEmbedder>);

impl Runner for EmbedRunner {
    type Input = Vec<Vec<u32>>;
    type Output = Vec<Vec<f32>>;

    fn run(&mut self, inputs: Vec<Vec<Vec<u32>>>) -> Result<Vec<Vec<Vec<f32>>>, BackendError> {
        let seqs: Vec<&[u32]> = inputs.iter().flat_map(|r| r.iter().map(|s| s.as_slice())).collect();
        let vectors = self.0.embed(&seqs)?;
        if vectors.len() != seqs.len() {
            return Err(BackendError(format!("model returned {} vectors for {} texts", vectors.len(), seqs.len())));
        }
        let mut vectors = vectors.into_iter();
        Ok(inputs.iter().map(|r| vectors.by_ref().take(r.len()).collect()).collect())
    }

    fn items(input: &Vec<Vec<u32>>) -> usize {
        input.len()
    }
}
