//! Live progress of `nmo simulate`.
//!
//! On a terminal, a block under the log lines is redrawn in place with ANSI escapes (no extra
//! crate): the virtual time, each window with its state and a progress bar for its round, the
//! nodes in maintenance and the evictions blocked by a PDB. Log lines (Events, reboots) scroll
//! above it. When stdout is not a terminal, only the log lines are printed, plainly; with
//! `-o json`, nothing is printed until the report.

use chrono::{DateTime, Utc};
use std::io::Write;

/// A window as the live display shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveWindow {
    /// Its name.
    pub name: String,
    /// `open`, `closed`, `suspended`.
    pub state: String,
    /// When it next opens (closed) or closes (open).
    pub until: Option<DateTime<Utc>>,
    /// Round number (0 before the first).
    pub round: i64,
    /// Nodes done (completed or failed) in the round.
    pub done: i32,
    /// Nodes in the round.
    pub total: i32,
    /// Nodes in flight.
    pub in_progress: i32,
    /// Whether the round finished.
    pub finished: bool,
}

/// What the live display shows at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStatus {
    /// Virtual now.
    pub now: Option<DateTime<Utc>>,
    /// The windows.
    pub windows: Vec<LiveWindow>,
    /// Nodes under a NodeMaintenance.
    pub in_maintenance: Vec<String>,
    /// Blocked evictions: (node, PDB `namespace/name`).
    pub blocked: Vec<(String, String)>,
    /// How fast the virtual clock runs (see `crate::simulate::pace`).
    pub speed: Option<LiveSpeed>,
}

/// The virtual clock's speed, in virtual seconds per real second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSpeed {
    /// Now: `--speed` times the pace the governor allows.
    pub now: u64,
    /// Since the run started: virtual time played (jumps left out) over real time.
    pub overall: u64,
    /// `--speed`.
    pub nominal: u64,
}

/// Where a run's progress goes.
pub trait Display: Send {
    /// A log line (an Event, a reboot, a clock jump).
    fn line(&mut self, line: String);
    /// The current state, as often as the run likes; displays redraw at their own pace.
    fn status(&mut self, status: &LiveStatus);
    /// The run is over: leave the terminal clean.
    fn finish(&mut self) {}
}

/// Log lines on stdout, no live block (stdout is not a terminal).
#[derive(Debug, Default)]
pub struct PlainDisplay;

impl Display for PlainDisplay {
    fn line(&mut self, line: String) {
        println!("{line}");
    }
    fn status(&mut self, _: &LiveStatus) {}
}

/// Nothing live (`-o json`: stdout carries only the report).
#[derive(Debug, Default)]
pub struct QuietDisplay;

impl Display for QuietDisplay {
    fn line(&mut self, _: String) {}
    fn status(&mut self, _: &LiveStatus) {}
}

/// Log lines with a live block redrawn under them (stdout is a terminal).
#[derive(Debug, Default)]
pub struct TerminalDisplay {
    drawn: usize,
    last: LiveStatus,
    last_draw: Option<std::time::Instant>,
}

impl TerminalDisplay {
    fn erase(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            // Up to the block's first line, then clear to the end of the screen.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, out: &mut impl Write) {
        let lines = render_live(&self.last, terminal_width());
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        self.drawn = lines.len();
        self.last_draw = Some(std::time::Instant::now());
    }
}

impl Display for TerminalDisplay {
    fn line(&mut self, line: String) {
        let mut out = std::io::stdout().lock();
        self.erase(&mut out);
        let _ = writeln!(out, "{line}");
        self.draw(&mut out);
        let _ = out.flush();
    }
    fn status(&mut self, status: &LiveStatus) {
        self.last = status.clone();
        let due = self
            .last_draw
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100));
        if due {
            let mut out = std::io::stdout().lock();
            self.erase(&mut out);
            self.draw(&mut out);
            let _ = out.flush();
        }
    }
    fn finish(&mut self) {
        let mut out = std::io::stdout().lock();
        self.erase(&mut out);
        let _ = out.flush();
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

/// A progress bar `[#####.....]` of `width` cells.
pub fn bar(done: i32, total: i32, width: usize) -> String {
    let filled = if total <= 0 {
        0
    } else {
        ((done.max(0) as usize * width) / total as usize).min(width)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The lines of the live block.
pub fn render_live(s: &LiveStatus, width: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "── virtual time {} ──{}",
        s.now
            .map(|t| t.format("%a %Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default(),
        s.speed
            .map(|v| format!(
                " {}x now of {}x, {}x effective{}",
                v.now,
                v.nominal,
                v.overall,
                if v.now < v.nominal {
                    " (held back: the controllers lag)"
                } else {
                    ""
                }
            ))
            .unwrap_or_default()
    )];
    for w in &s.windows {
        let until = w
            .until
            .map(|t| {
                let verb = if w.state == "open" { "closes" } else { "opens" };
                format!("{verb} {}", t.format("%a %H:%M"))
            })
            .unwrap_or_default();
        let round = if w.round == 0 {
            "no round yet".to_string()
        } else {
            format!(
                "round {} {} {}/{}{}{}",
                w.round,
                bar(w.done, w.total, 20),
                w.done,
                w.total,
                if w.in_progress > 0 {
                    format!(", {} in flight", w.in_progress)
                } else {
                    String::new()
                },
                if w.finished { ", done" } else { "" }
            )
        };
        lines.push(format!(
            "  {:<22} {:<7} {:<16} {round}",
            w.name, w.state, until
        ));
    }
    let list = |names: Vec<String>| {
        let mut text = String::new();
        for (i, n) in names.iter().enumerate() {
            if text.len() + n.len() + 2 > width.saturating_sub(30) {
                text.push_str(&format!("… ({} more)", names.len() - i));
                break;
            }
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(n);
        }
        text
    };
    lines.push(format!(
        "  in maintenance ({}): {}",
        s.in_maintenance.len(),
        list(s.in_maintenance.clone())
    ));
    if !s.blocked.is_empty() {
        lines.push(format!(
            "  blocked evictions ({}): {}",
            s.blocked.len(),
            list(
                s.blocked
                    .iter()
                    .map(|(node, pdb)| format!("{node} by PDB {pdb}"))
                    .collect()
            )
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 4), "[....]");
        assert_eq!(bar(2, 4, 4), "[##..]");
        assert_eq!(bar(4, 4, 4), "[####]");
        assert_eq!(bar(5, 0, 4), "[....]");
    }

    #[test]
    fn the_live_block_shows_time_windows_nodes_and_blocked_pdbs() {
        let s = LiveStatus {
            now: Some(Utc.with_ymd_and_hms(2026, 11, 28, 1, 30, 0).unwrap()),
            windows: vec![LiveWindow {
                name: "weekly-workers".into(),
                state: "open".into(),
                until: Some(Utc.with_ymd_and_hms(2026, 11, 28, 5, 0, 0).unwrap()),
                round: 1,
                done: 3,
                total: 6,
                in_progress: 2,
                finished: false,
            }],
            in_maintenance: vec!["worker-4".into(), "worker-5".into()],
            blocked: vec![("worker-4".into(), "shop/db".into())],
            speed: None,
        };
        let lines = render_live(&s, 100);
        assert_eq!(lines[0], "── virtual time Sat 2026-11-28 01:30:00 UTC ──");
        assert!(lines[1].contains("weekly-workers") && lines[1].contains("closes Sat 05:00"));
        assert!(lines[1].contains("round 1 [##########..........] 3/6, 2 in flight"));
        assert_eq!(lines[2], "  in maintenance (2): worker-4, worker-5");
        assert_eq!(lines[3], "  blocked evictions (1): worker-4 by PDB shop/db");
    }

    #[test]
    fn the_live_block_shows_how_fast_the_clock_runs() {
        let s = LiveStatus {
            now: Some(Utc.with_ymd_and_hms(2026, 11, 28, 1, 30, 0).unwrap()),
            speed: Some(LiveSpeed {
                now: 150,
                overall: 190,
                nominal: 600,
            }),
            ..Default::default()
        };
        assert_eq!(
            render_live(&s, 100)[0],
            "── virtual time Sat 2026-11-28 01:30:00 UTC ── 150x now of 600x, 190x effective (held back: the controllers lag)"
        );
    }
}
