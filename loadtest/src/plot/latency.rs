//! `latency.svg`: total p50, p99 and max per target against parallel
//! connections, every target on one scale.

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::{draw, targets, WIDTH};
use crate::phases::LevelStats;

const HEIGHT: u32 = 600;

/// Target colours, in target order.
const TARGET_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// The x range: every level, with a margin.
fn level_range(results: &[LevelStats]) -> (f64, f64) {
    let max = results.iter().map(|s| s.level).max().unwrap_or(1) as f64;
    (0.0, (max * 1.05).max(max + 1.0))
}

/// Total p50 (solid), p99 (dashed) and max (dotted) per target.
pub fn svg(results: &[LevelStats]) -> anyhow::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::samples::assert_svg_with_every_target;

    #[test]
    fn plots_are_svg_with_every_target() {
        assert_svg_with_every_target(svg);
    }

    #[test]
    fn empty_results_still_plot() {
        assert!(svg(&[]).unwrap().starts_with("<svg"));
    }
}
