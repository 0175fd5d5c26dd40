//! Charts (PNG and SVG, plotters): decision latency, rides per hour, rejects
//! by reason, deny-list propagation delay, upload backlog over the day.
//!
//! Text is drawn with DejaVu Sans shipped in `assets/` (licence beside it),
//! registered with plotters' `ab_glyph` backend: no system font lookup and
//! no download.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// DejaVu Sans (fonts-dejavu-core), see `assets/DejaVuSans.LICENSE`.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// Chart size, pixels.
const SIZE: (u32, u32) = (960, 540);
/// Upper edges of the decision latency bars, microseconds (1-2-5 steps: a
/// payload decides in tens of microseconds, a camera frame in milliseconds,
/// and both must read on one chart); one more bar counts the rest.
const LATENCY_EDGES_US: [u64; 12] = [
    20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
];
/// Upper edges of the deny-list propagation bars, seconds: the questions an
/// operator asks of a revocation (within minutes? within the hour? by the
/// depot at night?); one more bar counts the rest.
const DELAY_EDGES_S: [u64; 9] = [60, 300, 900, 1_800, 3_600, 7_200, 14_400, 28_800, 57_600];

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

/// A count on the y axis: `12,000`, not `12000.0`.
fn count_label(v: &f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Largest and smallest font size of a bar's label, pixels.
const BAR_LABEL_FONT_PX: (f64, f64) = (13.0, 8.0);
/// Width of the plotting area left for the bars, pixels (about).
const BARS_WIDTH_PX: f64 = 850.0;

/// The font size that lets the longest label fit under its bar (the
/// readers' reject reasons, about ten of up to 20 characters, fit at the
/// smallest).
fn bar_label_font(bars: &[(String, u64)]) -> f64 {
    let longest = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(1) as f64;
    // A character of DejaVu Sans is about 0.6 of the font size wide.
    let fit = BARS_WIDTH_PX / bars.len().max(1) as f64 / (0.6 * longest + 1.0);
    fit.clamp(BAR_LABEL_FONT_PX.1, BAR_LABEL_FONT_PX.0)
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
            let n = bars.len().max(2) as u32;
            let label_font = bar_label_font(bars);
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
                // A segmented range has a slot for its end as well: n bars
                // take 0..n-1.
                .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..ymax)
                .map_err(e)?;
            c.configure_mesh()
                .disable_x_mesh()
                .x_labels(n as usize + 1)
                .x_label_formatter(&fmt)
                .x_label_style(("sans-serif", label_font))
                .x_desc(x_desc.as_str())
                .y_desc(y_desc.as_str())
                .y_label_formatter(&count_label)
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
            // Each bar's count above it: at city scale the tail (a few
            // thousand camera frames beside a million payloads) is too
            // short to see.
            let above = TextStyle::from(("sans-serif", label_font).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            c.draw_series(bars.iter().enumerate().filter(|(_, (_, v))| *v > 0).map(
                |(i, (_, v))| {
                    let at = (SegmentValue::CenterOf(i as u32), *v as f64);
                    Text::new(count_label(&(*v as f64)), at, above.clone())
                },
            ))
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
                .y_label_formatter(&count_label)
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

/// Counts `values` into bars `≤ edge` for each of `edges` (ascending) and
/// one `> last edge` for the rest, labelled by `label` of the edge.
pub fn bucketed(values: &[u64], edges: &[u64], label: fn(u64) -> String) -> Vec<(String, u64)> {
    let mut counts = vec![0u64; edges.len() + 1];
    for v in values {
        counts[edges.partition_point(|e| e < v)] += 1;
    }
    let mut labels: Vec<String> = edges.iter().map(|&e| format!("≤{}", label(e))).collect();
    labels.push(format!(
        ">{}",
        edges.last().map_or_else(String::new, |&e| label(e))
    ));
    labels.into_iter().zip(counts).collect()
}

/// `20 µs`, `1 ms`, `100 ms`.
fn micros_label(us: u64) -> String {
    if us >= 1_000 && us.is_multiple_of(1_000) {
        format!("{} ms", us / 1_000)
    } else {
        format!("{us} µs")
    }
}

/// `1 min`, `30 min`, `2 h`.
fn seconds_label(s: u64) -> String {
    if s >= 3_600 && s.is_multiple_of(3_600) {
        format!("{} h", s / 3_600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// All five charts of a run.
pub fn write_all(dir: &Path, w: &crate::sim::World) -> Result<Vec<String>, String> {
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
                title: "Reader decision latency (wall clock; payloads and camera frames)".into(),
                x_desc: "time to decide".into(),
                y_desc: "decisions".into(),
                bars: bucketed(&w.decision_latencies_us(), &LATENCY_EDGES_US, micros_label),
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
                x_desc: "delay".into(),
                y_desc: "reader installs".into(),
                bars: bucketed(&delays, &DELAY_EDGES_S, seconds_label),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_count_each_value_once_at_its_upper_edge() {
        let bars = bucketed(
            &[
                0, 20, 21, 50, 999, 1_000, 1_001, 100_000, 100_001, 9_999_999,
            ],
            &LATENCY_EDGES_US,
            micros_label,
        );
        let got: Vec<(&str, u64)> = bars
            .iter()
            .map(|(l, n)| (l.as_str(), *n))
            .filter(|b| b.1 > 0)
            .collect();
        assert_eq!(
            got,
            [
                ("≤20 µs", 2),
                ("≤50 µs", 2),
                ("≤1 ms", 2),
                ("≤2 ms", 1),
                ("≤100 ms", 1),
                (">100 ms", 2)
            ]
        );
        assert_eq!(bars.len(), LATENCY_EDGES_US.len() + 1);
        assert_eq!(bars.iter().map(|b| b.1).sum::<u64>(), 10);
    }

    #[test]
    fn delay_labels_read_in_minutes_and_hours() {
        let labels: Vec<String> = bucketed(&[], &DELAY_EDGES_S, seconds_label)
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(
            labels,
            [
                "≤1 min",
                "≤5 min",
                "≤15 min",
                "≤30 min",
                "≤1 h",
                "≤2 h",
                "≤4 h",
                "≤8 h",
                "≤16 h",
                ">16 h"
            ]
        );
        assert_eq!(seconds_label(90), "90 s");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count_label(&0.0), "0");
        assert_eq!(count_label(&999.4), "999");
        assert_eq!(count_label(&12_000.0), "12,000");
        assert_eq!(count_label(&1_039_404.0), "1,039,404");
    }
}
