//! How a sequence's keys and values are stored: f32 (the default; answers as transformers' f32
//! does) or f16 (llama.cpp's and vLLM's default: half the memory, so twice the tokens per
//! `--kv-cache-mb`, and half the bytes attention reads at long contexts, for a rounding of each
//! key and value to 11 significant bits).

use half::f16;

/// The element type of KV caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    pub const fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

/// Positions a cache grows by at a time: linear growth keeps a sequence's memory within this
/// many positions of what the engine's KV budget counts (doubling could hold twice as much).
const GROWTH: usize = 128;

/// One layer's keys or values of one sequence: rows of `kv_dim` values, one per position.
pub enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Rows {
    pub fn new(dtype: KvDtype) -> Self {
        match dtype {
            KvDtype::F32 => Rows::F32(Vec::new()),
            KvDtype::F16 => Rows::F16(Vec::new()),
        }
    }

    pub fn dtype(&self) -> KvDtype {
        match self {
            Rows::F32(_) => KvDtype::F32,
            Rows::F16(_) => KvDtype::F16,
        }
    }

    /// Keeps the first `values` values.
    pub fn truncate(&mut self, values: usize) {
        match self {
            Rows::F32(v) => v.truncate(values),
            Rows::F16(v) => v.truncate(values),
        }
    }

    /// A copy of the first `values` values (all of them if there are fewer).
    pub fn prefix(&self, values: usize) -> Self {
        match self {
            Rows::F32(v) => Rows::F32(v[..values.min(v.len())].to_vec()),
            Rows::F16(v) => Rows::F16(v[..values.min(v.len())].to_vec()),
        }
    }

    /// Appends `rows` (whole rows of `width` values), growing by [`GROWTH`] positions at a time.
    pub fn extend(&mut self, rows: impl ExactSizeIterator<Item = impl AsRef<[f32]>>, width: usize) {
        fn room<T>(v: &mut Vec<T>, more: usize, width: usize) {
            let need = v.len() + more;
            if need > v.capacity() {
                v.reserve_exact(need.next_multiple_of(GROWTH * width) - v.len());
            }
        }
        let more = rows.len() * width;
        match self {
            Rows::F32(v) => {
                room(v, more, width);
                rows.for_each(|r| v.extend_from_slice(r.as_ref()));
            }
            Rows::F16(v) => {
                room(v, more, width);
                rows.for_each(|r| v.extend(r.as_ref().iter().map(|x| f16::from_f32(*x))));
            }
        }
    }
}

/// What attention reads a cache as: f32 or f16 only (sealed), since attention's vector loads
/// read 8 values as 32 bytes (f32) or 16 (f16) as [`Elem::HALF`] says.
pub trait Elem: sealed::Sealed + Copy + Sync + Sized {
    /// Whether the values are f16 (else f32), for the vector loads in attention.
    const HALF: bool;
    fn to_f32(self) -> f32;
    /// The rows as this type (none if they hold the other one; the forward pass checks every
    /// sequence's caches against the model's type first).
    fn of(rows: &Rows) -> &[Self];
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

impl Elem for f32 {
    const HALF: bool = false;
    fn to_f32(self) -> f32 {
        self
    }
    fn of(rows: &Rows) -> &[f32] {
        match rows {
            Rows::F32(v) => v,
            Rows::F16(_) => &[],
        }
    }
}

impl Elem for f16 {
    const HALF: bool = true;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn of(rows: &Rows) -> &[f16] {
        match rows {
            Rows::F16(v) => v,
            Rows::F32(_) => &[],
        }
    }
}
