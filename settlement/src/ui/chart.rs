//! Charts drawn on the server as inline SVG (no script, no image request).

use maud::{html, Markup};

const W: u64 = 720;
const H: u64 = 220;
const LEFT: u64 = 40;
const BOTTOM: u64 = 24;
const TOP: u64 = 12;

/// Bars of rides per local hour (0..=23). Each bar carries its count in
/// `data-rides` and a `<title>` (a tooltip, and text for screen readers).
pub fn rides_per_hour(counts: &[u64; 24]) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = W - LEFT - 8;
    let plot_h = H - BOTTOM - TOP;
    let slot = plot_w / 24;
    let total: u64 = counts.iter().sum();
    html! {
        svg #rides-per-hour viewBox={"0 0 " (W) " " (H)} role="img"
            aria-label={"Rides per hour, " (total) " in all"} preserveAspectRatio="xMidYMid meet" {
            line x1=(LEFT) y1=(TOP + plot_h) x2=(W - 8) y2=(TOP + plot_h) class="axis" {}
            text x=(LEFT - 6) y=(TOP + 4) text-anchor="end" class="tick" { (max) }
            text x=(LEFT - 6) y=(TOP + plot_h) text-anchor="end" class="tick" { "0" }
            @for (hour, &n) in counts.iter().enumerate() {
                @let h = n * plot_h / max;
                @let x = LEFT + hour as u64 * slot + 2;
                rect class="bar" x=(x) y=(TOP + plot_h - h) width=(slot - 4) height=(h)
                    data-hour=(hour) data-rides=(n) {
                    title { (format!("{hour:02}:00–{hour:02}:59: {n} rides")) }
                }
                @if hour % 3 == 0 {
                    text x=(x + (slot - 4) / 2) y=(H - 6) text-anchor="middle" class="tick" {
                        (format!("{hour:02}"))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_hour() {
        let mut c = [0u64; 24];
        c[8] = 10;
        c[17] = 5;
        let svg = rides_per_hour(&c).into_string();
        assert!(svg.contains("data-hour=\"8\" data-rides=\"10\""));
        assert!(svg.contains("aria-label=\"Rides per hour, 15 in all\""));
        // The busiest bar is the full plot height; a half-as-busy one half.
        let plot_h = H - BOTTOM - TOP;
        assert!(svg.contains(&format!("height=\"{plot_h}\" data-hour=\"8\"")));
        assert!(svg.contains(&format!("height=\"{}\" data-hour=\"17\"", plot_h / 2)));
        // No rides: no division by zero, all bars flat.
        assert!(rides_per_hour(&[0; 24]).into_string().contains("0 in all"));
    }
}
