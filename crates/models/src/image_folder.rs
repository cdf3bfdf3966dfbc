//! Picture folders in torchvision's `ImageFolder` layout: one sub-folder per class, named for
//! its label, holding PNG or JPEG pictures of any size. They are read into one [`Split`] of
//! equal-size pictures, resized as the server resizes uploads (the same filter), so a model
//! sees the same pixels in training and in service.
//!
//! Headers are read first (sizes and channel counts, in parallel), so a folder with an
//! unreadable picture, an empty class or mixed grey and colour pictures is refused by name
//! before anything is decoded, and the memory the pictures will take is checked against a
//! limit before it is allocated.

use std::path::{Path, PathBuf};

use image::{ColorType, ImageDecoder, ImageReader};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::digits::CnnShape;
use crate::mnist::Split;

/// What [`read`] is asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// `(height, width)` every picture is resized to; `None`: the pictures' own size when they
    /// all share one, else [`DEFAULT_SIDE`] square.
    pub size: Option<(usize, usize)>,
    /// 1 (grey) or 3 (RGB) channels; `None`: what the pictures are, refusing a mix.
    pub channels: Option<usize>,
    /// The most bytes the resized pictures may take together.
    pub max_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { size: None, channels: None, max_bytes: 8 << 30 }
    }
}

/// The side pictures of different sizes are resized to when no size is given.
pub const DEFAULT_SIDE: usize = 64;
/// The picture files read (by extension, case aside).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// Pictures whose header declares more than this a side are refused (decompression bombs).
const MAX_PICTURE_SIDE: u32 = 16_384;

/// A folder read: the class labels (folder names, sorted) and every picture, labelled by the
/// index of its class.
#[derive(Debug)]
pub struct Folder {
    pub classes: Vec<String>,
    pub split: Split,
    /// Files left out: not PNG or JPEG by their name, hidden, or in a nested folder.
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: no class folders (the layout is one sub-folder per class, named for its label)")]
    NoClasses(PathBuf),
    #[error("{0}: only one class folder ({1:?}); a classifier needs at least two")]
    OneClass(PathBuf, String),
    #[error("{dir}: {count} class folders; at most {max}")]
    TooManyClasses { dir: PathBuf, count: usize, max: usize },
    #[error("class folder {0} holds no PNG or JPEG picture")]
    EmptyClass(PathBuf),
    #[error("{count} unreadable pictures: {list}")]
    Unreadable { count: usize, list: String },
    #[error("the pictures mix grey and colour ({grey} is grey, {colour} is colour): convert them, or pass --channels 1 or 3")]
    MixedChannels { grey: PathBuf, colour: PathBuf },
    #[error("{0}")]
    Size(String),
    #[error("{count} pictures of {height}x{width}x{channels} take {bytes} bytes; the limit is {max}")]
    TooLarge { count: usize, height: usize, width: usize, channels: usize, bytes: usize, max: usize },
}

/// The class names, each picture's class and path, and how many files were skipped.
type Listing = (Vec<String>, Vec<(u8, PathBuf)>, usize);

/// The pictures of each class folder of `dir`, sorted by file name.
fn list(dir: &Path) -> Result<Listing, FolderError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FolderError::Io { path, source }
    };
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            classes.push(name);
        }
    }
    classes.sort();
    match classes.len() {
        0 => return Err(FolderError::NoClasses(dir.to_owned())),
        1 => return Err(FolderError::OneClass(dir.to_owned(), classes.remove(0))),
        n if n > CnnShape::MAX_CLASSES => {
            return Err(FolderError::TooManyClasses { dir: dir.to_owned(), count: n, max: CnnShape::MAX_CLASSES })
        }
        _ => {}
    }
    let (mut files, mut skipped) = (Vec::new(), 0);
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        let mut pictures = Vec::new();
        for entry in std::fs::read_dir(&cdir).map_err(io(&cdir))? {
            let path = entry.map_err(io(&cdir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            if !name.starts_with('.') && path.is_file() && EXTENSIONS.contains(&ext.as_str()) {
                pictures.push(path);
            } else {
                skipped += 1;
            }
        }
        if pictures.is_empty() {
            return Err(FolderError::EmptyClass(cdir));
        }
        pictures.sort();
        files.extend(pictures.into_iter().map(|p| (label as u8, p)));
    }
    Ok((classes, files, skipped))
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, String> {
    let mut r = ImageReader::open(path).map_err(|e| e.to_string())?.with_guessed_format().map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    r.limits(limits);
    Ok(r)
}

/// `(width, height, channels)` from the header alone (channels: 1 grey, 3 colour).
fn probe(path: &Path) -> Result<(u32, u32, usize), String> {
    let decoder = reader(path)?.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    let channels = match decoder.color_type() {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => 1,
        _ => 3,
    };
    Ok((w, h, channels))
}

/// Reads the folder; see the module's documentation.
pub fn read(dir: &Path, opts: &Options) -> Result<Folder, FolderError> {
    let (classes, files, skipped) = list(dir)?;
    let probes: Vec<Result<(u32, u32, usize), String>> = files.par_iter().map(|(_, p)| probe(p)).collect();
    let bad: Vec<String> = files
        .iter()
        .zip(&probes)
        .filter_map(|((_, p), r)| r.as_ref().err().map(|e| format!("{} ({e})", p.display())))
        .collect();
    if !bad.is_empty() {
        let mut list = bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        if bad.len() > 5 {
            list.push_str(&format!("; and {} more", bad.len() - 5));
        }
        return Err(FolderError::Unreadable { count: bad.len(), list });
    }
    let probes: Vec<(u32, u32, usize)> = probes.into_iter().map(|r| r.expect("errors returned above")).collect();
    let channels = match opts.channels {
        Some(c) => c,
        None => {
            let grey = probes.iter().position(|p| p.2 == 1);
            let colour = probes.iter().position(|p| p.2 == 3);
            match (grey, colour) {
                (Some(g), Some(c)) => {
                    return Err(FolderError::MixedChannels { grey: files[g].1.clone(), colour: files[c].1.clone() })
                }
                (Some(_), None) => 1,
                _ => 3,
            }
        }
    };
    let (height, width) = opts.size.unwrap_or_else(|| {
        let (w, h, _) = probes[0];
        if probes.iter().all(|p| (p.0, p.1) == (w, h)) {
            (h as usize, w as usize)
        } else {
            (DEFAULT_SIDE, DEFAULT_SIDE)
        }
    });
    CnnShape { height, width, channels, classes: classes.len() }
        .check()
        .map_err(|e| FolderError::Size(format!("{e} (resize them with --size HxW)")))?;
    let per = height * width * channels;
    let bytes = per.saturating_mul(files.len());
    if bytes > opts.max_bytes {
        return Err(FolderError::TooLarge { count: files.len(), height, width, channels, bytes, max: opts.max_bytes });
    }
    let decoded: Vec<Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|(_, path)| {
            let img = reader(path)?.decode().map_err(|e| e.to_string())?;
            let (w, h) = (width as u32, height as u32);
            let filter = image::imageops::FilterType::Triangle;
            Ok(if channels == 1 {
                image::imageops::resize(&img.to_luma8(), w, h, filter).into_raw()
            } else {
                image::imageops::resize(&img.to_rgb8(), w, h, filter).into_raw()
            })
        })
        .collect();
    let mut images = Vec::with_capacity(bytes);
    for ((_, path), d) in files.iter().zip(decoded) {
        let pixels = d.map_err(|e| FolderError::Unreadable { count: 1, list: format!("{} ({e})", path.display()) })?;
        images.extend_from_slice(&pixels);
    }
    let labels = files.iter().map(|(l, _)| *l).collect();
    Ok(Folder { classes, split: Split { images, labels, rows: height, cols: width, channels }, skipped })
}

/// Splits off `fraction` of each class (shuffled with `seed`) as a validation set: every class
/// keeps at least one training picture and, when it has two or more, gives at least one.
pub fn validation_split(all: &Split, fraction: f64, seed: u64) -> (Split, Split) {
    let classes = all.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..all.len()).filter(|&i| all.labels[i] as usize == c).collect();
        idx.shuffle(&mut rng);
        let n = idx.len();
        let k = if fraction <= 0.0 || n < 2 { 0 } else { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) };
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (pick(all, &train), pick(all, &val))
}

fn pick(all: &Split, idx: &[usize]) -> Split {
    let len = all.image_len();
    let mut images = Vec::with_capacity(idx.len() * len);
    for &i in idx {
        images.extend_from_slice(&all.images[i * len..(i + 1) * len]);
    }
    Split {
        images,
        labels: idx.iter().map(|&i| all.labels[i]).collect(),
        rows: all.rows,
        cols: all.cols,
        channels: all.channels,
    }
}

/// The mean value of the pictures' border pixels, in [0, 1]: MNIST-like data (light shapes on
/// black) gives about 0.
pub fn border_mean(split: &Split) -> f32 {
    let (h, w, c) = (split.rows, split.cols, split.channels);
    let (mut sum, mut n) = (0u64, 0u64);
    for img in split.images.chunks_exact(split.image_len()) {
        for y in 0..h {
            for x in 0..w {
                if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                    sum += img[(y * w + x) * c..][..c].iter().map(|&v| v as u64).sum::<u64>();
                    n += c as u64;
                }
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum as f32 / n as f32 / 255.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(path: &Path, img: image::DynamicImage) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(path).unwrap();
    }

    fn grey(w: u32, h: u32, v: u8) -> image::DynamicImage {
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(w, h, image::Luma([v])))
    }

    #[test]
    fn reads_classes_sorted_resizes_and_labels() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        save(&d.join("shirt/a.png"), grey(12, 12, 10));
        save(&d.join("shirt/b.PNG"), grey(12, 12, 20));
        save(&d.join("boot/x.png"), grey(12, 12, 200));
        std::fs::write(d.join("boot/notes.txt"), "not a picture").unwrap();
        std::fs::create_dir_all(d.join(".hidden")).unwrap();
        let f = read(d, &Options::default()).unwrap();
        assert_eq!(f.classes, ["boot", "shirt"]);
        assert_eq!(f.split.labels, [0, 1, 1]);
        assert_eq!((f.split.rows, f.split.cols, f.split.channels), (12, 12, 1));
        assert_eq!(f.split.images[0], 200);
        assert_eq!(f.skipped, 1);
        let f = read(d, &Options { size: Some((16, 20)), channels: Some(3), ..Options::default() }).unwrap();
        assert_eq!((f.split.rows, f.split.cols, f.split.channels), (16, 20, 3));
        assert_eq!(f.split.images.len(), 3 * 16 * 20 * 3);
        assert_eq!(&f.split.images[..3], &[200, 200, 200]);
        // Different sizes, no size given: the default square.
        save(&d.join("boot/y.png"), grey(30, 14, 0));
        let f = read(d, &Options::default()).unwrap();
        assert_eq!((f.split.rows, f.split.cols), (DEFAULT_SIDE, DEFAULT_SIDE));
    }

    #[test]
    fn refuses_bad_folders_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let err = |d: &Path| read(d, &Options::default()).unwrap_err().to_string();
        assert!(err(d).contains("no class folders"), "{}", err(d));
        save(&d.join("cat/1.png"), grey(12, 12, 0));
        assert!(err(d).contains("only one class folder (\"cat\")"), "{}", err(d));
        std::fs::create_dir_all(d.join("dog")).unwrap();
        std::fs::write(d.join("dog/readme.md"), "x").unwrap();
        assert!(
            err(d).contains("class folder") && err(d).contains("dog") && err(d).contains("no PNG or JPEG"),
            "{}",
            err(d)
        );
        std::fs::write(d.join("dog/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = err(d);
        assert!(e.contains("1 unreadable pictures") && e.contains("broken.png"), "{e}");
        std::fs::remove_file(d.join("dog/broken.png")).unwrap();
        save(&d.join("dog/2.png"), image::DynamicImage::ImageRgb8(image::RgbImage::new(12, 12)));
        let e = err(d);
        assert!(e.contains("mix grey and colour") && e.contains("1.png") && e.contains("2.png"), "{e}");
        let ok = read(d, &Options { channels: Some(1), ..Options::default() }).unwrap();
        assert_eq!(ok.split.channels, 1);
        let e = read(d, &Options { size: Some((8, 8)), channels: Some(1), ..Options::default() }).unwrap_err();
        assert!(e.to_string().contains("--size"), "{e}");
        let e = read(d, &Options { channels: Some(1), max_bytes: 100, ..Options::default() }).unwrap_err();
        assert!(e.to_string().contains("limit is 100"), "{e}");
    }

    #[test]
    fn validation_split_is_stratified_and_seeded() {
        let all = Split {
            images: (0..30).map(|i| i as u8).collect(),
            labels: [vec![0u8; 20], vec![1u8; 9], vec![2u8; 1]].concat(),
            rows: 1,
            cols: 1,
            channels: 1,
        };
        let (t, v) = validation_split(&all, 0.2, 7);
        assert_eq!((t.len(), v.len()), (24, 6));
        assert_eq!(v.labels.iter().filter(|&&l| l == 0).count(), 4);
        assert_eq!(v.labels.iter().filter(|&&l| l == 1).count(), 2);
        assert!(!v.labels.contains(&2), "a class of one stays in training");
        let mut seen: Vec<u8> = t.images.iter().chain(&v.images).copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..30).collect::<Vec<u8>>(), "every picture once, its label with it");
        let (_, again) = validation_split(&all, 0.2, 7);
        assert_eq!(again.images, v.images);
        let (_, other) = validation_split(&all, 0.2, 8);
        assert_ne!(other.images, v.images);
    }
}
