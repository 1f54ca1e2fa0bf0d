//! The latency-over-time PNG: per second, p50, p99 and max latency (log scale), the requests and
//! errors completed, and the watched process's RSS when there is one. Text is drawn with a
//! system TrueType font read at run time (pure-Rust rendering, no fontconfig); without one the
//! plot is drawn unlabelled, with the legend in the file name's companion report.

use crate::report::Report;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// Fonts tried, in order (Debian's fonts-dejavu-core, then common others).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font for plotters once; answers whether text can be drawn.
fn fonts() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        for path in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws `report`'s timeline to `path`.
pub fn draw(report: &Report, path: &Path) -> DrawResult {
    let text = fonts();
    let has_rss = report.timeline.iter().any(|s| s.rss_mib.is_some());
    let panels = if has_rss { 3 } else { 2 };
    let root = BitMapBackend::new(path, (1200, 320 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} against {} ({})",
        report.run.scenario, report.run.target, report.run.mode
    );
    let root = if text {
        root.titled(&title, ("sans-serif", 22))?
    } else {
        root
    };
    let areas = root.split_evenly((panels, 1));
    let t_max = report.timeline.len().max(1) as f64;
    let tl = &report.timeline;

    // Latency, log scale: a stall shows as a cliff, not a flattened line.
    let floor = 0.01;
    let top = tl
        .iter()
        .map(|s| s.max_ms)
        .fold(1.0_f64, f64::max)
        .max(floor * 10.0)
        * 1.5;
    let mut c = ChartBuilder::on(&areas[0]);
    c.margin(10);
    if text {
        c.x_label_area_size(30)
            .y_label_area_size(60)
            .caption("latency per second (ms, log)", ("sans-serif", 16));
    }
    let mut chart = c.build_cartesian_2d(0f64..t_max, (floor..top).log_scale())?;
    mesh(&mut chart, text, "seconds", "ms")?;
    for (name, color, pick) in [
        (
            "p50",
            BLUE,
            (|s| s.p50_ms) as fn(&crate::report::SecondReport) -> f64,
        ),
        ("p99", RED, |s| s.p99_ms),
        ("max", BLACK, |s| s.max_ms),
    ] {
        let series = chart.draw_series(LineSeries::new(
            tl.iter()
                .filter(|s| s.requests > 0)
                .map(|s| (s.t as f64, pick(s).max(floor))),
            color.stroke_width(2),
        ))?;
        if text {
            series
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    legend(&mut chart, text)?;

    // Throughput and errors.
    let top = tl.iter().map(|s| s.requests).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut c = ChartBuilder::on(&areas[1]);
    c.margin(10);
    if text {
        c.x_label_area_size(30)
            .y_label_area_size(60)
            .caption("completed per second", ("sans-serif", 16));
    }
    let mut chart = c.build_cartesian_2d(0f64..t_max, 0f64..top)?;
    mesh(&mut chart, text, "seconds", "per second")?;
    for (name, color, pick) in [
        (
            "requests",
            GREEN,
            (|s| s.requests as f64) as fn(&crate::report::SecondReport) -> f64,
        ),
        ("units", BLUE, |s| s.units as f64),
        ("errors", RED, |s| s.errors as f64),
    ] {
        let series = chart.draw_series(LineSeries::new(
            tl.iter().map(|s| (s.t as f64, pick(s))),
            color.stroke_width(2),
        ))?;
        if text {
            series
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    legend(&mut chart, text)?;

    if has_rss {
        let top = report.peak_rss_mib().unwrap_or(1.0).max(1.0) * 1.2;
        let mut c = ChartBuilder::on(&areas[2]);
        c.margin(10);
        if text {
            c.x_label_area_size(30)
                .y_label_area_size(60)
                .caption("RSS of the watched process (MiB)", ("sans-serif", 16));
        }
        let mut chart = c.build_cartesian_2d(0f64..t_max, 0f64..top)?;
        mesh(&mut chart, text, "seconds", "MiB")?;
        chart.draw_series(LineSeries::new(
            tl.iter().filter_map(|s| s.rss_mib.map(|m| (s.t as f64, m))),
            MAGENTA.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn mesh<
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    text: bool,
    x: &str,
    y: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut m = chart.configure_mesh();
    if text {
        m.x_desc(x).y_desc(y);
    } else {
        m.x_labels(0).y_labels(0);
    }
    m.light_line_style(WHITE.mix(0.0)).draw()?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    text: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}
