//! SVG plots: total latency against parallel connections, and the mean
//! per-phase breakdown stacked like seed 000's Fig. 5.

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::phases::{LevelStats, Phase};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
/// Height of each target's panel in the phase breakdown.
const PANEL_HEIGHT: u32 = 360;

/// Half a bar's width, in level slots.
const BAR_HALF_WIDTH: f64 = 0.35;

/// Target colours, in target order.
const TARGET_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// The stacked segments: each phase that tiles the total, with the exec
/// phase split at the first byte.
const SEGMENTS: [(&str, RGBColor); 7] = [
    ("tcp connect", RGBColor(158, 202, 225)),
    ("kex + host key", RGBColor(66, 146, 198)),
    ("auth", RGBColor(253, 174, 107)),
    ("channel open", RGBColor(161, 217, 155)),
    ("exec → first byte", RGBColor(49, 163, 84)),
    ("first byte → exit", RGBColor(188, 189, 220)),
    ("close", RGBColor(189, 189, 189)),
];

fn draw<T, E: std::fmt::Debug>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("drawing the plot: {e:?}"))
}

/// Targets in the order they first appear.
fn targets(results: &[LevelStats]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for stats in results {
        if !names.contains(&stats.target.as_str()) {
            names.push(&stats.target);
        }
    }
    names
}

/// The x range: every level, with a margin.
fn level_range(results: &[LevelStats]) -> (f64, f64) {
    let max = results.iter().map(|s| s.level).max().unwrap_or(1) as f64;
    (0.0, (max * 1.05).max(max + 1.0))
}

/// Total p50 (solid), p99 (dashed) and max (dotted) per target.
pub fn latency(results: &[LevelStats]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(root.fill(&WHITE))?;
        let (x0, x1) = level_range(results);
        let y_max = results
            .iter()
            .filter_map(|s| s.total.max_ms())
            .fold(1.0_f64, f64::max)
            * 1.1;
        let mut chart = draw(
            ChartBuilder::on(&root)
                .caption("Total time per connection", ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(x0..x1, 0.0..y_max),
        )?;
        draw(
            chart
                .configure_mesh()
                .x_desc("parallel connections")
                .y_desc("ms (connect to disconnect)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw(),
        )?;
        for (i, target) in targets(results).into_iter().enumerate() {
            let colour = TARGET_COLOURS[i % TARGET_COLOURS.len()];
            let points = |pick: fn(&LevelStats) -> Option<f64>| -> Vec<(f64, f64)> {
                results
                    .iter()
                    .filter(|s| s.target == target)
                    .filter_map(|s| pick(s).map(|v| (s.level as f64, v)))
                    .collect()
            };
            let p50 = points(|s| s.total.quantile_ms(0.50));
            let p99 = points(|s| s.total.quantile_ms(0.99));
            let max = points(|s| s.total.max_ms());
            let solid = colour.stroke_width(2);
            draw(chart.draw_series(LineSeries::new(p50.clone(), solid)))?
                .label(format!("{target} p50"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], solid));
            draw(chart.draw_series(p50.iter().map(|p| Circle::new(*p, 3, colour.filled()))))?;
            let dashed = colour.stroke_width(2);
            draw(chart.draw_series(DashedLineSeries::new(p99.clone(), 8, 4, dashed)))?
                .label(format!("{target} p99"))
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 5, 3, dashed)
                });
            draw(
                chart.draw_series(
                    p99.iter()
                        .map(|p| TriangleMarker::new(*p, 4, colour.filled())),
                ),
            )?;
            let dotted = colour.mix(0.6).stroke_width(1);
            draw(chart.draw_series(DashedLineSeries::new(max.clone(), 2, 3, dotted)))?
                .label(format!("{target} max"))
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 2, 3, dotted)
                });
            draw(chart.draw_series(max.iter().map(|p| Cross::new(*p, 3, colour.mix(0.6)))))?;
        }
        draw(
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw(),
        )?;
        draw(root.present())?;
    }
    Ok(svg)
}

/// The mean of each segment at one level; they add up to the mean total.
fn segments(stats: &LevelStats) -> Option<[f64; 7]> {
    let mean = |p: Phase| stats.phase(p).mean_ms();
    let exec = mean(Phase::ExecExit)?;
    let first = mean(Phase::ExecFirstByte)?.min(exec);
    Some([
        mean(Phase::TcpConnect)?,
        mean(Phase::Kex)?,
        mean(Phase::Auth)?,
        mean(Phase::ChannelOpen)?,
        first,
        exec - first,
        mean(Phase::Close)?,
    ])
}

/// One panel per target: stacked bars of the mean time in each phase.
pub fn phases(results: &[LevelStats]) -> anyhow::Result<String> {
    let names = targets(results);
    let mut svg = String::new();
    {
        let height = PANEL_HEIGHT * names.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(root.fill(&WHITE))?;
        // Levels are categories, evenly spaced like seed 000's Fig. 5, so a
        // level of 1 next to 100 still gets a readable bar.
        let mut levels: Vec<u32> = results.iter().map(|s| s.level).collect();
        levels.sort_unstable();
        levels.dedup();
        let slot = |level: u32| levels.iter().position(|l| *l == level).unwrap_or(0) as f64;
        let (x0, x1) = (-0.6, levels.len().max(1) as f64 - 0.4);
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                levels
                    .get(i as usize)
                    .map(u32::to_string)
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        // The same y scale in every panel, so targets compare by eye.
        let y_max = results
            .iter()
            .filter_map(|s| s.total.mean_ms())
            .fold(1.0_f64, f64::max)
            * 1.15;
        let panels = root.split_evenly((names.len().max(1), 1));
        for (target, panel) in names.iter().zip(panels.iter()) {
            let mut chart = draw(
                ChartBuilder::on(panel)
                    .caption(format!("{target}: mean time per phase"), ("sans-serif", 20))
                    .margin(14)
                    .x_label_area_size(40)
                    .y_label_area_size(64)
                    .build_cartesian_2d(x0..x1, 0.0..y_max),
            )?;
            draw(
                chart
                    .configure_mesh()
                    .x_desc("parallel connections")
                    .y_desc("ms (mean)")
                    .disable_x_mesh()
                    .x_labels(levels.len().max(1))
                    .x_label_formatter(&label)
                    .y_label_formatter(&|y| format!("{y:.0}"))
                    .draw(),
            )?;
            let rows: Vec<(f64, [f64; 7])> = results
                .iter()
                .filter(|s| s.target == *target)
                .filter_map(|s| segments(s).map(|seg| (slot(s.level), seg)))
                .collect();
            for (k, (label, colour)) in SEGMENTS.iter().enumerate() {
                let colour = *colour;
                let bars = rows.iter().map(|(x, seg)| {
                    let low: f64 = seg[..k].iter().sum();
                    let high = low + seg[k];
                    Rectangle::new(
                        [(x - BAR_HALF_WIDTH, low), (x + BAR_HALF_WIDTH, high)],
                        colour.filled(),
                    )
                });
                draw(chart.draw_series(bars))?
                    .label(*label)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                    });
            }
            draw(
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw(),
            )?;
        }
        draw(root.present())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Timings;
    use std::time::Duration;

    fn stats(target: &str, level: u32) -> LevelStats {
        let mut stats = LevelStats::new(target, level);
        let mut t = Timings::start();
        for (i, phase) in Phase::ALL.iter().enumerate() {
            t.set(*phase, Duration::from_millis(1 + i as u64));
        }
        t.total = Duration::from_millis(40);
        stats.record(&Ok(t));
        stats
    }

    #[test]
    fn plots_are_svg_with_every_target() {
        let results = [stats("sshd", 1), stats("labssh", 1), stats("sshd", 5)];
        for svg in [latency(&results).unwrap(), phases(&results).unwrap()] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("sshd") && svg.contains("labssh"));
        }
    }

    #[test]
    fn empty_results_still_plot() {
        assert!(latency(&[]).unwrap().starts_with("<svg"));
        assert!(phases(&[LevelStats::new("a", 1)])
            .unwrap()
            .starts_with("<svg"));
    }
}
