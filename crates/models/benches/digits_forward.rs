//! Digits CNN forward throughput: our fused NHWC kernels vs candle's stock conv2d path.
//!
//!     cargo bench -p aiserve-models --bench digits_forward
//!
//! Reports time per batch; images/s = batch / time. Both paths run on the same weights and
//! inputs, and produce the same logits within 1e-5 (see the unit tests).

use aiserve_models::digits::DigitsCnn;
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn forward(c: &mut Criterion) {
    aiserve_models::configure_threads();
    // Detached, as served: weights that track no gradient take the inference path.
    let model = DigitsCnn::init(1, &Device::Cpu).unwrap().0.detached();
    let mut group = c.benchmark_group("digits_forward");
    for batch in [1usize, 32, 256] {
        let data: Vec<f32> = (0..batch * 784).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect();
        let x = Tensor::from_vec(data, (batch, 28, 28, 1), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("fast", batch), &x, |b, x| b.iter(|| model.logits(x).unwrap()));
        if batch <= 32 {
            group.bench_with_input(BenchmarkId::new("candle_conv2d", batch), &x, |b, x| {
                b.iter(|| model.logits_reference(x).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = forward
}
criterion_main!(benches);
