//! `arrivals.svg`: time to shell (s) of every login against its place in arrival
//! order, one series per state and server.

use plotters::prelude::*;

use super::{draw, WIDTH};
const HEIGHT: u32 = 600;

/// One series of the plot: its name and (arrival, seconds) of the logins that worked.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// What the legend says.
    pub name: String,
    /// Arrival order and time to shell in seconds.
    pub points: Vec<(u32, f64)>,
    /// Logins that failed (not plotted, counted in the legend).
    pub failed: usize,
}

/// Series colours, in order: each labssh state beside its raw Docker operation.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(174, 199, 232),
    RGBColor(214, 39, 40),
    RGBColor(255, 152, 150),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
    RGBColor(148, 103, 189),
    RGBColor(197, 176, 213),
];

/// The plot of `series` under `title`.
pub fn svg(title: &str, series: &[Series]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(root.fill(&WHITE))?;
        let points = series.iter().flat_map(|s| &s.points);
        let x_max = points.clone().map(|p| p.0).max().unwrap_or(1) as f64 + 1.0;
        let y_max = points.map(|p| p.1).fold(1.0_f64, f64::max) * 1.1;
        let mut chart = draw(
            ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max),
        )?;
        draw(
            chart
                .configure_mesh()
                .x_desc("arrival order")
                .y_desc("seconds to shell")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.1}"))
                .draw(),
        )?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let line: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x as f64, y)).collect();
            let label = match s.failed {
                0 => s.name.clone(),
                n => format!("{} ({n} failed)", s.name),
            };
            let style = colour.stroke_width(2);
            draw(chart.draw_series(LineSeries::new(line.clone(), style)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            draw(chart.draw_series(line.iter().map(|p| Circle::new(*p, 2, colour.filled()))))?;
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

    #[test]
    fn every_series_is_named_and_failures_shown() {
        let series = [
            Series {
                name: "labssh none".into(),
                points: vec![(1, 0.5), (2, 1.0)],
                failed: 0,
            },
            Series {
                name: "docker run -d".into(),
                points: vec![(1, 0.4)],
                failed: 2,
            },
        ];
        let svg = svg("t", &series).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("labssh none") && svg.contains("docker run -d (2 failed)"));
    }

    #[test]
    fn no_points_still_plot() {
        assert!(svg("t", &[]).unwrap().starts_with("<svg"));
    }
}
