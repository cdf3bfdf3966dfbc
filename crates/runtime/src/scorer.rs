//! A cross-encoder (reranker) version: pairs of texts scored together, batched by tokens like
//! embeddings, so the pairs of concurrent rerank requests share forward passes.

use std::sync::Arc;
use std::time::Instant;

use aiserve_core::text::{PairTokenizer, PairTokens, ScorerInfo};
use aiserve_core::{BackendError, TextScorer};

use crate::budget::{Hold, TOKENIZE_BYTES_PER_BYTE};
use crate::error::Error;
use crate::runtime::Runtime;
use crate::servable::token_chunks;
use crate::text_input::{check_count, INLINE_TOKENIZE_BYTES};
use crate::worker::{Queue, Runner};

pub struct ScoreModel {
    pub info: ScorerInfo,
    pub tokenizer: Arc<dyn PairTokenizer>,
    /// Most tokens one forward pass takes; bigger requests are split.
    pub max_batch_tokens: usize,
    pub queue: Queue<ScoreRunner>,
}

/// A query and its documents, as token pairs, and how many tokens they hold in all.
pub struct ScoredPairs {
    pub pairs: Vec<PairTokens>,
    pub tokens: usize,
}

impl ScoreModel {
    /// Joins each document with its query (one query for all, or one each) the model's way under
    /// the server's text limits: at least one document, at most `max_inputs`, and each pair within
    /// the model's token limit (a 400 naming the document, or cut longest-first with `truncate`).
    /// The fields name the queries and the documents in errors (`query`, `inputs[1].data`); the
    /// token ids are counted against `hold` before tokenising, and without `truncate` a query too
    /// long for any pair is refused once, before it is joined with every document.
    pub async fn tokenize(
        &self,
        rt: &Runtime,
        (queries, query_field): (Vec<String>, &str),
        (documents, field): (Vec<String>, &str),
        truncate: bool,
        hold: &Hold,
    ) -> Result<ScoredPairs, Error> {
        let n = documents.len();
        check_count(rt, field, n, "document")?;
        if queries.len() != 1 && queries.len() != n {
            return Err(Error::invalid(
                field,
                format!("{} queries for {n} documents: send one query, or one per document", queries.len()),
            ));
        }
        let query = |i: usize| &queries[if queries.len() == 1 { 0 } else { i }];
        // Every pair re-reads its query: a shared query's bytes count once per document.
        let bytes =
            documents.iter().enumerate().map(|(i, d)| d.len() + query(i).len()).fold(0usize, usize::saturating_add);
        hold.grow(bytes.saturating_add(4 * n).saturating_mul(TOKENIZE_BYTES_PER_BYTE), "tokenizing the pairs")?;
        let (tokenizer, max, field) = (self.tokenizer.clone(), self.info.max_tokens, field.to_owned());
        let query_field = query_field.to_owned();
        let work = move || -> Result<Vec<PairTokens>, Error> {
            let query = |i: usize| &queries[if queries.len() == 1 { 0 } else { i }];
            if !truncate {
                for (i, q) in queries.iter().enumerate() {
                    let f = if queries.len() == 1 { query_field.clone() } else { format!("{query_field}[{i}]") };
                    // The query with an empty document: its tokens and the special ones of a pair.
                    let alone = tokenizer
                        .encode_pair(q, "", false)
                        .map_err(|e| Error::invalid(&f, format!("`{f}` could not be tokenised: {e}")))?;
                    if alone.ids.len() > max {
                        return Err(Error::invalid(
                            &f,
                            format!(
                                "`{f}` has {} tokens with the pair's special tokens; the model takes at most {max} for \
                                 the query and a document together (shorten it, or send \"truncate\": true)",
                                alone.ids.len()
                            ),
                        ));
                    }
                }
            }
            documents
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let f = format!("{field}[{i}]");
                    let fail = |e: String| Error::invalid(&f, format!("`{f}` could not be tokenised with the query: {e}"));
                    let pair = tokenizer.encode_pair(query(i), d, false).map_err(fail)?;
                    if pair.ids.len() > max {
                        if !truncate {
                            return Err(Error::invalid(
                                &f,
                                format!(
                                    "the query and `{f}` have {} tokens together; the model takes at most {max} (shorten \
                                     them, send \"truncate\": true, or start the server with --auto-truncate)",
                                    pair.ids.len()
                                ),
                            ));
                        }
                        return tokenizer.encode_pair(query(i), d, true).map_err(fail);
                    }
                    if pair.ids.is_empty() {
                        return Err(Error::invalid(&f, format!("the query and `{f}` make no tokens")));
                    }
                    Ok(pair)
                })
                .collect()
        };
        let pairs = if bytes <= INLINE_TOKENIZE_BYTES { work()? } else { rt.decode("the tokenizer", work).await? };
        let tokens = pairs.iter().map(|p| p.ids.len()).sum();
        Ok(ScoredPairs { pairs, tokens })
    }

    /// One row of label scores per pair. Pairs are queued in chunks of at most
    /// `max_batch_tokens` tokens, beside other requests' pairs.
    pub async fn score(&self, pairs: Vec<PairTokens>, deadline: Option<Instant>) -> Result<Vec<Vec<f32>>, Error> {
        let chunks = token_chunks(pairs, |p| p.ids.len(), self.max_batch_tokens);
        let pending = chunks.into_iter().map(|(c, tokens)| self.queue.submit(c, tokens, deadline));
        let parts = futures_util::future::try_join_all(pending).await?;
        Ok(parts.into_iter().flatten().collect())
    }
}

/// The input names a reranker declares to KServe and pipelines: the query (one, or one per
/// document) and the documents; its output is one row of label scores per document.
pub const QUERY_INPUT: &str = "query";
pub const DOCUMENT_INPUT: &str = "document";
pub const SCORES_OUTPUT: &str = "scores";

/// UTF-8 texts from a BYTES tensor's elements; `field` names the tensor in errors.
pub fn texts(items: Vec<Vec<u8>>, field: &str) -> Result<Vec<String>, Error> {
    items
        .into_iter()
        .enumerate()
        .map(|(j, b)| {
            String::from_utf8(b)
                .map_err(|_| Error::invalid(format!("{field}[{j}]"), format!("`{field}[{j}]` must be UTF-8 text")))
        })
        .collect()
}

/// Runs the pairs of several requests as one packed forward pass.
pub struct ScoreRunner(pub Box<dyn TextScorer>);

impl Runner for ScoreRunner {
    type Input = Vec<PairTokens>;
    type Output = Vec<Vec<f32>>;

    fn run(&mut self, inputs: Vec<Vec<PairTokens>>) -> Result<Vec<Vec<Vec<f32>>>, BackendError> {
        let pairs: Vec<&PairTokens> = inputs.iter().flatten().collect();
        let rows = self.0.score(&pairs)?;
        if rows.len() != pairs.len() {
            return Err(BackendError(format!("model returned {} score rows for {} pairs", rows.len(), pairs.len())));
        }
        let mut rows = rows.into_iter();
        Ok(inputs.iter().map(|r| rows.by_ref().take(r.len()).collect()).collect())
    }

    fn items(input: &Vec<PairTokens>) -> usize {
        input.len()
    }
}
