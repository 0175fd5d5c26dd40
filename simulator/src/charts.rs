//! Charts (PNG and SVG, plotters): decision latency, rides per hour, rejects
//! by reason, deny-list propagation delay, upload backlog over the day.
//!
//! Text is drawn with DejaVu Sans shipped in `assets/` (licence beside it),
//! registered with plotters' `ab_glyph` backend: no system font lookup and
//! no download.

use plotters::prelude::*;
use std::path::Path;

/// DejaVu Sans (fonts-dejavu-core), see `assets/DejaVuSans.LICENSE`.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// Chart size, pixels.
const SIZE: (u32, u32) = (960, 540);
/// Latency histogram buckets.
const LATENCY_BUCKETS: usize = 40;
/// Delay histogram buckets.
const DELAY_BUCKETS: usize = 24;

/// A chart's data.
#[derive(Clone, Debug)]
pub enum Chart {
    /// Bars with labels.
    Bars {
        /// Title.
        title: String,
        /// X axis.
        x_desc: String,
        /// Y axis.
        y_desc: String,
        /// (label, value).
        bars: Vec<(String, u64)>,
    },
    /// A line over (x hours, y).
    Line {
        /// Title.
        title: String,
        /// X axis.
        x_desc: String,
        /// Y axis.
        y_desc: String,
        /// Points.
        points: Vec<(f64, f64)>,
    },
}

fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    match chart {
        Chart::Bars {
            title,
            x_desc,
            y_desc,
            bars,
        } => {
            let n = bars.len().max(1) as u32;
            let ymax = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 1.1;
            let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
            let fmt = |x: &SegmentValue<u32>| match x {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            };
            let mut c = ChartBuilder::on(&root)
                .caption(title.as_str(), ("sans-serif", 24))
                .margin(14)
                .x_label_area_size(70)
                .y_label_area_size(80)
                .build_cartesian_2d((0u32..n).into_segmented(), 0f64..ymax)
                .map_err(e)?;
            c.configure_mesh()
                .disable_x_mesh()
                .x_labels(n as usize + 1)
                .x_label_formatter(&fmt)
                .x_label_style(("sans-serif", if n > 8 { 10 } else { 13 }))
                .x_desc(x_desc.as_str())
                .y_desc(y_desc.as_str())
                .draw()
                .map_err(e)?;
            // One rectangle per bar, in the bars' order: plotters'
            // `Histogram` sums its data in a `HashMap` and so writes the
            // same bars in a different order into each run's SVG.
            c.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let i = i as u32;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v as f64),
                    ],
                    BLUE.mix(0.7).filled(),
                );
                bar.set_margin(0, 0, 2, 2);
                bar
            }))
            .map_err(e)?;
        }
        Chart::Line {
            title,
            x_desc,
            y_desc,
            points,
        } => {
            let xmin = points.first().map_or(0.0, |p| p.0);
            let xmax = points.last().map_or(1.0, |p| p.0).max(xmin + 1.0);
            let ymax = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
            let mut c = ChartBuilder::on(&root)
                .caption(title.as_str(), ("sans-serif", 24))
                .margin(14)
                .x_label_area_size(60)
                .y_label_area_size(80)
                .build_cartesian_2d(xmin..xmax, 0f64..ymax)
                .map_err(e)?;
            c.configure_mesh()
                .x_desc(x_desc.as_str())
                .y_desc(y_desc.as_str())
                .draw()
                .map_err(e)?;
            c.draw_series(LineSeries::new(points.iter().copied(), RED.stroke_width(2)))
                .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `<base>.svg` and `<base>.png`.
pub fn write(dir: &Path, base: &str, chart: &Chart) -> Result<(), String> {
    register();
    let svg = dir.join(format!("{base}.svg"));
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart)?;
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(
        BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area(),
        chart,
    )?;
    let img = image::RgbImage::from_raw(SIZE.0, SIZE.1, buf).ok_or("chart buffer size")?;
    img.save_with_format(dir.join(format!("{base}.png")), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Buckets values into a histogram of `n` equal bins up to `hi`.
pub fn histogram(values: &[u64], hi: u64, n: usize, unit: &str) -> Vec<(String, u64)> {
    let hi = hi.max(1);
    let width = hi.div_ceil(n as u64).max(1);
    let mut bins = vec![0u64; n];
    for v in values {
        let i = ((*v / width) as usize).min(n - 1);
        bins[i] += 1;
    }
    bins.into_iter()
        .enumerate()
        .map(|(i, c)| (format!("{}{unit}", i as u64 * width), c))
        .collect()
}

/// All five charts of a run.
pub fn write_all(dir: &Path, w: &crate::sim::World) -> Result<Vec<String>, String> {
    let mut lat = w.latency_us.clone();
    lat.sort_unstable();
    let p99 = crate::report::percentile(&lat, 0.99);
    let mut per_hour = [0u64; 24];
    for a in &w.journal {
        let h = ((a.true_time.saturating_sub(w.midnight)) / 3600).min(23) as usize;
        per_hour[h] += 1;
    }
    let delays = crate::report::deny_delays(w);
    let charts = [
        (
            "decision_latency",
            Chart::Bars {
                title: "Reader decision latency (wall clock, up to 2 x p99)".into(),
                x_desc: "microseconds".into(),
                y_desc: "decisions".into(),
                bars: histogram(&lat, p99 * 2, LATENCY_BUCKETS, ""),
            },
        ),
        (
            "rides_per_hour",
            Chart::Bars {
                title: "Accepted rides per hour (local time)".into(),
                x_desc: "hour".into(),
                y_desc: "rides".into(),
                bars: per_hour
                    .iter()
                    .enumerate()
                    .map(|(h, n)| (format!("{h:02}"), *n))
                    .collect(),
            },
        ),
        (
            "rejects_by_reason",
            Chart::Bars {
                title: "Rejects by reason".into(),
                x_desc: "reason".into(),
                y_desc: "scans".into(),
                bars: w
                    .rejected_by_reason
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            },
        ),
        (
            "deny_list_propagation",
            Chart::Bars {
                title: "Deny-list propagation delay (publication to reader install)".into(),
                x_desc: "seconds".into(),
                y_desc: "reader installs".into(),
                bars: histogram(
                    &delays,
                    delays.last().copied().unwrap_or(3600),
                    DELAY_BUCKETS,
                    "",
                ),
            },
        ),
        (
            "upload_backlog",
            Chart::Line {
                title: "Upload backlog over the day (rides not yet acknowledged)".into(),
                x_desc: "local hour".into(),
                y_desc: "rides".into(),
                points: w
                    .backlog
                    .iter()
                    .map(|(t, n)| ((t.saturating_sub(w.midnight)) as f64 / 3600.0, *n as f64))
                    .collect(),
            },
        ),
    ];
    let mut written = Vec::new();
    for (name, c) in &charts {
        write(dir, name, c)?;
        written.push(format!("{name}.png"));
        written.push(format!("{name}.svg"));
    }
    Ok(written)
}
