//! The demo's SVG plot: nodes holding the write over time since it was made.

use std::path::Path;

use plotters::prelude::*;

use crate::demo::{DemoReport, ms};
use crate::error::NodeError;

/// Draws how the demo's write reached the nodes, to `path`.
///
/// Errors: [`NodeError::File`] if the file cannot be written.
pub fn spread(path: &Path, report: &DemoReport) -> Result<(), NodeError> {
    draw(path, report).map_err(|reason| NodeError::File {
        path: path.to_owned(),
        source: std::io::Error::other(reason),
    })
}

fn draw(path: &Path, report: &DemoReport) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let end = report
        .arrivals
        .last()
        .map_or(1.0, |last| (ms(*last) * 1.1).max(1.0));
    let title = format!(
        "knhk-node demo: one write, {} nodes over QUIC on loopback (all after {:.1} ms)",
        report.nodes,
        report.arrivals.last().map_or(0.0, |last| ms(*last))
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(
            0f64..end,
            0u32..u32::try_from(report.nodes).unwrap_or(u32::MAX),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("ms since the write")
        .y_desc("nodes holding it")
        .draw()
        .map_err(|e| e.to_string())?;
    // A step line: the count rises at each arrival.
    let mut points = vec![(0.0, 0u32)];
    for (held, arrival) in report.arrivals.iter().enumerate() {
        let at = ms(*arrival);
        let before = u32::try_from(held).unwrap_or(u32::MAX);
        points.push((at, before));
        points.push((at, before.saturating_add(1)));
    }
    points.push((
        end,
        u32::try_from(report.arrivals.len()).unwrap_or(u32::MAX),
    ));
    chart
        .draw_series(LineSeries::new(points, &BLUE))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
