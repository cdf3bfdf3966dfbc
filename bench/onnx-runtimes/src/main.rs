//! ONNX Runtime (ort, load-dynamic) against tract-onnx on the three PP-OCR networks: same
//! inputs, 2 intra-op threads for ONNX Runtime and tract with its default executor, ROUNDS
//! alternations of SECONDS each.
//! Prints a markdown table of ms per run and the ratio.

use std::time::Instant;

const CASES: [(&str, [usize; 4]); 3] = [
    ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 640, 640]),
    ("ch_PP-OCRv4_rec_infer.onnx", [8, 3, 48, 320]),
    ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [8, 3, 48, 192]),
];

fn input(shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// Runs `f` for `secs` seconds after two warm-up runs; ms per run and the first output value.
fn time(secs: f64, mut f: impl FnMut() -> f32) -> (f64, f32) {
    let first = f();
    f();
    let (t, mut k) = (Instant::now(), 0);
    while t.elapsed().as_secs_f64() < secs {
        f();
        k += 1;
    }
    (t.elapsed().as_secs_f64() / k as f64 * 1e3, first)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let secs: f64 = args.next().map_or(3.0, |a| a.parse().expect("SECONDS"));
    let assets = std::env::var("AISERVE_ASSETS")
        .unwrap_or_else(|_| format!("{}/.cache/aiserve-assets", std::env::var("HOME").unwrap()));
    let lib = std::env::var("ORT_DYLIB_PATH").expect("set ORT_DYLIB_PATH (.ci/fetch-onnxruntime.sh prints it)");
    let env = ort::init_from(lib).expect("opening ONNX Runtime").build().unwrap();
    println!("| round | graph | input | ONNX Runtime ms | tract ms | tract / ONNX Runtime |");
    println!("|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for (file, shape) in CASES {
            let path = format!("{assets}/rapidocr/{file}");
            let x = input(&shape);
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let mut s = ort::session::Session::builder(&env)
                .unwrap()
                .with_intra_threads(2)
                .unwrap()
                .commit_from_file(&path)
                .unwrap();
            let name = s.inputs()[0].name().to_string();
            let (ort_ms, a) = time(secs, || {
                let t = ort::value::Tensor::from_array((dims.clone(), x.clone())).unwrap();
                let out = s.run(ort::inputs![name.as_str() => t]).unwrap();
                out[0].try_extract_tensor::<f32>().unwrap().1[0]
            });
            use tract_onnx::prelude::*;
            let model = tract_onnx::onnx()
                .model_for_path(&path)
                .unwrap()
                .with_input_fact(0, f32::fact(shape).into())
                .unwrap()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap();
            let t: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), x.clone()).unwrap().into();
            let (tract_ms, b) = time(secs, || {
                let out = model.run(tvec!(t.clone().into())).unwrap();
                out[0].to_plain_array_view::<f32>().unwrap().iter().next().copied().unwrap()
            });
            assert!((a - b).abs() < 1e-3, "{file}: the runtimes disagree ({a} vs {b})");
            println!("| {round} | {file} | {shape:?} | {ort_ms:.1} | {tract_ms:.1} | {:.2} |", tract_ms / ort_ms);
        }
    }
}
