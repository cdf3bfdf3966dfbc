//! Dynamic batching through the HTTP surface: requests merge into one forward pass, a full queue
//! answers 503 at once, deadlines answer 504, and instances run batches side by side.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::join_all;
use serde_json::json;
use tower::ServiceExt;

use super::fake::{read_json, until_running, write_version, Gate, Harness};

fn classify(model: &str, value: f32) -> Request<Body> {
    let body = json!({ "image": vec![value; 784] }).to_string();
    Request::post(format!("/classify?model={model}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn with_model(model_toml: &str, weights: &str) -> Harness {
    let h = Harness::new().await;
    write_version(h.repo(), "m", 1, weights);
    std::fs::write(h.repo().join("m/model.toml"), model_toml).unwrap();
    h.poll().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_merge_into_one_batch_and_split_back() {
    let h = with_model("max_queue_delay_us = 200000\npreferred_batch_sizes = [4]", "shift 0").await;
    let values = [0.0, 1.0 / 9.0, 2.0 / 9.0, 3.0 / 9.0];
    let answers = join_all(values.iter().map(|&v| h.send(classify("m", v)))).await;
    for (resp, want) in answers.into_iter().zip(0..) {
        let (s, v) = read_json(resp).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["label"], want, "results must go back to the request they came from");
    }
    assert_eq!(*h.observed.batch_sizes.lock().unwrap(), [4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_at_once() {
    let gate = Gate::new();
    let h = with_model("max_queue_size = 1\nmax_batch_size = 1", &gate.weights()).await;
    // One request in the model, one in the queue (its limit): the next is refused at once.
    let running = tokio::spawn(crate::app(h.state.clone()).oneshot(classify("m", 0.0)));
    until_running(&h.observed, 1).await;
    let queued = tokio::spawn(crate::app(h.state.clone()).oneshot(classify("m", 0.0)));
    let servable = h.state.registry.resolve("m", None).unwrap();
    for _ in 0..4000 {
        if servable.image().unwrap().queue.depth() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let refused = h.send(classify("m", 0.0)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    gate.open();
    assert_eq!(running.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(queued.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlines_answer_504_and_skip_compute() {
    let gate = Gate::new();
    let h = with_model("max_batch_size = 1", &gate.weights()).await;
    let mut slow = classify("m", 0.0);
    slow.headers_mut().insert("x-request-timeout-ms", "50".parse().unwrap());
    let slow = tokio::spawn(crate::app(h.state.clone()).oneshot(slow));
    until_running(&h.observed, 1).await;
    // The model is busy with the first request: the second expires in the queue.
    let mut queued = classify("m", 0.0);
    queued.headers_mut().insert("x-request-timeout-ms", "50".parse().unwrap());
    assert_eq!(h.send(queued).await.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::GATEWAY_TIMEOUT);
    gate.open();
    until_running(&h.observed, 0).await;
    // Let the instance thread pick its next batch: the expired request is pruned, never run.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(h.observed.batch_sizes.lock().unwrap().len(), 1);
    let mut bad = classify("m", 0.0);
    bad.headers_mut().insert("x-request-timeout-ms", "soon".parse().unwrap());
    let (s, v) = read_json(h.send(bad).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("x-request-timeout-ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_run_batches_side_by_side() {
    let gate = Gate::new();
    let h = with_model("instances = 2\nmax_batch_size = 1", &gate.weights()).await;
    let both = tokio::spawn(join_all((0..2).map(|_| crate::app(h.state.clone()).oneshot(classify("m", 0.0)))));
    // Both calls are inside the model at once before either may finish.
    until_running(&h.observed, 2).await;
    gate.open();
    assert!(both.await.unwrap().iter().all(|r| r.as_ref().unwrap().status() == StatusCode::OK));
    assert_eq!(h.observed.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_whose_client_left_never_reach_the_model() {
    let gate = Gate::new();
    let h = with_model("max_batch_size = 1", &gate.weights()).await;
    let running = tokio::spawn(crate::app(h.state.clone()).oneshot(classify("m", 0.0)));
    until_running(&h.observed, 1).await;
    // The second client gives up while its request is still queued behind the first.
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(50), h.send(classify("m", 0.0))).await;
    assert!(gave_up.is_err());
    gate.open();
    assert_eq!(running.await.unwrap().unwrap().status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h.observed.batch_sizes.lock().unwrap().len(), 1, "the abandoned request was computed");
}

#[tokio::test]
async fn a_request_bigger_than_a_batch_is_split_across_forward_passes() {
    let h = with_model("max_batch_size = 4", "shift 0").await;
    // Ten images with values 0.0, 0.1, ... 0.9: the fake answers round(9 v), so labels 0..9 in order.
    let images: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32 / 10.0; 784]).collect();
    let body = json!({ "images": images }).to_string();
    let req = Request::post("/classify?model=m").header("content-type", "application/json").body(Body::from(body));
    let (status, v) = read_json(h.send(req.unwrap()).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let labels: Vec<u64> = v["predictions"].as_array().unwrap().iter().map(|p| p["label"].as_u64().unwrap()).collect();
    assert_eq!(labels, [0, 1, 2, 3, 4, 5, 5, 6, 7, 8]);
    let mut sizes = h.observed.batch_sizes.lock().unwrap().clone();
    sizes.sort_unstable();
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
}
