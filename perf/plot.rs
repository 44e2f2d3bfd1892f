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

/// The soak's plot: the server's RSS (top) and the `/lookup` p99 and
/// p99.9 of each stretch (bottom) against time.
pub fn write_soak_svg(path: &str, title: &str, s: &crate::soak::SoakReport) -> Result<(), String> {
    let rss: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter_map(|x| x.rss_kib.map(|k| (x.t_s, k as f64 / 1024.0)))
        .collect();
    let p99: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter(|x| x.lookup.count > 0)
        .map(|x| (x.t_s, x.lookup.p99_us as f64 / 1000.0))
        .collect();
    let p999: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter(|x| x.lookup.count > 0)
        .map(|x| (x.t_s, x.lookup.p999_us as f64 / 1000.0))
        .collect();
    if p99.is_empty() {
        return Err("no samples to plot".into());
    }
    let t_max = s.samples.iter().map(|x| x.t_s).fold(1.0f64, f64::max);
    let err = |e: &dyn std::fmt::Display| format!("drawing {path}: {e}");
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(330);
    {
        let (lo, hi) = rss.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
        let (lo, hi) = if rss.is_empty() {
            (0.0, 1.0)
        } else {
            ((lo * 0.9).max(0.0), hi * 1.1 + 0.1)
        };
        let mut chart = ChartBuilder::on(&top)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, lo..hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds into the load")
            .y_desc("server RSS (MiB)")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(rss, COLOURS[0].stroke_width(2)))
            .map_err(|e| err(&e))?;
    }
    let y_max = p999.iter().map(|p| p.1).fold(0.01f64, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, (0.001f64..y_max * 1.5).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds into the load")
        .y_desc("/lookup latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in [("p99", p99), ("p99.9", p999)].into_iter().enumerate() {
        let colour = COLOURS[(i + 1) % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{name} of each {:.0} s", s.sample_every_s))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
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

    #[test]
    fn writes_the_soak_plot() {
        let mut s = crate::soak::SoakReport {
            sample_every_s: 10.0,
            ..Default::default()
        };
        for i in 1..=6u64 {
            s.samples.push(crate::soak::Sample {
                t_s: i as f64 * 10.0,
                rss_kib: Some(50_000 + i * 10),
                lookup: crate::stats::LatencySummary {
                    count: 100,
                    p99_us: 300 + i,
                    p999_us: 900,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let path = std::env::temp_dir().join(format!(
            "nsqlookupd-bench-soak-plot-{}.svg",
            std::process::id()
        ));
        let p = path.to_string_lossy().to_string();
        write_soak_svg(&p, "soak", &s).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("server RSS (MiB)") && svg.contains("p99.9 of each 10 s"));
        s.samples.clear();
        assert!(write_soak_svg(&p, "soak", &s).is_err());
    }
}
