//! Validated image batches: what an image classifier backend receives.
//!
//! Every protocol decodes its wire format into a shape and a flat row-major `f32` buffer, then
//! calls [`ImageBatch::from_tensor`], which checks the shape against the model's declared input,
//! the element count and batch size against the limits, and every value for finiteness and range.
//! Backends therefore never see malformed input.

use crate::config::InputConfig;
use crate::error::InputError;

/// A batch of images, NHWC, row-major, values already checked against the model's range.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

/// What an input tensor must look like for a given model.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSpec {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub range: [f32; 2],
    /// The value of the training pictures' empty pixels (`InputConfig::background`).
    pub background: f32,
}

impl From<&InputConfig> for ImageSpec {
    fn from(c: &InputConfig) -> Self {
        Self { height: c.shape[0], width: c.shape[1], channels: c.shape[2], range: c.range, background: c.background }
    }
}

impl ImageSpec {
    /// Whether the model was trained on light shapes on a dark ground (MNIST's convention):
    /// its background sits in the lowest tenth of the range. Pictures of dark ink on paper are
    /// inverted for such models, and for no other.
    pub fn dark_background(&self) -> bool {
        let [lo, hi] = self.range;
        self.background <= lo + 0.1 * (hi - lo)
    }
}

impl ImageSpec {
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The batched shapes accepted, for error messages: `[N,28,28,1]`, `[N,28,28]`, `[N,784]`.
    pub fn accepted_shapes(&self) -> String {
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut shapes = vec![format!("[N,{h},{w},{c}]")];
        if c == 1 {
            shapes.push(format!("[N,{h},{w}]"));
        }
        shapes.push(format!("[N,{}]", self.image_len()));
        shapes.join(", ")
    }

    /// Number of images in a batched shape, or `None` when the shape is not one we accept.
    fn batch_of(&self, shape: &[usize]) -> Option<usize> {
        let (h, w, c) = (self.height, self.width, self.channels);
        match shape {
            [n, a, b, d] if (*a, *b, *d) == (h, w, c) => Some(*n),
            [n, a, b] if c == 1 && (*a, *b) == (h, w) => Some(*n),
            [n, len] if *len == self.image_len() => Some(*n),
            _ => None,
        }
    }
}

/// Limits applied while validating a batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most images in one request.
    pub max_batch: usize,
}

impl ImageBatch {
    /// Validates a batch-first tensor (KServe v2, TF Serving, `/classify` batches).
    pub fn from_tensor(
        spec: &ImageSpec,
        field: &str,
        shape: &[usize],
        data: Vec<f32>,
        limits: BatchLimits,
    ) -> Result<Self, InputError> {
        let n = spec.batch_of(shape).ok_or_else(|| {
            InputError::invalid(
                format!("{field}.shape"),
                format!("`{field}` shape must be one of {}, got {shape:?}", spec.accepted_shapes()),
            )
        })?;
        if n == 0 {
            return Err(InputError::invalid(
                format!("{field}.shape"),
                format!("`{field}` must hold at least one image, got 0"),
            ));
        }
        if n > limits.max_batch {
            return Err(InputError::too_large(format!("{field}.batch"), limits.max_batch, n));
        }
        // `n` is the client's claim: compare it with the values that arrived without overflowing.
        let expected = n.saturating_mul(spec.image_len());
        if data.len() != expected {
            return Err(InputError::invalid(
                format!("{field}.data"),
                format!("`{field}` shape {shape:?} needs {expected} values, got {}", data.len()),
            ));
        }
        check_values(spec, field, &data)?;
        Ok(Self { n, height: spec.height, width: spec.width, channels: spec.channels, data })
    }

    /// Validates one image given without a batch dimension: `[H,W]`, `[H,W,C]` or flat.
    pub fn single(spec: &ImageSpec, field: &str, shape: &[usize], data: Vec<f32>) -> Result<Self, InputError> {
        let (h, w, c) = (spec.height, spec.width, spec.channels);
        let ok = match shape {
            [a, b] => c == 1 && (*a, *b) == (h, w),
            [a, b, d] => (*a, *b, *d) == (h, w, c),
            [len] => *len == spec.image_len(),
            _ => false,
        };
        if !ok {
            return Err(InputError::invalid(
                field,
                format!(
                    "`{field}` must be {h}x{w} (rows of pixels) or a flat list of {} values, got shape {shape:?}",
                    spec.image_len()
                ),
            ));
        }
        check_values(spec, field, &data)?;
        Ok(Self { n: 1, height: h, width: w, channels: c, data })
    }

    /// Pieces of at most `max` images each, in order (a request bigger than a forward pass).
    pub fn split(&self, max: usize) -> Vec<ImageBatch> {
        let per_image = self.height * self.width * self.channels;
        self.data
            .chunks(max.max(1) * per_image.max(1))
            .map(|c| ImageBatch { n: c.len() / per_image.max(1), data: c.to_vec(), ..*self })
            .collect()
    }

    /// Concatenates batches for one forward pass; returns the row counts to split results back.
    pub fn concat(batches: &[&ImageBatch]) -> (ImageBatch, Vec<usize>) {
        let first = batches[0];
        let mut data = Vec::with_capacity(batches.iter().map(|b| b.data.len()).sum());
        let mut sizes = Vec::with_capacity(batches.len());
        for b in batches {
            data.extend_from_slice(&b.data);
            sizes.push(b.n);
        }
        let n = sizes.iter().sum();
        (ImageBatch { n, height: first.height, width: first.width, channels: first.channels, data }, sizes)
    }
}

fn check_values(spec: &ImageSpec, field: &str, data: &[f32]) -> Result<(), InputError> {
    let [lo, hi] = spec.range;
    if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !(**v >= lo && **v <= hi)) {
        let what = if v.is_finite() { "out of range" } else { "not a finite number" };
        return Err(InputError::invalid(
            format!("{field}.data"),
            format!("`{field}` values must be finite numbers in [{lo}, {hi}]; value {i} is {what}: {v}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec { height: 28, width: 28, channels: 1, range: [0.0, 1.0], background: 0.0 }
    }

    const LIM: BatchLimits = BatchLimits { max_batch: 8 };

    #[test]
    fn accepts_the_three_batched_shapes() {
        for shape in [vec![2, 28, 28, 1], vec![2, 28, 28], vec![2, 784]] {
            let b = ImageBatch::from_tensor(&spec(), "x", &shape, vec![0.5; 2 * 784], LIM).unwrap();
            assert_eq!((b.n, b.height, b.width, b.channels), (2, 28, 28, 1));
        }
    }

    #[test]
    fn rejects_wrong_shapes_and_counts() {
        let e = ImageBatch::from_tensor(&spec(), "x", &[1, 27, 28], vec![0.0; 756], LIM).unwrap_err();
        assert!(e.to_string().contains("[N,28,28,1], [N,28,28], [N,784]"), "{e}");
        assert!(e.to_string().contains("[1, 27, 28]"), "{e}");
        let e = ImageBatch::from_tensor(&spec(), "x", &[2, 784], vec![0.0; 784], LIM).unwrap_err();
        assert!(e.to_string().contains("needs 1568 values, got 784"), "{e}");
        let e = ImageBatch::from_tensor(&spec(), "x", &[9, 784], vec![0.0; 9 * 784], LIM).unwrap_err();
        assert_eq!(e, InputError::too_large("x.batch", 8, 9));
        let e = ImageBatch::from_tensor(&spec(), "x", &[0, 784], vec![], LIM).unwrap_err();
        assert!(e.to_string().contains("at least one image"), "{e}");
    }

    #[test]
    fn rejects_nan_inf_and_out_of_range() {
        for (bad, word) in
            [(f32::NAN, "not a finite"), (f32::INFINITY, "not a finite"), (1.5, "out of range"), (-0.1, "out of range")]
        {
            let mut d = vec![0.0; 784];
            d[17] = bad;
            let e = ImageBatch::single(&spec(), "image", &[28, 28], d).unwrap_err();
            assert!(e.to_string().contains(word) && e.to_string().contains("value 17"), "{e}");
        }
    }

    #[test]
    fn single_image_shapes() {
        assert!(ImageBatch::single(&spec(), "image", &[784], vec![0.0; 784]).is_ok());
        assert!(ImageBatch::single(&spec(), "image", &[28, 28, 1], vec![0.0; 784]).is_ok());
        let e = ImageBatch::single(&spec(), "image", &[28, 27], vec![0.0; 756]).unwrap_err();
        assert!(e.to_string().contains("28x28"), "{e}");
    }

    #[test]
    fn split_keeps_order() {
        let data: Vec<f32> = (0..5 * 784).map(|i| (i / 784) as f32 / 10.0).collect();
        let b = ImageBatch::from_tensor(&spec(), "b", &[5, 784], data, BatchLimits { max_batch: 5 }).unwrap();
        let parts = b.split(2);
        assert_eq!(parts.iter().map(|p| p.n).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(ImageBatch::concat(&parts.iter().collect::<Vec<_>>()).0, b);
        let e = ImageBatch::from_tensor(&spec(), "x", &[usize::MAX / 2, 784], vec![0.0; 784], LIM).unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
    }

    #[test]
    fn concat_keeps_order_and_sizes() {
        let a = ImageBatch::single(&spec(), "a", &[784], vec![0.1; 784]).unwrap();
        let b = ImageBatch::from_tensor(&spec(), "b", &[2, 784], vec![0.2; 1568], LIM).unwrap();
        let (all, sizes) = ImageBatch::concat(&[&a, &b]);
        assert_eq!(sizes, [1, 2]);
        assert_eq!(all.n, 3);
        assert_eq!(all.data[783], 0.1);
        assert_eq!(all.data[784], 0.2);
    }
}
