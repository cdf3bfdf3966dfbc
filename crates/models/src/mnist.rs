//! MNIST-format (IDX) datasets: the four standard files, gzipped or not.
//!
//! Reads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
//! `t10k-labels-idx1-ubyte` (each optionally with `.gz`; gzip is detected by its magic bytes).
//! Every failure names the file and what was expected: a missing file, a wrong magic number, a
//! truncated body, labels that do not match the image count, or a label outside 0..=9.
//! Sizes come from the header and are bounded before anything is allocated.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("missing {name}: looked for {tried}")]
    Missing { name: String, tried: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch { images: PathBuf, n_images: usize, labels: PathBuf, n_labels: usize },
}

/// One split: `n` images of `rows x cols x channels` bytes (MNIST: one channel, 0 =
/// background) and their labels.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.rows * self.cols * self.channels
    }

    /// The first `n` examples (all when `n` is larger).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
            channels: self.channels,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
}

/// Largest image count accepted from a header (MNIST has 60k; this bounds allocations).
const MAX_ITEMS: usize = 10_000_000;
const MAX_SIDE: usize = 4096;
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    Ok(Dataset {
        train: load_split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        test: load_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    })
}

fn load_split(dir: &Path, images: &str, labels: &str) -> Result<Split, DataError> {
    let ipath = find(dir, images)?;
    let lpath = find(dir, labels)?;
    let (n_images, rows, cols, pixels) = parse_images(&ipath, &read_maybe_gz(&ipath)?)?;
    let labels = parse_labels(&lpath, &read_maybe_gz(&lpath)?)?;
    if labels.len() != n_images {
        return Err(DataError::CountMismatch { images: ipath, n_images, labels: lpath, n_labels: labels.len() });
    }
    Ok(Split { images: pixels, labels, rows, cols, channels: 1 })
}

fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let candidates = [dir.join(name), dir.join(format!("{name}.gz"))];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| DataError::Missing {
        name: name.to_owned(),
        tried: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or "),
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io { path: path.to_owned(), source };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Bounded: the largest valid file is a header plus MAX_ITEMS images of MAX_SIDE² bytes,
        // but MNIST-sized data is far smaller; cap decompression at 1 GiB to stop gzip bombs.
        flate2::read::GzDecoder::new(&raw[..]).take(1 << 30).read_to_end(&mut out).map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn format_err(path: &Path, message: String) -> DataError {
    DataError::Format { path: path.to_owned(), message }
}

/// Parses an IDX3 image file (already decompressed): count, rows, cols and the pixels. `path`
/// only names the file in errors.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    if bytes.len() < 16 {
        return Err(format_err(path, format!("truncated header: need 16 bytes, got {}", bytes.len())));
    }
    let magic = be_u32(bytes, 0);
    if magic != IMAGES_MAGIC {
        return Err(format_err(
            path,
            format!("wrong magic number: expected 0x{IMAGES_MAGIC:08x} (idx3 ubyte images), got 0x{magic:08x}"),
        ));
    }
    let (n, rows, cols) = (be_u32(bytes, 4) as usize, be_u32(bytes, 8) as usize, be_u32(bytes, 12) as usize);
    if n > MAX_ITEMS || rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(format_err(path, format!("implausible header: {n} images of {rows}x{cols}")));
    }
    let want = n * rows * cols;
    let body = &bytes[16..];
    if body.len() != want {
        return Err(format_err(
            path,
            format!(
                "{} body: header declares {n} images of {rows}x{cols} = {want} bytes, got {}",
                if body.len() < want { "truncated" } else { "oversized" },
                body.len()
            ),
        ));
    }
    Ok((n, rows, cols, body.to_vec()))
}

/// Parses an IDX1 label file (already decompressed).
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    if bytes.len() < 8 {
        return Err(format_err(path, format!("truncated header: need 8 bytes, got {}", bytes.len())));
    }
    let magic = be_u32(bytes, 0);
    if magic != LABELS_MAGIC {
        return Err(format_err(
            path,
            format!("wrong magic number: expected 0x{LABELS_MAGIC:08x} (idx1 ubyte labels), got 0x{magic:08x}"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    if n > MAX_ITEMS {
        return Err(format_err(path, format!("implausible header: {n} labels")));
    }
    let body = &bytes[8..];
    if body.len() != n {
        return Err(format_err(path, format!("header declares {n} labels, got {} bytes", body.len())));
    }
    if let Some((i, l)) = body.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(format_err(path, format!("label {i} is {l}; labels must be 0..=9")));
    }
    Ok(body.to_vec())
}

/// Writes a split as the two uncompressed IDX files (used by tests to make small datasets).
pub fn write_split(dir: &Path, prefix: &str, split: &Split) -> std::io::Result<()> {
    let mut img = Vec::with_capacity(16 + split.images.len());
    for v in [IMAGES_MAGIC, split.len() as u32, split.rows as u32, split.cols as u32] {
        img.extend_from_slice(&v.to_be_bytes());
    }
    img.extend_from_slice(&split.images);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img)?;
    let mut lab = Vec::with_capacity(8 + split.len());
    for v in [LABELS_MAGIC, split.len() as u32] {
        lab.extend_from_slice(&v.to_be_bytes());
    }
    lab.extend_from_slice(&split.labels);
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Split {
        Split {
            images: (0..n * 4).map(|i| i as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            rows: 2,
            cols: 2,
            channels: 1,
        }
    }

    fn write_both(dir: &Path, n: usize) {
        write_split(dir, "train", &tiny(n)).unwrap();
        write_split(dir, "t10k", &tiny(2)).unwrap();
    }

    #[test]
    fn round_trips_plain_and_gz() {
        let tmp = tempfile::tempdir().unwrap();
        write_both(tmp.path(), 5);
        let ds = load_dir(tmp.path()).unwrap();
        assert_eq!(ds.train.len(), 5);
        assert_eq!(ds.train.images[4], 4);
        // gzip one file under the .gz name
        let p = tmp.path().join("t10k-labels-idx1-ubyte");
        let raw = std::fs::read(&p).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte.gz"), enc.finish().unwrap()).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(load_dir(tmp.path()).unwrap().test.labels, [0, 1]);
    }

    #[test]
    fn clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("missing train-images-idx3-ubyte"), "{err}");

        write_both(tmp.path(), 5);
        let p = tmp.path().join("train-images-idx3-ubyte");
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        let err = load_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("truncated body") && err.contains("20 bytes, got 17"), "{err}");

        let mut bad = good.clone();
        bad[3] = 0x01;
        std::fs::write(&p, &bad).unwrap();
        let err = load_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("wrong magic number") && err.contains("0x00000801"), "{err}");

        std::fs::write(&p, &good).unwrap();
        write_split(tmp.path(), "train", &Split { labels: vec![1, 2, 3], ..tiny(5) }).unwrap();
        std::fs::write(&p, &good).unwrap();
        let err = load_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("5 images") && err.contains("3 labels"), "{err}");

        write_split(tmp.path(), "train", &Split { labels: vec![1, 2, 3, 4, 12], ..tiny(5) }).unwrap();
        let err = load_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("label 4 is 12"), "{err}");
    }
}
