//! Line plots as SVG, written by hand: enough for a few series of a few points.

use std::fmt::Write as _;
use std::path::Path;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Writes a plot of `series` (name, points) to `path`; `log_x` puts x on a log scale.
pub fn write_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter().copied());
    let fx = |x: f64| if log_x { x.max(1.0).log10() } else { x };
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0_f64);
    for (x, y) in points {
        x_min = x_min.min(fx(x));
        x_max = x_max.max(fx(x));
        y_max = y_max.max(y);
    }
    if x_min >= x_max {
        x_max = x_min + 1.0;
    }
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let sx = |x: f64| MARGIN + (fx(x) - x_min) / (x_max - x_min) * (WIDTH - 2.0 * MARGIN);
    let sy = |y: f64| HEIGHT - MARGIN - y / y_max * (HEIGHT - 2.0 * MARGIN);

    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{title}</text>"#,
        WIDTH / 2.0
    )?;
    let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
    writeln!(
        svg,
        r#"<path d="M{left},{top} V{bottom} H{right}" stroke="black" fill="none"/>"#
    )?;
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        writeln!(
            svg,
            r##"<line x1="{left}" x2="{right}" y1="{0}" y2="{0}" stroke="#ddd"/><text x="{1}" y="{2}" text-anchor="end">{y:.1}</text>"##,
            sy(y),
            left - 6.0,
            sy(y) + 4.0
        )?;
    }
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    for x in xs {
        writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{x}</text>"#,
            sx(x),
            bottom + 18.0
        )?;
    }
    writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        WIDTH / 2.0,
        HEIGHT - 14.0
    )?;
    writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>"#,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    )?;
    for (index, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        )?;
        for &(x, y) in points {
            writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                sx(x),
                sy(y)
            )?;
        }
        let ly = top + 16.0 * index as f64;
        writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            right - 150.0,
            right - 130.0,
            right - 125.0,
            ly + 4.0
        )?;
    }
    writeln!(svg, "</svg>")?;
    std::fs::write(path, svg)?;
    Ok(())
}
