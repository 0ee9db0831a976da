//! The scale chart (`docs/bench-scale.svg`): convergence time and memory
//! against the number of views, with the goals as dashed lines.

use std::path::Path;

use plotters::prelude::*;

use super::procs::megabytes;
use super::scale;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 440;
const DARK_GREEN: RGBColor = RGBColor(0, 140, 0);

/// A line: its label, colour and points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

pub fn draw(results: &scale::Results, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let sizes = &results.sizes;
    let smallest = sizes.iter().map(|s| s.views).min().unwrap_or(100).max(1) as f64;
    let largest = sizes.iter().map(|s| s.views).max().unwrap_or(10_000).max(2) as f64;
    let x_range = (smallest / 1.5)..(largest * 1.5);

    // Convergence: new view routable p50/p99, all views routed, resync, in
    // milliseconds.
    let series_ms: [Series; 4] = [
        (
            "new view routable, p50",
            BLUE,
            sizes
                .iter()
                .filter_map(|s| Some((s.views as f64, s.routable_p50()?)))
                .collect(),
        ),
        (
            "new view routable, p99",
            RED,
            sizes
                .iter()
                .filter_map(|s| Some((s.views as f64, s.routable_p99()?)))
                .collect(),
        ),
        (
            "all views routed after the bulk create",
            RGBColor(130, 0, 160),
            sizes
                .iter()
                .filter_map(|s| Some((s.views as f64, s.converged_seconds? * 1e3)))
                .collect(),
        ),
        (
            "resync after restart (until ACKed)",
            DARK_GREEN,
            sizes
                .iter()
                .filter_map(|s| Some((s.views as f64, s.resync_acked_seconds? * 1e3)))
                .collect(),
        ),
    ];
    let max_ms = series_ms
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(5_000.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("Convergence (ms, log) against views", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.clone().log_scale(), (1.0..max_ms * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("views")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    goal_line(
        &mut chart,
        x_range.clone(),
        250.0,
        RED,
        "goal: routable p99 ≤ 250 ms",
    )?;
    goal_line(
        &mut chart,
        x_range.clone(),
        5_000.0,
        DARK_GREEN,
        "goal: resync ≤ 5 s",
    )?;
    for (label, color, points) in series_ms {
        series(&mut chart, label, color, points)?;
    }
    // Sizes that did not converge have no routable figures: a cross at the top.
    let unconverged: Vec<(f64, f64)> = sizes
        .iter()
        .filter(|s| s.converged_seconds.is_none())
        .map(|s| (s.views as f64, max_ms * 1.5))
        .collect();
    if !unconverged.is_empty() {
        chart
            .draw_series(
                unconverged
                    .into_iter()
                    .map(|p| Cross::new(p, 6, RED.stroke_width(2))),
            )?
            .label("did not converge within the bound")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;

    // Memory: sidecar RSS (and peak), Envoy RSS, in MB.
    let series_mb: [Series; 3] = [
        (
            "sidecar RSS",
            BLUE,
            sizes
                .iter()
                .map(|s| (s.views as f64, megabytes(s.sidecar_rss_bytes)))
                .collect(),
        ),
        (
            "sidecar peak RSS",
            RGBColor(120, 120, 255),
            sizes
                .iter()
                .map(|s| (s.views as f64, megabytes(s.sidecar_peak_bytes)))
                .collect(),
        ),
        (
            "Envoy RSS",
            RGBColor(200, 100, 0),
            sizes
                .iter()
                .map(|s| (s.views as f64, megabytes(s.envoy_rss_bytes)))
                .collect(),
        ),
    ];
    let max_mb = series_mb
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(160.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("Memory (MB) against views", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.clone().log_scale(), 0.0..max_mb * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("views")
        .y_desc("MB")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    goal_line(
        &mut chart,
        x_range,
        150.0,
        BLUE,
        "goal: sidecar RSS ≤ 150 MB",
    )?;
    for (label, color, points) in series_mb {
        series(&mut chart, label, color, points)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

type Chart<'a, 'b, Y> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::combinators::LogCoord<f64>, Y>>;

fn series<Y>(
    chart: &mut Chart<'_, '_, Y>,
    label: &str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(
        points
            .into_iter()
            .map(|p| Circle::new(p, 4, color.filled())),
    )?;
    Ok(())
}

fn goal_line<Y>(
    chart: &mut Chart<'_, '_, Y>,
    x: std::ops::Range<f64>,
    y: f64,
    color: RGBColor,
    label: &str,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x.start, y), (x.end, y)],
            6,
            4,
            color.mix(0.6).stroke_width(1),
        ))?
        .label(label)
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 8, y)], color.mix(0.6).stroke_width(1))
        });
    Ok(())
}

fn legend<'a, 'b: 'a, Y>(
    chart: &mut Chart<'a, 'b, Y>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}
