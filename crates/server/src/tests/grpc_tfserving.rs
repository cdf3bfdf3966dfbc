//! TF Serving's gRPC API over a real HTTP/2 connection with tonic's generated clients: Predict
//! with `tensor_content` and typed values, versions and labels, output filters, texts into an
//! embedding model; GetModelMetadata's SignatureDefMap in an Any; GetModelStatus; and errors as
//! gRPC codes naming the field.

use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

use super::grpc_kserve::{f32s, harness, i64s, le_f32, serve, two_images};
use crate::grpc::pb::tensorflow as tf;
use crate::grpc::pb::tensorflow::serving as pb;
use pb::model_service_client::ModelServiceClient;
use pb::prediction_service_client::PredictionServiceClient;

fn spec(name: &str, version: Option<i64>) -> Option<pb::ModelSpec> {
    Some(pb::ModelSpec {
        name: name.into(),
        version_choice: version.map(pb::model_spec::VersionChoice::Version),
        signature_name: String::new(),
    })
}

fn shape(dims: &[i64]) -> Option<tf::TensorShapeProto> {
    Some(tf::TensorShapeProto {
        dim: dims.iter().map(|&size| tf::tensor_shape_proto::Dim { size, name: String::new() }).collect(),
        unknown_rank: false,
    })
}

fn images(dims: &[i64], content: bool) -> tf::TensorProto {
    let mut t =
        tf::TensorProto { dtype: tf::DataType::DtFloat as i32, tensor_shape: shape(dims), ..Default::default() };
    if content {
        t.tensor_content = le_f32(&two_images());
    } else {
        t.float_val = two_images();
    }
    t
}

fn predict_request(model: Option<pb::ModelSpec>, inputs: Vec<(&str, tf::TensorProto)>) -> pb::PredictRequest {
    pb::PredictRequest {
        model_spec: model,
        inputs: inputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        output_filter: Vec::new(),
    }
}

#[tokio::test]
async fn predict_metadata_and_status() {
    let h = harness().await;
    std::fs::write(h.repo().join("digits/model.toml"), "[version_labels]\nstable = 1\n").unwrap();
    h.poll().await;
    let g = serve(h.state.clone()).await;
    let channel = Channel::from_shared(format!("http://{}", g.addr)).unwrap().connect().await.unwrap();
    let mut p = PredictionServiceClient::new(channel.clone());
    let mut m = ModelServiceClient::new(channel);

    for content in [true, false] {
        let req = predict_request(spec("digits", None), vec![("image", images(&[2, 28, 28, 1], content))]);
        let r = p.predict(req).await.unwrap().into_inner();
        let ms = r.model_spec.unwrap();
        assert_eq!((ms.name.as_str(), ms.signature_name.as_str()), ("digits", "serving_default"));
        assert_eq!(ms.version_choice, Some(pb::model_spec::VersionChoice::Version(1)));
        let probs = &r.outputs["probabilities"];
        assert_eq!(probs.dtype, tf::DataType::DtFloat as i32);
        assert_eq!(probs.tensor_shape, shape(&[2, 10]));
        assert_eq!(f32s(&probs.tensor_content).len(), 20);
        let label = &r.outputs["label"];
        assert_eq!((label.dtype, i64s(&label.tensor_content)), (tf::DataType::DtInt64 as i32, vec![2, 9]));
    }
    // A version, a label, an output filter.
    let mut req = predict_request(spec("digits", Some(1)), vec![("image", images(&[2, 784], true))]);
    req.output_filter = vec!["label".into()];
    let r = p.predict(req).await.unwrap().into_inner();
    assert_eq!(r.outputs.keys().collect::<Vec<_>>(), ["label"]);
    let labelled = Some(pb::ModelSpec {
        name: "digits".into(),
        version_choice: Some(pb::model_spec::VersionChoice::VersionLabel("stable".into())),
        signature_name: "serving_default".into(),
    });
    assert!(p.predict(predict_request(labelled, vec![("image", images(&[2, 784], true))])).await.is_ok());
    // Texts into the embedding model.
    let texts = tf::TensorProto {
        dtype: tf::DataType::DtString as i32,
        tensor_shape: shape(&[2]),
        string_val: vec![b"hello".as_slice().into(), b"world".as_slice().into()],
        ..Default::default()
    };
    let r = p.predict(predict_request(spec("emb", None), vec![("text", texts)])).await.unwrap().into_inner();
    assert_eq!(r.outputs["embedding"].tensor_shape, shape(&[2, 4]));

    // Metadata: the signature in an Any, as TF Serving packs it.
    let md = p
        .get_model_metadata(pb::GetModelMetadataRequest {
            model_spec: spec("digits", None),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let any = &md.metadata["signature_def"];
    assert_eq!(any.type_url, "type.googleapis.com/tensorflow.serving.SignatureDefMap");
    let map = pb::SignatureDefMap::decode(any.value.as_slice()).unwrap();
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    assert_eq!(sig.inputs["image"].tensor_shape, shape(&[-1, 28, 28, 1]));
    assert_eq!(sig.inputs["image"].dtype, tf::DataType::DtFloat as i32);
    assert_eq!(sig.outputs["label"].dtype, tf::DataType::DtInt64 as i32);
    let err = p
        .get_model_metadata(pb::GetModelMetadataRequest { model_spec: spec("digits", None), metadata_field: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Status: every version, or one.
    let st = m.get_model_status(pb::GetModelStatusRequest { model_spec: spec("digits", None) }).await.unwrap();
    let v = &st.into_inner().model_version_status[0];
    assert_eq!((v.version, v.state), (1, pb::model_version_status::State::Available as i32));
    assert_eq!(v.status.as_ref().unwrap().error_code, tf::error::Code::Ok as i32);
    let err = m.get_model_status(pb::GetModelStatusRequest { model_spec: spec("digits", Some(9)) }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = m.get_model_status(pb::GetModelStatusRequest { model_spec: None }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn predict_errors_name_the_field() {
    let h = harness().await;
    let g = serve(h.state.clone()).await;
    let mut p = PredictionServiceClient::connect(format!("http://{}", g.addr)).await.unwrap();
    let mut wrong_sig = spec("digits", None);
    wrong_sig.as_mut().unwrap().signature_name = "other".into();
    let complex =
        tf::TensorProto { dtype: tf::DataType::DtComplex64 as i32, tensor_shape: shape(&[1]), ..Default::default() };
    let mut unknown_rank = images(&[2, 784], true);
    unknown_rank.tensor_shape.as_mut().unwrap().unknown_rank = true;
    let cases = vec![
        (predict_request(None, vec![]), Code::InvalidArgument, "model_spec"),
        (predict_request(spec("nope", None), vec![]), Code::NotFound, "nope"),
        (predict_request(wrong_sig, vec![("image", images(&[2, 784], true))]), Code::InvalidArgument, "signature"),
        (predict_request(spec("digits", Some(5)), vec![("image", images(&[2, 784], true))]), Code::NotFound, "5"),
        (
            predict_request(spec("digits", None), vec![("pixels", images(&[2, 784], true))]),
            Code::InvalidArgument,
            "pixels",
        ),
        (
            predict_request(spec("digits", None), vec![("image", images(&[3, 784], true))]),
            Code::InvalidArgument,
            "shape",
        ),
        (predict_request(spec("digits", None), vec![("image", complex)]), Code::InvalidArgument, "DT_COMPLEX64"),
        (predict_request(spec("digits", None), vec![("image", unknown_rank)]), Code::InvalidArgument, "tensor_shape"),
    ];
    for (req, code, text) in cases {
        let err = p.predict(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(text), "{:?} should mention {text:?}", err.message());
    }
}
