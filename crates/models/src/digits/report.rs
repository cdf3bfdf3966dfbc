//! Pictures of a training run for a person to look at, written into the version directory next
//! to `metrics.json`: `curves.png` (loss and accuracy per epoch, training against evaluation)
//! and `confusion.png` (which true class was taken for which, on the evaluation pictures).
//!
//! Drawn with plotters on its bitmap backend; text is set in DejaVu Sans, compiled in (the
//! `dejavu` crate), so a machine without fonts draws the same picture.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::train::EpochMetrics;

pub const CURVES_FILE: &str = "curves.png";
pub const CONFUSION_FILE: &str = "confusion.png";

/// What a run's pictures are drawn from.
pub struct Report<'a> {
    pub epochs: &'a [EpochMetrics],
    /// What the evaluation ran on: `test` or `validation`.
    pub eval: &'a str,
    /// `matrix[true][predicted]` counts on the evaluation pictures, and the class labels.
    pub confusion: Vec<Vec<u32>>,
    /// What the matrix counts (`pictures`; the digit-strings reader counts `digits`).
    pub counted: &'a str,
    pub labels: &'a [String],
}

const FONT: &str = "sans-serif";

/// One curve panel's pair of series (training, evaluation) from an epoch's metrics.
type Series = fn(&EpochMetrics) -> (f64, f64);

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans is a valid font: registering it cannot fail.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("drawing the training report: {e}"))
}

/// Writes both pictures into `dir`.
pub fn write(dir: &Path, report: &Report) -> std::io::Result<()> {
    fonts();
    curves(&dir.join(CURVES_FILE), report.epochs, report.eval).map_err(err)?;
    confusion(&dir.join(CONFUSION_FILE), &report.confusion, report.labels, report.counted).map_err(err)
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

fn curves(path: &Path, epochs: &[EpochMetrics], eval: &str) -> Drawn {
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let last = epochs.len().max(2) as f64;
    let panels: [(&DrawingArea<_, _>, &str, Series); 2] = [
        (&left, "loss", |e| (e.loss, e.test_loss)),
        (&right, "accuracy %", |e| (e.accuracy * 100.0, e.test_accuracy * 100.0)),
    ];
    for (area, name, value) in panels {
        let values: Vec<(f64, f64)> = epochs.iter().map(value).collect();
        let hi = values.iter().flat_map(|v| [v.0, v.1]).fold(f64::MIN, f64::max);
        let lo = values.iter().flat_map(|v| [v.0, v.1]).fold(f64::MAX, f64::min);
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(name, (FONT, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(1f64..last, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_labels(epochs.len().clamp(2, 12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("epoch")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        let series = [
            ("training", values.iter().map(|v| v.0).collect::<Vec<_>>(), BLUE),
            (eval, values.iter().map(|v| v.1).collect(), RED),
        ];
        for (label, ys, color) in series {
            let points: Vec<(f64, f64)> = epochs.iter().zip(ys).map(|(e, y)| (e.epoch as f64, y)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn confusion(path: &Path, matrix: &[Vec<u32>], labels: &[String], counted: &str) -> Drawn {
    let k = matrix.len().max(1);
    // Cells shrink with the number of classes so the picture stays under ~900 pixels a side.
    let cell = (640 / k).clamp(3, 48) as i32;
    let (left, top) = (if cell >= 10 { 150 } else { 20 }, 50);
    let side = cell * k as i32;
    let root = BitMapBackend::new(path, ((left + side + 20) as u32, (top + side + 40) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let title =
        format!("confusion: true class (rows) taken for (columns), {} {counted}", matrix.iter().flatten().sum::<u32>());
    root.draw(&Text::new(title, (10, 10), (FONT, 16)))?;
    for (i, row) in matrix.iter().enumerate() {
        let total = row.iter().sum::<u32>().max(1) as f64;
        for (j, &n) in row.iter().enumerate() {
            let share = n as f64 / total;
            // White for none, deep blue for all of the row; the diagonal in blue, errors in red.
            let base = if i == j { (31, 111, 235) } else { (220, 60, 60) };
            let mix = |c: u8| (255.0 - (255.0 - c as f64) * share.sqrt()) as u8;
            let color = RGBColor(mix(base.0), mix(base.1), mix(base.2));
            let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], color.filled()))?;
            if cell >= 28 && n > 0 {
                let ink = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(n.to_string(), (x + 3, y + cell / 2 - 6), (FONT, 12).into_font().color(&ink)))?;
            }
        }
        if cell >= 10 {
            let name: String = labels.get(i).map_or(String::new(), |l| l.chars().take(16).collect());
            // Columns are numbered; rows say which number is which label (once when they agree).
            let row = if name == i.to_string() { name } else { format!("{i} {name}") };
            root.draw(&Text::new(row, (6, top + i as i32 * cell + cell / 2 - 7), (FONT, 13)))?;
        }
    }
    if cell >= 14 {
        for j in 0..k {
            root.draw(&Text::new(j.to_string(), (left + j as i32 * cell + cell / 2 - 4, top - 16), (FONT, 13)))?;
        }
    }
    root.draw(&Rectangle::new([(left, top), (left + side, top + side)], BLACK.stroke_width(1)))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, loss: f64, acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            loss,
            accuracy: acc,
            test_loss: loss * 1.1,
            test_accuracy: acc - 0.01,
            seconds: 1.0,
            images_per_second: 1.0,
            learning_rate: 1e-3,
        }
    }

    /// Both pictures are written, decode as PNGs, hold more than a background, and the
    /// confusion picture is darkest on the diagonal.
    #[test]
    fn draws_curves_and_a_confusion_matrix() {
        let tmp = tempfile::tempdir().unwrap();
        let epochs = [epoch(1, 0.5, 0.8), epoch(2, 0.3, 0.9), epoch(3, 0.2, 0.93)];
        let labels: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
        let confusion = vec![vec![90, 8, 2], vec![5, 95, 0], vec![10, 0, 90]];
        write(
            tmp.path(),
            &Report { epochs: &epochs, eval: "validation", confusion, labels: &labels, counted: "pictures" },
        )
        .unwrap();
        let curves = image::open(tmp.path().join(CURVES_FILE)).unwrap().to_rgb8();
        assert_eq!(curves.dimensions(), (1000, 420));
        let colours: std::collections::HashSet<_> = curves.pixels().map(|p| p.0).collect();
        assert!(colours.len() > 20, "lines, text and axes are drawn ({} colours)", colours.len());
        let m = image::open(tmp.path().join(CONFUSION_FILE)).unwrap().to_rgb8();
        let cell = 48;
        let at = |i: u32, j: u32| m.get_pixel(150 + j * cell + cell - 4, 50 + i * cell + 4).0;
        let lum = |p: [u8; 3]| p.iter().map(|&c| c as u32).sum::<u32>();
        assert!(lum(at(0, 0)) < lum(at(0, 1)) && lum(at(1, 1)) < lum(at(2, 1)), "the diagonal is darkest");
    }
}
