//! One chart of the HTML report as an SVG string, drawn by plotters' SVG backend.
//!
//! Owns how a [`Chart`] (lines over seconds since the run started, shaded spans, a y
//! label) becomes SVG: axes and grid from plotters, one polyline per line, one
//! rectangle per shaded span. Legends are left to the HTML around it, so each line's
//! polyline is the only SVG element in its colour (the report's tests count its points).

use plotters::prelude::*;

/// A line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The legend's name.
    pub name: String,
    /// Its colour as `#rrggbb`, unique within the chart.
    pub color: &'static str,
    /// (seconds since the run started, value) in time order.
    pub points: Vec<(f64, f64)>,
    /// A reference (a limit, the worker count), not a recorded series.
    pub reference: bool,
}

/// A chart over the run's time.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// A short id for the figure (`throughput`, `latency`, ...).
    pub id: &'static str,
    /// The heading above it.
    pub title: String,
    /// What the y axis counts.
    pub y_desc: String,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Spans (start, end in seconds) to shade: pauses and stops.
    pub shaded: Vec<(f64, f64)>,
    /// The run's length in seconds (the x axis' end).
    pub x_max: f64,
}

/// Width and height of every chart, px.
pub const SIZE: (u32, u32) = (960, 260);

/// A chart that could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the `{chart}` chart: {message}")]
pub struct ChartError {
    /// The chart's id.
    pub chart: &'static str,
    /// What plotters said.
    pub message: String,
}

/// Parses `#rrggbb`; black for anything else.
fn rgb(hex: &str) -> RGBColor {
    let byte = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    RGBColor(byte(1), byte(3), byte(5))
}

impl Chart {
    /// The highest value of any line, at least 1 so an empty chart still has an axis.
    fn y_max(&self) -> f64 {
        let top = (self.lines.iter())
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max);
        (top * 1.1).max(1.0)
    }

    /// The chart as an `<svg>` element.
    pub fn svg(&self) -> Result<String, ChartError> {
        let mut out = String::new();
        self.draw(&mut out).map_err(|message| ChartError {
            chart: self.id,
            message,
        })?;
        Ok(out)
    }

    fn draw(&self, out: &mut String) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (x_max, y_max) = (self.x_max.max(1.0), self.y_max());
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        for &(from, to) in &self.shaded {
            let shade = RGBColor(250, 224, 178).filled();
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(from, 0.0), (to.min(x_max), y_max)],
                    shade,
                )))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc(self.y_desc.as_str())
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(|e| err(&e))?;
        for line in &self.lines {
            let width = if line.reference { 1 } else { 2 };
            let style = rgb(line.color).stroke_width(width);
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_one_polyline_in_its_colour_with_all_its_points() {
        let chart = Chart {
            id: "t",
            title: "t".into(),
            y_desc: "per second".into(),
            lines: vec![
                Line {
                    name: "sent".into(),
                    color: "#1f77b4",
                    points: (0..50).map(|i| (f64::from(i), f64::from(i % 7))).collect(),
                    reference: false,
                },
                Line {
                    name: "limit".into(),
                    color: "#d62728",
                    points: vec![(0.0, 5.0), (49.0, 5.0)],
                    reference: true,
                },
            ],
            shaded: vec![(10.0, 20.0)],
            x_max: 49.0,
        };
        let svg = chart.svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        let polylines: Vec<&str> = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| p.contains("#1F77B4") || p.contains("#1f77b4"))
            .collect();
        assert_eq!(polylines.len(), 1, "{svg}");
        let points = polylines[0].split("points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        assert_eq!(points.split_whitespace().count(), 50);
        assert!(svg.contains("<rect"), "the shaded span");
    }
}
