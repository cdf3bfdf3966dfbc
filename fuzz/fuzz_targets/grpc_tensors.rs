//! gRPC request messages from arbitrary bytes: KServe `ModelInferRequest` (raw and typed
//! contents) and TF Serving `PredictRequest` (`tensor_content` and typed values), through the
//! decoders that turn them into tensors, under a small memory budget.
#![no_main]
use aiserve_runtime::budget::MemoryBudget;
use aiserve_server::grpc::pb::inference::ModelInferRequest;
use aiserve_server::grpc::pb::tensorflow::serving::PredictRequest;
use aiserve_server::kserve::Values;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn count(inputs: &[aiserve_server::kserve::Input]) -> usize {
    inputs
        .iter()
        .map(|i| match &i.values {
            Values::Numbers(v) => v.len(),
            Values::Texts(t) => t.len(),
            Values::Bytes(b) => b.len(),
        })
        .sum()
}

fuzz_target!(|data: &[u8]| {
    let budget = MemoryBudget::new(1 << 20);
    if let Ok(req) = ModelInferRequest::decode(data) {
        let hold = budget.hold();
        if let Ok(inputs) = aiserve_server::grpc::tensors::decode_inputs(req.inputs, req.raw_input_contents, &hold) {
            // Every value came from the message: never more values than bytes.
            assert!(count(&inputs) <= data.len());
        }
    }
    if let Ok(req) = PredictRequest::decode(data) {
        let hold = budget.hold();
        if let Ok(inputs) = aiserve_server::grpc::tfserving::decode_inputs(req.inputs, &hold) {
            assert!(count(&inputs) <= data.len());
        }
    }
});
