//! The full-screen view: [`draw`] paints a [`Screen`] into a ratatui frame.
//! A pure function of the screen and the frame size (tested with ratatui's
//! `TestBackend`).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Wrap};

use super::model::{Cell, PolicyPanel, Screen};
use crate::api::Step;

/// Colour of a node's cell.
pub fn colour(c: Cell) -> Color {
    match c {
        Cell::Pending | Cell::Step(Step::Pending) => Color::DarkGray,
        Cell::Step(Step::Draining) => Color::Yellow,
        Cell::Step(Step::Patching) => Color::Magenta,
        Cell::Step(Step::Rebooting) => Color::Blue,
        Cell::Step(Step::WaitingReady) => Color::LightBlue,
        Cell::Step(Step::Settling) => Color::Cyan,
        Cell::Done | Cell::Step(Step::Done) => Color::Green,
        Cell::Failed | Cell::Step(Step::Failed) => Color::Red,
        Cell::Skipped => Color::Gray,
        Cell::NotReady => Color::LightRed,
        Cell::OtherPolicy => Color::White,
    }
}

const LEGEND: [Cell; 10] = [
    Cell::Pending,
    Cell::Step(Step::Draining),
    Cell::Step(Step::Patching),
    Cell::Step(Step::Rebooting),
    Cell::Step(Step::WaitingReady),
    Cell::Step(Step::Settling),
    Cell::Done,
    Cell::Failed,
    Cell::Skipped,
    Cell::NotReady,
];

/// Lines the node cells of one group take at `width` columns: names when
/// they fit in two lines, else one square per node.
fn group_line<'a>(group: &'a str, cells: &'a [super::model::NodeCell], width: u16) -> Line<'a> {
    let label_w = 10usize;
    let avail = (width as usize).saturating_sub(label_w + 2).max(1);
    let names_w: usize = cells.iter().map(|c| c.name.chars().count() + 1).sum();
    let mut spans = vec![Span::styled(
        format!("{:<w$}", truncate(group, label_w - 1), w = label_w),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    let by_name = names_w <= avail;
    for c in cells {
        let style = Style::default().fg(Color::Black).bg(colour(c.cell));
        if by_name {
            spans.push(Span::styled(c.name.clone(), style));
            spans.push(Span::raw(" "));
        } else {
            spans.push(Span::styled("■", Style::default().fg(colour(c.cell))));
        }
    }
    Line::from(spans)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn policy_height(p: &PolicyPanel) -> u16 {
    // Borders, gauge, message, one line per group.
    (4 + p.groups.len()).min(40) as u16
}

fn draw_policy(f: &mut Frame<'_>, area: Rect, p: &PolicyPanel) {
    let mut title = format!(" {} rev {}  {} ", p.name, p.revision, p.phase);
    if p.urgent {
        title.push_str("urgent ");
    }
    if p.paused {
        title.push_str("paused ");
    }
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = Layout::vertical(
        std::iter::once(Constraint::Length(1))
            .chain(std::iter::once(Constraint::Length(1)))
            .chain(p.groups.iter().map(|_| Constraint::Length(1))),
    )
    .split(inner);
    let ratio = if p.total == 0 {
        0.0
    } else {
        f64::from(p.updated.min(p.total)) / f64::from(p.total)
    };
    let gauge = Gauge::default()
        .gauge_style(Style::default().fg(Color::Green).bg(Color::DarkGray))
        .ratio(ratio)
        .label(format!(
            "{}/{} updated, {} in progress, {} failed; {}",
            p.updated, p.total, p.in_progress, p.failed, p.forecast
        ));
    if let Some(r) = rows.first() {
        f.render_widget(gauge, *r);
    }
    if let Some(r) = rows.get(1) {
        let msg = if p.message.is_empty() {
            "-"
        } else {
            p.message.as_str()
        };
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("waits/does: ", Style::default().fg(Color::Gray)),
                Span::raw(msg),
            ])),
            *r,
        );
    }
    for (i, (g, cells)) in p.groups.iter().enumerate() {
        if let Some(r) = rows.get(i + 2) {
            f.render_widget(Paragraph::new(group_line(g, cells, r.width)), *r);
        }
    }
}

/// Paints the whole screen.
pub fn draw(f: &mut Frame<'_>, s: &Screen) {
    let area = f.area();
    let ev_h = (s.events.len() as u16 + 2).max(3);
    let mut constraints = vec![Constraint::Length(1)];
    constraints.extend(
        s.policies
            .iter()
            .map(|p| Constraint::Length(policy_height(p))),
    );
    constraints.push(Constraint::Length(1));
    constraints.push(Constraint::Min(ev_h.min(3)));
    constraints.push(Constraint::Length(1));
    let parts = Layout::vertical(constraints).split(area);
    f.render_widget(
        Paragraph::new(Span::styled(
            s.title.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        parts[0],
    );
    for (i, p) in s.policies.iter().enumerate() {
        draw_policy(f, parts[i + 1], p);
    }
    let n = s.policies.len();
    let legend: Vec<Span<'_>> = LEGEND
        .iter()
        .flat_map(|c| {
            [
                Span::styled(" ", Style::default().bg(colour(*c))),
                Span::raw(format!(" {} ", c.label())),
            ]
        })
        .collect();
    f.render_widget(Paragraph::new(Line::from(legend)), parts[n + 1]);
    let events = Paragraph::new(
        s.events
            .iter()
            .map(|e| Line::from(e.as_str()))
            .collect::<Vec<_>>(),
    )
    .wrap(Wrap { trim: true })
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" recent Events "),
    );
    f.render_widget(events, parts[n + 2]);
    let footer = if s.policies.is_empty() {
        "no PatchPolicy found   q quits (the cluster keeps running)"
    } else {
        "q quits (the cluster keeps running)"
    };
    f.render_widget(
        Paragraph::new(Span::styled(footer, Style::default().fg(Color::Gray))),
        parts[n + 3],
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    use super::*;
    use crate::cmd::status::model::NodeCell;

    fn screen() -> Screen {
        let cell = |name: &str, cell| NodeCell {
            name: name.into(),
            cell,
        };
        Screen {
            title: "sofort status  2026-11-30 10:00:00 UTC".into(),
            policies: vec![PolicyPanel {
                name: "nightly".into(),
                revision: "r7".into(),
                phase: "Progressing".into(),
                urgent: false,
                paused: false,
                updated: 2,
                total: 4,
                in_progress: 1,
                failed: 0,
                forecast: "forecast completion Mon 2026-11-30 10:20 UTC".into(),
                message: "blocked: maxUnavailable 1".into(),
                groups: vec![
                    (
                        "zone-a".into(),
                        vec![cell("a1", Cell::Done), cell("a2", Cell::Done)],
                    ),
                    (
                        "zone-b".into(),
                        vec![
                            cell("b1", Cell::Step(Step::Draining)),
                            cell("b2", Cell::Pending),
                        ],
                    ),
                ],
            }],
            events: vec!["10:00:00 Normal  Cordoned  Node/b1  cordoned".into()],
            settled: false,
        }
    }

    fn draw_into(s: &Screen, w: u16, h: u16) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        t.draw(|f| draw(f, s)).expect("draw");
        t.backend().buffer().clone()
    }

    fn row(b: &Buffer, y: u16) -> String {
        (0..b.area.width)
            .map(|x| b[(x, y)].symbol().to_string())
            .collect()
    }

    /// (x, y) of the first occurrence of `text` on the screen.
    fn find(b: &Buffer, text: &str) -> Option<(u16, u16)> {
        (0..b.area.height).find_map(|y| {
            let r = row(b, y);
            r.find(text)
                .map(|byte| (r[..byte].chars().count() as u16, y))
        })
    }

    #[test]
    fn nodes_are_cells_coloured_by_step_in_their_group_rows() {
        let b = draw_into(&screen(), 100, 24);
        let (ax, ay) = find(&b, "a1").expect("a1 shown");
        let (bx, by) = find(&b, "b1").expect("b1 shown");
        assert_eq!(b[(ax, ay)].bg, Color::Green, "done is green");
        assert_eq!(b[(bx, by)].bg, Color::Yellow, "draining is yellow");
        let (px, py) = find(&b, "b2").expect("b2 shown");
        assert_eq!(b[(px, py)].bg, Color::DarkGray, "pending is grey");
        assert_eq!(ay + 1, by, "zone-b's row follows zone-a's");
        assert!(row(&b, ay).starts_with("│zone-a"), "{}", row(&b, ay));
    }

    #[test]
    fn the_gauge_the_reason_and_the_events_are_shown() {
        let b = draw_into(&screen(), 100, 24);
        assert!(row(&b, 0).contains("sofort status"));
        let (_, gy) = find(&b, "2/4 updated, 1 in progress, 0 failed").expect("gauge label");
        assert!(row(&b, gy).contains("forecast completion Mon 2026-11-30 10:20"));
        // Half done: the gauge's filled part covers about half the width.
        let filled = (0..b.area.width)
            .filter(|x| b[(*x, gy)].bg == Color::Green)
            .count();
        assert!((40..=60).contains(&filled), "filled {filled} of ~98");
        assert!(find(&b, "blocked: maxUnavailable 1").is_some());
        assert!(find(&b, "nightly rev r7").is_some());
        assert!(find(&b, "Node/b1  cordoned").is_some());
        assert!(find(&b, "q quits").is_some());
    }

    #[test]
    fn many_nodes_become_squares_and_a_narrow_screen_does_not_panic() {
        let mut s = screen();
        s.policies[0].groups[0].1 = (0..300)
            .map(|i| NodeCell {
                name: format!("node-with-a-long-name-{i}"),
                cell: if i < 100 { Cell::Done } else { Cell::Pending },
            })
            .collect();
        let b = draw_into(&s, 120, 30);
        let (_, y) = find(&b, "zone-a").expect("group shown");
        assert!(row(&b, y).contains('■'), "{}", row(&b, y));
        assert!(find(&b, "node-with-a-long-name-0").is_none());
        for (w, h) in [(10, 5), (1, 1), (40, 3)] {
            let _ = draw_into(&s, w, h);
        }
    }
}
