//! One PNG timeline per scenario: a panel per implementation, each showing one
//! run around the fault. x: time relative to the fault (ms); lanes: one per
//! node (a dot for every ARP reply from that node's MAC; "other MAC" if
//! an unknown MAC answered), "no ARP reply"
//! (probes nobody answered), "TCP" (green: connect succeeded, red: failed);
//! a vertical red line marks the fault.
//!
//! Text is drawn with DejaVu Sans embedded from the `dejavu` crate through
//! plotters' `ab_glyph` backend: no system fonts needed.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{Stats, fmt_ms};
use vip_lab::lab::record::RunRecord;

/// Errors of the plots.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("the embedded font does not load")]
    Font,
    #[error("drawing {path}: {detail}")]
    Draw { path: String, detail: String },
    #[error("nothing to plot")]
    Empty,
}

/// Font family name registered for the plots.
const FAMILY: &str = "sans-serif";

/// Width of a timeline PNG.
pub const WIDTH: u32 = 1400;
/// Height of one implementation's panel.
pub const PANEL_HEIGHT: u32 = 260;
/// Height of the title band.
pub const TITLE_HEIGHT: u32 = 40;

/// Size of the PNG [`timeline`] draws for `panels` panels.
pub fn size(panels: usize) -> (u32, u32) {
    let panels = u32::try_from(panels).unwrap_or(u32::MAX / PANEL_HEIGHT);
    (WIDTH, TITLE_HEIGHT + PANEL_HEIGHT * panels.max(1))
}

fn register_fonts() -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// The run to show for a set of runs: the one whose ARP outage is closest to
/// the median (a typical run), else the first.
pub fn representative<'a>(runs: &[&'a RunRecord]) -> Option<&'a RunRecord> {
    let outages: Vec<Duration> = runs.iter().filter_map(|r| r.arp_outage()).collect();
    match Stats::of(&outages) {
        Some(st) => runs
            .iter()
            .filter_map(|r| Some((*r, r.arp_outage()?)))
            .min_by_key(|(_, o)| o.abs_diff(st.median))
            .map(|(r, _)| r),
        None => runs.first().copied(),
    }
}

/// Milliseconds of `t` relative to `fault`.
fn rel_ms(t: Duration, fault: Duration) -> f64 {
    (t.as_secs_f64() - fault.as_secs_f64()) * 1000.0
}

const NODE_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
const OK_GREEN: RGBColor = RGBColor(44, 160, 44);
const FAIL_RED: RGBColor = RGBColor(214, 39, 40);

fn draw_err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Draw `path`: a title and one panel per (panel title, run).
pub fn timeline(
    path: &Path,
    title: &str,
    panels: &[(String, &RunRecord)],
) -> Result<(), PlotError> {
    if panels.is_empty() {
        return Err(PlotError::Empty);
    }
    register_fonts()?;
    let root = BitMapBackend::new(path, size(panels.len())).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let (top, rest) = root.split_vertically(TITLE_HEIGHT);
    top.titled(title, (FAMILY, 22).into_font().style(FontStyle::Bold))
        .map_err(|e| draw_err(path, e))?;
    let areas = rest.split_evenly((panels.len(), 1));
    for ((name, run), area) in panels.iter().zip(areas) {
        panel(&area, name, run).map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

type DrawResult<T> =
    Result<T, DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    name: &str,
    run: &RunRecord,
) -> DrawResult<()> {
    let fault = run.fault_at;
    let mut nodes: Vec<(String, [u8; 6])> = run.nodes.clone();
    nodes.sort();
    let known = |mac: &[u8; 6]| nodes.iter().any(|(_, m)| m == mac);
    let others = run
        .arp
        .iter()
        .flat_map(|p| p.replies.iter())
        .any(|r| !known(&r.mac));
    // Lanes top to bottom: one per node, "other MAC" (only if any replied),
    // "no ARP reply", "TCP".
    let mut labels: Vec<String> = nodes
        .iter()
        .map(|(name, _)| format!("ARP {name}"))
        .collect();
    let other_lane = others.then(|| {
        labels.push("ARP other MAC".into());
        labels.len() - 1
    });
    let silent_lane = labels.len();
    labels.push("no ARP reply".into());
    let tcp_lane = labels.len();
    labels.push("TCP".into());
    let lanes = labels.len();
    let lane_y = |lane: usize| i32::try_from(lanes - 1 - lane).unwrap_or(0);

    let times = run
        .arp
        .iter()
        .map(|p| p.sent)
        .chain(run.tcp.iter().map(|a| a.started));
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for t in times {
        let x = rel_ms(t, fault);
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo > hi {
        (lo, hi) = (-100.0, 100.0);
    }
    let pad = ((hi - lo) * 0.01).max(1.0);
    let (lo, hi) = (lo - pad, hi + pad);

    let arp = run
        .arp_outage()
        .map_or_else(|| "never recovered".to_owned(), fmt_ms);
    let tcp = run
        .tcp_outage()
        .map_or_else(|| "never recovered".to_owned(), fmt_ms);
    let caption = format!(
        "{name}: {} run #{}  (ARP outage {arp}, TCP outage {tcp}, split-brain windows {})",
        run.scenario,
        run.repeat,
        run.split_brain_windows()
    );
    let top = i32::try_from(lanes).unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(120)
        .build_cartesian_2d(lo..hi, -1i32..top)?;
    let label_of = |y: &i32| -> String {
        usize::try_from(*y)
            .ok()
            .filter(|y| *y < lanes)
            .map(|y| labels[lanes - 1 - y].clone())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(lanes + 2)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("ms since the fault")
        .x_labels(12)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 13))
        .draw()?;

    // The fault.
    chart.draw_series(LineSeries::new(
        [(0.0, -1), (0.0, top)],
        FAIL_RED.stroke_width(2),
    ))?;
    chart.draw_series(std::iter::once(Text::new(
        "fault",
        (0.0, top - 1),
        (FAMILY, 13).into_font().color(&FAIL_RED),
    )))?;

    // ARP replies, one lane per node.
    for (i, (_, mac)) in nodes.iter().enumerate() {
        let color = NODE_COLORS[i % NODE_COLORS.len()];
        chart.draw_series(
            run.arp
                .iter()
                .flat_map(|p| p.replies.iter())
                .filter(|r| r.mac == *mac)
                .map(|r| Circle::new((rel_ms(r.at, fault), lane_y(i)), 2, color.filled())),
        )?;
    }
    if let Some(lane) = other_lane {
        chart.draw_series(
            run.arp
                .iter()
                .flat_map(|p| p.replies.iter())
                .filter(|r| !known(&r.mac))
                .map(|r| Circle::new((rel_ms(r.at, fault), lane_y(lane)), 2, BLACK.filled())),
        )?;
    }
    chart.draw_series(run.arp.iter().filter(|p| p.replies.is_empty()).map(|p| {
        Circle::new(
            (rel_ms(p.sent, fault), lane_y(silent_lane)),
            2,
            FAIL_RED.filled(),
        )
    }))?;
    chart.draw_series(run.tcp.iter().map(|a| {
        let color = if a.node.is_some() { OK_GREEN } else { FAIL_RED };
        Circle::new(
            (rel_ms(a.started, fault), lane_y(tcp_lane)),
            3,
            color.filled(),
        )
    }))?;
    Ok(())
}
