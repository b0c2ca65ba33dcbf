//! `phases.svg`: one panel per target, stacked bars of the mean time in
//! each phase at each level, the total above each bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{draw, targets, WIDTH};
use crate::phases::{LevelStats, Phase};

/// Height of each target's panel in the phase breakdown.
const PANEL_HEIGHT: u32 = 360;
/// Height of the strip above the panels that holds their one legend.
const LEGEND_HEIGHT: u32 = 36;
/// Around each panel, and beside its axes.
const PANEL_MARGIN: u32 = 14;
const X_LABEL_AREA: u32 = 40;
const Y_LABEL_AREA: u32 = 64;
/// A panel's plotting area in pixels: what is left inside the margins, the
/// axis labels and the caption (about 26 pixels).
const PLOT_WIDTH: f64 = (WIDTH - 2 * PANEL_MARGIN - Y_LABEL_AREA) as f64;
const PLOT_HEIGHT: f64 = (PANEL_HEIGHT - 2 * PANEL_MARGIN - X_LABEL_AREA - 26) as f64;
/// Font sizes (plotters' unit: the SVG font size is this / 1.24).
const TOTAL_FONT: f64 = 14.0;
const LEGEND_FONT: f64 = 15.0;
/// Pixels between a bar's top and its total.
const LABEL_GAP: f64 = 4.0;

/// Half a bar's width, in level slots.
const BAR_HALF_WIDTH: f64 = 0.35;

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

/// One panel per target: stacked bars of the mean time in each phase, the
/// total above each bar. Each panel has its own y scale, so a target that
/// takes milliseconds is as readable beside one that takes seconds; the
/// totals and the axes say how they compare.
pub fn svg(results: &[LevelStats]) -> anyhow::Result<String> {
    let names = targets(results);
    let slots = LevelSlots::of(results);
    let mut svg = String::new();
    {
        let height = LEGEND_HEIGHT + PANEL_HEIGHT * names.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(root.fill(&WHITE))?;
        let (legend, panels) = root.split_vertically(LEGEND_HEIGHT);
        segment_legend(&legend)?;
        for (target, panel) in names
            .iter()
            .zip(panels.split_evenly((names.len().max(1), 1)))
        {
            let bars: Vec<Bar> = results
                .iter()
                .filter(|s| s.target == *target)
                .filter_map(|s| segments(s).map(|seg| (slots.slot(s.level), seg)))
                .collect();
            phase_panel(&panel, target, &bars, &slots)?;
        }
        draw(root.present())?;
    }
    Ok(svg)
}

/// A bar: its slot on the x axis and its segments.
type Bar = (f64, [f64; 7]);

/// The levels as evenly spaced categories, like seed 000's Fig. 5, so a
/// level of 1 next to 100 still gets a readable bar.
struct LevelSlots(Vec<u32>);

impl LevelSlots {
    fn of(results: &[LevelStats]) -> LevelSlots {
        let mut levels: Vec<u32> = results.iter().map(|s| s.level).collect();
        levels.sort_unstable();
        levels.dedup();
        LevelSlots(levels)
    }

    fn count(&self) -> usize {
        self.0.len().max(1)
    }

    fn slot(&self, level: u32) -> f64 {
        self.0.iter().position(|l| *l == level).unwrap_or(0) as f64
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.6..self.count() as f64 - 0.4
    }

    /// The level under a slot; nothing between slots.
    fn label(&self, x: f64) -> String {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            self.0
                .get(i as usize)
                .map(u32::to_string)
                .unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// One target's panel, on a y scale of its own.
fn phase_panel(
    panel: &DrawingArea<SVGBackend, Shift>,
    target: &str,
    bars: &[Bar],
    slots: &LevelSlots,
) -> anyhow::Result<()> {
    let totals = Totals::of(bars, slots);
    let caption = if bars.is_empty() {
        format!("{target}: no connection succeeded")
    } else {
        format!("{target}: mean time per phase")
    };
    let mut chart = draw(
        ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 20))
            .margin(PANEL_MARGIN)
            .x_label_area_size(X_LABEL_AREA)
            .y_label_area_size(Y_LABEL_AREA)
            .build_cartesian_2d(slots.range(), 0.0..totals.y_max(bars)),
    )?;
    draw(
        chart
            .configure_mesh()
            .x_desc("parallel connections")
            .y_desc("ms (mean; this target's own scale)")
            .disable_x_mesh()
            .x_labels(slots.count())
            .x_label_formatter(&|x| slots.label(*x))
            .y_label_formatter(&|y| tick(*y))
            .draw(),
    )?;
    for (k, (_, colour)) in SEGMENTS.iter().enumerate() {
        draw(chart.draw_series(bars.iter().map(|(x, seg)| {
            let low: f64 = seg[..k].iter().sum();
            let high = low + seg[k];
            Rectangle::new(
                [(x - BAR_HALF_WIDTH, low), (x + BAR_HALF_WIDTH, high)],
                colour.filled(),
            )
        })))?;
    }
    let style = totals.style();
    let labels = bars.iter().zip(totals.labels).map(|((x, seg), text)| {
        EmptyElement::at((*x, height(seg)))
            + Text::new(text, (0, -(LABEL_GAP as i32)), style.clone())
    });
    draw(chart.draw_series(labels))?;
    Ok(())
}

/// A bar's height: the sum of its segments, which is the mean total.
fn height(segments: &[f64; 7]) -> f64 {
    segments.iter().sum()
}

/// The totals above one panel's bars, e.g. "412 ms".
struct Totals {
    labels: Vec<String>,
    /// Totals wider than a slot stand upright, so neighbours never overlap.
    upright: bool,
    /// Pixels they take above a bar.
    extent: f64,
}

impl Totals {
    fn of(bars: &[Bar], slots: &LevelSlots) -> Totals {
        let labels: Vec<String> = bars
            .iter()
            .map(|(_, seg)| format!("{} ms", crate::table::ms(Some(height(seg)))))
            .collect();
        let widest = labels
            .iter()
            .map(|t| text_width(t, TOTAL_FONT))
            .fold(0.0, f64::max);
        let upright = widest > PLOT_WIDTH / slots.count() as f64 * 0.9;
        Totals {
            labels,
            upright,
            extent: if upright { widest } else { TOTAL_FONT },
        }
    }

    /// The top of the panel's y scale: the tallest bar with room above it
    /// for its total.
    fn y_max(&self, bars: &[Bar]) -> f64 {
        let tallest = bars.iter().map(|(_, seg)| height(seg)).fold(0.0, f64::max);
        if tallest > 0.0 {
            tallest / (1.0 - (self.extent + LABEL_GAP * 2.0) / PLOT_HEIGHT)
        } else {
            1.0
        }
    }

    fn style(&self) -> TextStyle<'static> {
        let font = ("sans-serif", TOTAL_FONT).into_font();
        if self.upright {
            font.transform(FontTransform::Rotate270)
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center))
        } else {
            font.color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom))
        }
    }
}

/// The one legend for every panel: the segments' colours, in a row.
fn segment_legend(area: &DrawingArea<SVGBackend, Shift>) -> anyhow::Result<()> {
    let style = ("sans-serif", LEGEND_FONT)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let y = LEGEND_HEIGHT as i32 / 2;
    let mut x = PANEL_MARGIN as i32;
    for (label, colour) in SEGMENTS {
        draw(area.draw(&Rectangle::new(
            [(x, y - 6), (x + 12, y + 6)],
            colour.filled(),
        )))?;
        draw(area.draw(&Text::new(label, (x + 18, y), style.clone())))?;
        x += 18 + text_width(label, LEGEND_FONT) as i32 + 16;
    }
    Ok(())
}

/// A y axis tick: as many decimals as the scale needs, e.g. 0.25, 2, 1500.
fn tick(y: f64) -> String {
    let text = format!("{y:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Roughly how wide `text` is in pixels. SVG leaves the font to the viewer;
/// wide ones such as DejaVu Sans, a common fallback, average about 0.65 em.
fn text_width(text: &str, font: f64) -> f64 {
    text.chars().count() as f64 * font / 1.24 * 0.7
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::samples::{assert_svg_with_every_target, timed};

    #[test]
    fn plots_are_svg_with_every_target() {
        assert_svg_with_every_target(svg);
    }

    /// A fast target (sshd, ~7 ms) and a slow one (`docker exec`, seconds),
    /// interleaved as a sweep runs them.
    fn fast_and_slow() -> Vec<LevelStats> {
        let mut results = Vec::new();
        for level in [1, 10, 50, 100] {
            let l = f64::from(level);
            let sshd = [0.1, 3.0, 1.5, 0.3, 1.0, 1.5 + l / 100.0, 0.4];
            results.push(timed("sshd", level, sshd));
            let slow = [0.2, 5.0, 3.0, 1.0, 400.0 + 20.0 * l, 600.0 + 25.0 * l, 1.0];
            results.push(timed("docker-exec", level, slow));
        }
        results
    }

    /// The SVG's texts, each with its attributes, in drawing order.
    fn texts(svg: &str) -> Vec<(&str, &str)> {
        svg.split("<text ")
            .skip(1)
            .map(|t| {
                let (attributes, rest) = t.split_once('>').unwrap();
                (attributes, rest.split("</text>").next().unwrap().trim())
            })
            .collect()
    }

    /// The y axis ticks (right-aligned against the axis) between two texts.
    fn y_ticks(texts: &[(&str, &str)], from: &str, to: Option<&str>) -> Vec<f64> {
        let start = texts.iter().position(|(_, t)| *t == from).unwrap();
        let end = to.map_or(texts.len(), |to| {
            texts.iter().position(|(_, t)| *t == to).unwrap()
        });
        texts[start..end]
            .iter()
            .filter(|(a, _)| a.contains("text-anchor=\"end\""))
            .map(|(_, t)| t.parse().unwrap())
            .collect()
    }

    #[test]
    fn each_panel_has_its_own_scale_and_every_bar_its_total() {
        let svg = svg(&fast_and_slow()).unwrap();
        let texts = texts(&svg);
        let (fast, slow) = (
            "sshd: mean time per phase",
            "docker-exec: mean time per phase",
        );
        let fast_ticks = y_ticks(&texts, fast, Some(slow));
        let slow_ticks = y_ticks(&texts, slow, None);
        // sshd's tallest bar is 7.8 ms, docker-exec's 3110 ms.
        let top = |ticks: &[f64]| ticks.iter().copied().fold(0.0, f64::max);
        assert!((7.0..10.0).contains(&top(&fast_ticks)), "{fast_ticks:?}");
        assert!(fast_ticks.contains(&2.0), "{fast_ticks:?}");
        assert!(
            (3000.0..4000.0).contains(&top(&slow_ticks)),
            "{slow_ticks:?}"
        );
        assert!(slow_ticks.contains(&1000.0), "{slow_ticks:?}");
        let totals: Vec<&str> = texts
            .iter()
            .filter(|(_, t)| t.ends_with(" ms"))
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(
            totals,
            [
                "6.81 ms", "6.90 ms", "7.30 ms", "7.80 ms", "635 ms", "860 ms", "1860 ms",
                "3110 ms"
            ]
        );
        // Four bars leave room for the totals to lie flat.
        assert!(texts
            .iter()
            .all(|(a, t)| !(t.ends_with(" ms") && a.contains("rotate("))));
    }

    #[test]
    fn totals_stand_upright_when_bars_are_narrow() {
        let results: Vec<LevelStats> = crate::levels::parse(crate::levels::DEFAULT_LEVELS)
            .unwrap()
            .0
            .into_iter()
            .map(|level| timed("slow", level, [0.2, 5.0, 3.0, 1.0, 400.0, 600.0, 1.0]))
            .collect();
        let svg = svg(&results).unwrap();
        let upright = texts(&svg)
            .iter()
            .filter(|(a, t)| t.ends_with(" ms") && a.contains("rotate(270"))
            .count();
        assert_eq!(upright, results.len());
    }

    #[test]
    fn ticks_have_the_decimals_their_scale_needs() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(1500.0), "1500");
    }

    #[test]
    fn empty_results_still_plot() {
        let text = svg(&[LevelStats::new("a", 1)]).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("a: no connection succeeded"));
        assert!(svg(&[]).unwrap().starts_with("<svg"));
    }
}
