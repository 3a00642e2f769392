//! `sofort plan -o svg` and `-o html`: the forecast as a timeline an admin
//! can paste into a change ticket.
//!
//! One row per selected node, grouped by the rollout's `groupBy` label, in
//! predicted order; a bar per predicted step (drain, patch, reboot, waiting
//! for Ready, settle); the maintenance windows shaded green and the blackouts
//! red; "now" and the predicted completion marked by vertical lines. The SVG
//! is built by hand (a few rectangles and lines need no plotting library);
//! every bar carries `data-node`, `data-step`, `data-start` and `data-end`
//! so programs (and the tests) can read it back.
//!
//! Times map linearly onto the x axis: `x(t) = LEFT + (t - start) / span * WIDTH`
//! where `start` is the forecast's "now" and `span` reaches the last bar (or
//! the completion), at least one hour.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use crate::api::{PatchPolicySpec, Step};
use crate::core::forecast::{Forecast, Row};
use crate::core::window::{Schedule, human_time};

/// Left margin: node names.
const LEFT: f64 = 220.0;
/// Width of the time axis.
const WIDTH: f64 = 900.0;
/// Right margin.
const RIGHT: f64 = 30.0;
/// Header: title and axis.
const TOP: f64 = 70.0;
/// Height of a node row.
const ROW: f64 = 20.0;
/// Height of a group heading.
const GROUP: f64 = 22.0;
/// Most shaded windows drawn (a month of hourly windows is far fewer).
const MAX_WINDOWS: usize = 2_000;
/// Most characters of a spec text (a blackout reason) shown.
const MAX_TEXT: usize = 80;

/// The time axis of one chart.
#[derive(Debug, Clone, Copy)]
struct Axis {
    start: Timestamp,
    end: Timestamp,
}

impl Axis {
    fn of(f: &Forecast) -> Axis {
        let last = f
            .nodes
            .iter()
            .flat_map(|r| r.steps.iter().map(|s| s.end).chain(r.done))
            .chain(f.completion)
            .max()
            .unwrap_or(f.now);
        let min_end = f
            .now
            .checked_add(SignedDuration::from_hours(1))
            .unwrap_or(f.now);
        Axis {
            start: f.now,
            end: last.max(min_end),
        }
    }

    fn span(&self) -> f64 {
        self.end.duration_since(self.start).as_secs_f64().max(1.0)
    }

    /// x of an instant, clamped to the axis.
    fn x(&self, t: Timestamp) -> f64 {
        let t = t.clamp(self.start, self.end);
        LEFT + t.duration_since(self.start).as_secs_f64() / self.span() * WIDTH
    }
}

/// Colour and legend text of a step's bar.
fn step_style(step: Step) -> (&'static str, &'static str) {
    match step {
        Step::Draining => ("#e69f00", "drain"),
        Step::Patching => ("#cc79a7", "patch"),
        Step::Rebooting => ("#56b4e9", "reboot requested"),
        Step::WaitingReady => ("#0072b2", "reboot until Ready"),
        Step::Settling => ("#009e73", "settle"),
        Step::Pending | Step::Done | Step::Failed => ("#999999", "other"),
    }
}

/// Escapes text for XML content and attribute values; drops control characters.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().take(MAX_TEXT * 4) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn short(s: &str) -> String {
    if s.chars().count() <= MAX_TEXT {
        s.to_string()
    } else {
        s.chars().take(MAX_TEXT - 1).chain(['…']).collect()
    }
}

/// The rows, grouped in order of first appearance: (group, rows).
fn grouped(f: &Forecast) -> Vec<(Option<&str>, Vec<&Row>)> {
    let mut out: Vec<(Option<&str>, Vec<&Row>)> = Vec::new();
    for r in &f.nodes {
        let g = r.group.as_deref();
        match out.iter_mut().find(|(k, _)| *k == g) {
            Some((_, rows)) => rows.push(r),
            None => out.push((g, vec![r])),
        }
    }
    out
}

/// Tick spacing: the smallest of a few round steps that keeps at most 12 ticks.
fn tick_step(axis: &Axis) -> i64 {
    const STEPS: [i64; 11] = [
        60,
        300,
        900,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86400,
        7 * 86400,
        30 * 86400,
    ];
    let span = axis.span();
    STEPS
        .into_iter()
        .find(|s| span / *s as f64 <= 12.0)
        .unwrap_or(90 * 86400)
}

fn axis_svg(out: &mut String, axis: &Axis, height: f64, zone: Option<&str>) {
    let step = tick_step(axis);
    let first = axis.start.as_second().div_euclid(step) * step + step;
    let mut t = first;
    for _ in 0..64 {
        let Ok(ts) = Timestamp::from_second(t) else {
            break;
        };
        if ts > axis.end {
            break;
        }
        let x = axis.x(ts);
        let label = human_time(ts, zone);
        // Drop the zone (the title states it); sub-day ticks show the time
        // only, except at midnight and the first tick.
        let mut parts: Vec<&str> = label.split(' ').collect();
        parts.pop();
        if step < 86400 && parts.len() == 3 {
            let keep_date = t == first || parts[2] == "00:00";
            parts.drain(..if keep_date { 1 } else { 2 });
        }
        let _ = write!(
            out,
            r##"<line class="tick" x1="{x:.2}" y1="{y0}" x2="{x:.2}" y2="{height:.2}" stroke="#dddddd"/><text class="tick-label" x="{x:.2}" y="{ty}" font-size="10" text-anchor="middle">{}</text>"##,
            xml_escape(&parts.join(" ")),
            y0 = TOP - 8.0,
            ty = TOP - 12.0,
        );
        out.push('\n');
        t += step;
    }
}

fn shading_svg(out: &mut String, axis: &Axis, spec: &PatchPolicySpec, height: f64) {
    let h = height - TOP;
    if let Ok(schedule) = Schedule::new(&spec.maintenance_windows, &[])
        && !schedule.is_always_open()
    {
        let mut t = axis.start;
        for _ in 0..MAX_WINDOWS {
            let Some(iv) = schedule.next_opening(t) else {
                break;
            };
            if iv.start >= axis.end || iv.end <= t {
                break;
            }
            let (a, b) = (iv.start.max(axis.start), iv.end.min(axis.end));
            let _ = writeln!(
                out,
                r##"<rect class="window" data-start="{a}" data-end="{b}" x="{x:.2}" y="{TOP}" width="{w:.2}" height="{h:.2}" fill="#e5f5e0"/>"##,
                x = axis.x(a),
                w = axis.x(b) - axis.x(a),
            );
            t = iv.end;
        }
    }
    for b in &spec.blackouts {
        let (s, e) = (b.start.0, b.end.0);
        if e <= axis.start || s >= axis.end || e <= s {
            continue;
        }
        let (a, z) = (s.max(axis.start), e.min(axis.end));
        let reason = b.reason.as_deref().map(short).unwrap_or_default();
        let _ = writeln!(
            out,
            r##"<rect class="blackout" data-start="{a}" data-end="{z}" x="{x:.2}" y="{TOP}" width="{w:.2}" height="{h:.2}" fill="#fbb4b9" fill-opacity="0.6"><title>blackout {}</title></rect>"##,
            xml_escape(&reason),
            x = axis.x(a),
            w = axis.x(z) - axis.x(a),
        );
    }
}

fn marker_svg(out: &mut String, class: &str, x: f64, height: f64, colour: &str, label: &str) {
    let _ = writeln!(
        out,
        r#"<line class="{class}" x1="{x:.2}" y1="{y0}" x2="{x:.2}" y2="{height:.2}" stroke="{colour}" stroke-width="2"/><text class="{class}-label" x="{x:.2}" y="{ty}" font-size="11" fill="{colour}" text-anchor="middle">{label}</text>"#,
        y0 = TOP - 4.0,
        ty = height + 14.0,
    );
}

fn rows_svg(out: &mut String, axis: &Axis, f: &Forecast) {
    let mut y = TOP;
    for (group, rows) in grouped(f) {
        if let Some(g) = group {
            let _ = writeln!(
                out,
                r#"<text class="group" x="8" y="{:.2}" font-size="12" font-weight="bold">{}</text>"#,
                y + GROUP - 6.0,
                xml_escape(&short(g)),
            );
            y += GROUP;
        }
        for r in rows {
            let _ = writeln!(
                out,
                r#"<text class="node" data-node="{n}" x="20" y="{:.2}" font-size="11">{n}</text>"#,
                y + ROW - 6.0,
                n = xml_escape(&r.node),
            );
            for s in &r.steps {
                let (colour, what) = step_style(s.step);
                let x = axis.x(s.start);
                let _ = writeln!(
                    out,
                    r#"<rect class="bar" data-node="{n}" data-step="{step:?}" data-start="{a}" data-end="{b}" x="{x:.3}" y="{:.2}" width="{w:.3}" height="{:.2}" fill="{colour}"><title>{n}: {what} {a} – {b}</title></rect>"#,
                    y + 3.0,
                    ROW - 6.0,
                    n = xml_escape(&r.node),
                    step = s.step,
                    a = s.start,
                    b = s.end,
                    w = axis.x(s.end) - x,
                );
            }
            if r.steps.is_empty() {
                let _ = writeln!(
                    out,
                    r##"<text class="result" x="{:.2}" y="{:.2}" font-size="10" fill="#666666">{}</text>"##,
                    LEFT + 4.0,
                    y + ROW - 6.0,
                    xml_escape(&r.result),
                );
            }
            y += ROW;
        }
    }
}

fn legend_svg(out: &mut String, y: f64) {
    let mut x = LEFT;
    let items = [
        Step::Draining,
        Step::Patching,
        Step::Rebooting,
        Step::WaitingReady,
        Step::Settling,
    ]
    .map(step_style)
    .into_iter()
    .chain([("#e5f5e0", "window"), ("#fbb4b9", "blackout")]);
    for (colour, what) in items {
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ty}" font-size="11">{what}</text>"#,
            tx = x + 16.0,
            ty = y + 10.0,
        );
        x += 30.0 + what.len() as f64 * 6.5;
    }
    out.push('\n');
}

/// Height of the rows part.
fn rows_height(f: &Forecast) -> f64 {
    grouped(f)
        .iter()
        .map(|(g, rows)| if g.is_some() { GROUP } else { 0.0 } + ROW * rows.len() as f64)
        .sum()
}

/// The forecast as a standalone SVG document. `zone` is the time zone of the
/// axis labels (the policy's first window's, else UTC).
pub fn render_svg(f: &Forecast, spec: &PatchPolicySpec, zone: Option<&str>) -> String {
    let axis = Axis::of(f);
    let bottom = TOP + rows_height(f);
    let height = bottom + 50.0;
    let total_w = LEFT + WIDTH + RIGHT;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="sofort-timeline" width="{total_w}" height="{height}" viewBox="0 0 {total_w} {height}" font-family="sans-serif" data-axis-start="{}" data-axis-end="{}">"#,
        axis.start, axis.end,
    );
    out.push_str(r#"<rect x="0" y="0" width="100%" height="100%" fill="white"/>"#);
    out.push('\n');
    let when = match (f.completion, &f.problem) {
        (Some(c), _) => format!("predicted completion {}", human_time(c, zone)),
        (None, Some(p)) => format!("not predicted to complete: {}", short(p)),
        (None, None) => "not predicted to complete".into(),
    };
    let _ = writeln!(
        out,
        r#"<text class="title" x="8" y="18" font-size="14" font-weight="bold">PatchPolicy {} revision {}: {} nodes</text><text class="subtitle" x="8" y="36" font-size="11">forecast from {}; {}{}</text>"#,
        xml_escape(&f.policy),
        xml_escape(&f.revision),
        f.nodes.len(),
        human_time(f.now, zone),
        xml_escape(&when),
        if spec.urgent {
            " (urgent: windows and blackouts do not apply)"
        } else {
            ""
        },
    );
    shading_svg(&mut out, &axis, spec, bottom);
    axis_svg(&mut out, &axis, bottom, zone);
    rows_svg(&mut out, &axis, f);
    marker_svg(&mut out, "now", axis.x(f.now), bottom, "#333333", "now");
    if let Some(c) = f.completion {
        marker_svg(&mut out, "completion", axis.x(c), bottom, "#d55e00", "done");
    }
    legend_svg(&mut out, bottom + 24.0);
    out.push_str("</svg>\n");
    out
}

/// The forecast as a standalone HTML page: the SVG timeline and the table.
pub fn render_html(f: &Forecast, spec: &PatchPolicySpec, zone: Option<&str>) -> String {
    let mut out = String::new();
    let title = format!(
        "PatchPolicy {} revision {}",
        xml_escape(&f.policy),
        xml_escape(&f.revision)
    );
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{title}: forecast</title>\n<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}</style>\n</head>\n<body>\n<h1>{title}</h1>"
    );
    out.push_str(&render_svg(f, spec, zone));
    out.push_str("<table>\n<tr><th>order</th><th>node</th><th>group</th><th>start</th><th>done</th><th>result</th></tr>\n");
    let t = |t: Option<Timestamp>| t.map(|t| human_time(t, zone)).unwrap_or_else(|| "-".into());
    for r in &f.nodes {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.order,
            xml_escape(&r.node),
            xml_escape(r.group.as_deref().unwrap_or("-")),
            t(r.start),
            t(r.done),
            xml_escape(&r.result),
        );
    }
    out.push_str("</table>\n</body>\n</html>\n");
    out
}
