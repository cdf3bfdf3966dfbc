//! The OpenAPI 3.1 document of every HTTP route (`GET /openapi.json`, open), built with utoipa.
//!
//! Request bodies are the protocols' own (KServe v2, TF Serving REST, OpenAI), so each is
//! described by content type and a link to its specification rather than re-modelled here. Each
//! operation names the API-key scope it needs; a test checks that this matches what
//! [`crate::auth::required_scope`] enforces and that every documented path is routed.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder,
    Required, ResponseBuilder,
};

use crate::auth::Scope;

/// One documented operation.
pub struct Route {
    pub method: HttpMethod,
    pub path: &'static str,
    pub scope: Option<Scope>,
    tag: &'static str,
    summary: &'static str,
    /// Request content types (empty: no body).
    body: &'static [&'static str],
    /// Status codes besides 200, with what they mean.
    errors: &'static [(u16, &'static str)],
}

const JSON: &[&str] = &["application/json"];
const INFER_BODY: &[&str] = &["application/json", "application/octet-stream"];
const CLASSIFY_BODY: &[&str] = &["application/json", "image/png", "image/jpeg"];
const BAD: (u16, &str) = (400, "invalid request: the message names the field, the limit and the value given");
const UNKNOWN: (u16, &str) = (404, "unknown model, version or label");
const TOO_BIG: (u16, &str) = (413, "body over --max-body-bytes");
const BUSY: (u16, &str) = (503, "model not ready, or its queue is full (Retry-After)");
const SLOW: (u16, &str) = (504, "the model did not answer within the request's timeout");
const PREDICT_ERRORS: &[(u16, &str)] = &[BAD, UNKNOWN, TOO_BIG, BUSY, SLOW];

use HttpMethod::{Get, Post};
use Scope::{Admin, Infer, Metrics};

macro_rules! route {
    ($m:expr, $p:expr, $s:expr, $t:expr, $sum:expr, $b:expr, $e:expr) => {
        Route { method: $m, path: $p, scope: $s, tag: $t, summary: $sum, body: $b, errors: $e }
    };
}

/// Every route the server answers (the TF Serving ones are matched by one handler).
pub static ROUTES: &[Route] = &[
    route!(
        Post,
        "/classify",
        Some(Infer),
        "simple",
        "Classify one image or a batch (JSON pixels, base64 or PNG/JPEG body), or read the string a text reader sees (`text`); `?model=&version=&top=`",
        CLASSIFY_BODY,
        &[BAD, UNKNOWN, TOO_BIG, (415, "body is neither JSON nor a picture"), BUSY, SLOW]
    ),
    route!(
        Post,
        "/ocr",
        Some(Infer),
        "simple",
        "Read the text lines of a picture with an OCR pipeline (base64 JSON or PNG/JPEG body); `?model=&version=`",
        CLASSIFY_BODY,
        &[BAD, UNKNOWN, TOO_BIG, BUSY, SLOW]
    ),
    route!(Get, "/v2", Some(Infer), "kserve", "Server metadata (KServe v2)", &[], &[]),
    route!(Get, "/v2/health/live", None, "kserve", "Liveness", &[], &[]),
    route!(
        Get,
        "/v2/health/ready",
        None,
        "kserve",
        "Readiness: the repository has been loaded once",
        &[],
        &[(503, "still loading")]
    ),
    route!(
        Get,
        "/v2/models/{model}",
        Some(Infer),
        "kserve",
        "Model metadata: inputs, outputs, versions",
        &[],
        &[UNKNOWN, BUSY]
    ),
    route!(
        Get,
        "/v2/models/{model}/versions/{version}",
        Some(Infer),
        "kserve",
        "Metadata of one version",
        &[],
        &[UNKNOWN]
    ),
    route!(
        Get,
        "/v2/models/{model}/ready",
        Some(Infer),
        "kserve",
        "Whether a version of the model serves",
        &[],
        &[(400, "not ready"), UNKNOWN]
    ),
    route!(
        Get,
        "/v2/models/{model}/versions/{version}/ready",
        Some(Infer),
        "kserve",
        "Whether this version serves",
        &[],
        &[(400, "not ready"), UNKNOWN]
    ),
    route!(
        Post,
        "/v2/models/{model}/infer",
        Some(Infer),
        "kserve",
        "Inference (JSON tensors or the binary tensor extension; BYTES texts for embedding models)",
        INFER_BODY,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v2/models/{model}/generate",
        Some(Infer),
        "kserve",
        "Generate extension: `text_input` and sampling parameters in, `text_output` out",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v2/models/{model}/versions/{version}/generate",
        Some(Infer),
        "kserve",
        "Generate with one version",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v2/models/{model}/generate_stream",
        Some(Infer),
        "kserve",
        "Generate extension, streamed: one server-sent event per text piece",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v2/models/{model}/versions/{version}/generate_stream",
        Some(Infer),
        "kserve",
        "Streamed generation with one version",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v2/models/{model}/versions/{version}/infer",
        Some(Infer),
        "kserve",
        "Inference on one version",
        INFER_BODY,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v2/repository/index",
        Some(Admin),
        "repository",
        "Every model version in the repository with its state and reason",
        JSON,
        &[BAD]
    ),
    route!(
        Post,
        "/v2/repository/models/{model}/load",
        Some(Admin),
        "repository",
        "Load (or reload) a model now; answers once a version serves",
        JSON,
        &[(400, "the model failed to load"), UNKNOWN]
    ),
    route!(
        Post,
        "/v2/repository/models/{model}/unload",
        Some(Admin),
        "repository",
        "Take every version of a model out of service until it is loaded again",
        JSON,
        &[UNKNOWN]
    ),
    route!(
        Post,
        "/v1/embeddings",
        Some(Infer),
        "openai",
        "OpenAI embeddings: string(s) or token ids; float or base64; dimensions",
        JSON,
        &[BAD, UNKNOWN, TOO_BIG, BUSY, SLOW]
    ),
    route!(
        Post,
        "/v1/rerank",
        Some(Infer),
        "rerank",
        "Rerank documents for a query with a cross-encoder (Cohere/Jina body: query, documents, top_n, return_documents; truncate); also /v2/rerank and /rerank",
        JSON,
        &[BAD, UNKNOWN, TOO_BIG, BUSY, SLOW]
    ),
    route!(
        Post,
        "/v2/rerank",
        Some(Infer),
        "rerank",
        "The same as /v1/rerank (Cohere's second API path)",
        JSON,
        &[BAD, UNKNOWN, TOO_BIG, BUSY, SLOW]
    ),
    route!(
        Post,
        "/rerank",
        Some(Infer),
        "rerank",
        "The same as /v1/rerank (the path llama.cpp's server and TEI use)",
        JSON,
        &[BAD, UNKNOWN, TOO_BIG, BUSY, SLOW]
    ),
    route!(
        Post,
        "/v1/chat/completions",
        Some(Infer),
        "openai",
        "OpenAI chat completions with the model's own chat template: tools and tool_choice, response_format (json_object, json_schema) and the structured_outputs extension (json, regex, choice, Lark grammar); `stream: true` answers with server-sent events",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v1/responses",
        Some(Infer),
        "openai",
        "OpenAI Responses, stateless (store and previous_response_id are refused): input as a string or items, instructions, function tools, text.format; `stream: true` answers with the Responses event types",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v1/messages",
        Some(Infer),
        "anthropic",
        "Anthropic Messages: system, text / tool_use / tool_result blocks, tools and tool_choice, stop_sequences; `stream: true` answers with Anthropic's event sequence",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v1/messages/count_tokens",
        Some(Infer),
        "anthropic",
        "Anthropic token count of a Messages request's prompt (system, messages and tools as the template renders them)",
        JSON,
        &[BAD, UNKNOWN, TOO_BIG]
    ),
    route!(
        Post,
        "/v1/completions",
        Some(Infer),
        "openai",
        "OpenAI (legacy) completions: prompt string(s) or token ids; `stream: true` answers with server-sent events",
        JSON,
        PREDICT_ERRORS
    ),
    route!(Get, "/v1/models", Some(Infer), "openai", "OpenAI model list (models with a serving version)", &[], &[]),
    route!(
        Get,
        "/v1/models/{model}",
        Some(Infer),
        "tfserving",
        "TF Serving model status: every version's state and error",
        &[],
        &[UNKNOWN]
    ),
    route!(
        Get,
        "/v1/models/{model}/versions/{version}",
        Some(Infer),
        "tfserving",
        "Status of one version",
        &[],
        &[UNKNOWN]
    ),
    route!(
        Get,
        "/v1/models/{model}/labels/{label}",
        Some(Infer),
        "tfserving",
        "Status of the version a label points at",
        &[],
        &[UNKNOWN]
    ),
    route!(Get, "/v1/models/{model}/metadata", Some(Infer), "tfserving", "Signature metadata", &[], &[UNKNOWN, BUSY]),
    route!(
        Get,
        "/v1/models/{model}/versions/{version}/metadata",
        Some(Infer),
        "tfserving",
        "Signature metadata of one version",
        &[],
        &[UNKNOWN]
    ),
    route!(
        Get,
        "/v1/models/{model}/labels/{label}/metadata",
        Some(Infer),
        "tfserving",
        "Signature metadata of a labelled version",
        &[],
        &[UNKNOWN]
    ),
    route!(
        Post,
        "/v1/models/{model}:predict",
        Some(Infer),
        "tfserving",
        "Predict (`instances` row format or `inputs` columnar)",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v1/models/{model}/versions/{version}:predict",
        Some(Infer),
        "tfserving",
        "Predict with one version",
        JSON,
        PREDICT_ERRORS
    ),
    route!(
        Post,
        "/v1/models/{model}/labels/{label}:predict",
        Some(Infer),
        "tfserving",
        "Predict with a labelled version",
        JSON,
        PREDICT_ERRORS
    ),
    route!(Get, "/metrics", Some(Metrics), "operations", "Prometheus metrics", &[], &[]),
    route!(Get, "/openapi.json", None, "operations", "This document", &[], &[]),
    route!(Get, "/", None, "playground", "The playground page (off with --no-playground)", &[], &[]),
    route!(Get, "/playground/{file}", None, "playground", "The playground's scripts, styles and icon", &[], &[(404, "no such file")]),
];

pub fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        _ => "other",
    }
}

fn operation(r: &Route) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new().summary(Some(r.summary)).tag(r.tag).operation_id(Some(format!(
        "{}_{}",
        method_name(&r.method),
        r.path.trim_matches('/').replace(['/', ':', '{', '}'], "_")
    )));
    for name in r.path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
        op = op.parameter(ParameterBuilder::new().name(name).parameter_in(ParameterIn::Path).required(Required::True));
    }
    if r.path == "/classify" || r.path == "/ocr" {
        for q in ["model", "version"] {
            op = op
                .parameter(ParameterBuilder::new().name(q).parameter_in(ParameterIn::Query).required(Required::False));
        }
    }
    if r.path == "/classify" {
        op = op.parameter(
            ParameterBuilder::new()
                .name("top")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("also answer the k most likely labels, most likely first")),
        );
    }
    if !r.body.is_empty() {
        let mut body = RequestBodyBuilder::new().required(Some(Required::True));
        for ct in r.body {
            body = body.content(*ct, ContentBuilder::new().build());
        }
        op = op.request_body(Some(body.build()));
    }
    op = op.response("200", ResponseBuilder::new().description("success"));
    for (code, what) in r.errors {
        op = op.response(code.to_string(), ResponseBuilder::new().description(*what));
    }
    if let Some(scope) = r.scope {
        op = op
            .response(
                "401",
                ResponseBuilder::new().description("missing or unknown API key (when keys are configured)"),
            )
            .response("403", ResponseBuilder::new().description(format!("the key lacks the `{}` scope", scope.name())))
            .response("429", ResponseBuilder::new().description("the key is over its rate or concurrency limit"))
            .securities(Some([
                SecurityRequirement::new("bearer", [scope.name()]),
                SecurityRequirement::new("api_key", [scope.name()]),
            ]));
    }
    op.build()
}

/// The document (built once).
pub static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(|| {
    let mut paths = PathsBuilder::new();
    for r in ROUTES {
        paths = paths.path(r.path, PathItem::new(r.method.clone(), operation(r)));
    }
    let components = ComponentsBuilder::new()
        .security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()))
        .security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))))
        .build();
    OpenApiBuilder::new()
        .info(InfoBuilder::new().title("aiserve").version(env!("CARGO_PKG_VERSION")).description(Some(
            "Model serving: KServe v2 (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/), \
                     TF Serving REST, OpenAI, and /classify. Scopes apply when the server runs with --api-keys-file.",
        )))
        .paths(paths.build())
        .components(Some(components))
        .build()
});

pub async fn serve() -> Response {
    axum::Json(&*DOCUMENT).into_response()
}
