//! `--plot FILE.svg`: latency by percentile, one line per distribution, on
//! the usual HDR axes (x: percentile, spaced by `1/(1-q)` on a log scale so
//! the tail gets room; y: latency, log scale).

use plotters::prelude::*;

use crate::stats::Latency;

/// Colours for successive series.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The x coordinate of quantile `q`.
fn x_of(q: f64) -> f64 {
    1.0 / (1.0 - q).max(1e-9)
}

/// Axis label for x coordinate `x`: the percentile it stands for.
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x.max(1.0));
    if p < 99.0 {
        format!("{p:.0}%")
    } else {
        // As many decimals as the nines need.
        let decimals = (-(100.0 - p).log10() - 0.05).ceil().max(0.0) as usize;
        format!("{p:.decimals$}%")
    }
}

/// Writes the SVG. `series` are (name, distribution) pairs; empty ones are
/// skipped.
pub fn write_svg(path: &str, title: &str, series: &[(String, &Latency)]) -> Result<(), String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, l)| l.count() > 0)
        .map(|(n, l)| {
            let pts = l
                .distribution()
                .into_iter()
                .map(|(q, us)| (x_of(q), (us.max(1) as f64) / 1000.0))
                .collect();
            (format!("{n} ({} samples)", l.count()), pts)
        })
        .collect();
    if lines.is_empty() {
        return Err("no latency samples to plot".into());
    }
    let x_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(10.0f64, f64::max);
    let y_min = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(f64::MAX, f64::min)
        .max(0.001);
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(0.0f64, f64::max);

    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("drawing {path}: {e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (1.0f64..x_max * 1.5).log_scale(),
            (y_min / 1.5..y_max * 1.5).log_scale(),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.3}")
            }
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
    }

    #[test]
    fn writes_an_svg() {
        let mut l = Latency::new();
        for us in 1..5000 {
            l.record(Duration::from_micros(us));
        }
        let path =
            std::env::temp_dir().join(format!("nsqlookupd-bench-plot-{}.svg", std::process::id()));
        let p = path.to_string_lossy().to_string();
        write_svg(&p, "test", &[("a".into(), &l)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("<svg") && svg.contains("percentile"));
        assert!(write_svg(&p, "empty", &[("b".into(), &Latency::new())]).is_err());
    }
}
