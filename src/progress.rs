//! The progress bar operators watch during long exports: events written out of the total, rate,
//! elapsed time and ETA, on stderr, a few redraws a second; then a one-line summary.
//!
//! Drawn only when stderr is a terminal and `--quiet` is off (never in cron, CI or pipes). The
//! total is known before the first row, exact or PostgreSQL's estimate, and the bar says which
//! (`~`). Counts, durations and rates are indicatif's own formatting.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{
    HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

/// Redraws a second.
const REFRESH_HZ: u8 = 4;

/// The number of rows an export will write, before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Exact(u64),
    /// From the planner's statistics: the bar shows it with `~`.
    Estimate(u64),
}

impl Total {
    pub fn rows(self) -> u64 {
        match self {
            Total::Exact(n) | Total::Estimate(n) => n,
        }
    }
}

/// Whether a bar should be drawn: a terminal on stderr, and not `--quiet`.
pub fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A progress bar, or nothing when none is wanted.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// No bar at all.
    pub fn hidden() -> Self {
        Self { bar: None }
    }

    /// A bar on stderr counting towards `total`.
    pub fn start(total: Total) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total.rows()),
            ProgressDrawTarget::stderr_with_hz(REFRESH_HZ),
        );
        let style = ProgressStyle::with_template(&template(total))
            .expect("the template is valid")
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate(state.per_sec()));
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(REFRESH_HZ)));
        // Drawn at once: an export shorter than a tick still shows what it counts towards.
        bar.tick();
        Self { bar: Some(bar) }
    }

    /// Starts counting again, for the next phase of a run that reads all rows before it writes
    /// them (`reading`, then `writing`): the phase names the count.
    pub fn phase(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.set_message(format!("{name} "));
            bar.reset_eta();
            bar.tick();
        }
    }

    /// `rows` more events written.
    pub fn advance(&self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }

    /// Clears the bar and leaves the one-line summary in its place.
    pub fn finish(&self, rows: u64) {
        if let Some(bar) = &self.bar {
            let elapsed = bar.elapsed();
            bar.finish_and_clear();
            eprintln!("{}", summary(rows, elapsed));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // On an error the bar goes away before the error line is printed.
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The bar's layout; an estimated total shows as `~N` (what indicatif does not know).
fn template(total: Total) -> String {
    let approx = if matches!(total, Total::Estimate(_)) {
        "~"
    } else {
        ""
    };
    format!(
        "{{spinner}} {{msg}}[{{wide_bar}}] {{human_pos}}/{approx}{{human_len}} events ({{percent}}%), \
         {{rate}}, {{elapsed}} elapsed, ETA {{eta}}"
    )
}

/// `812,345 events/s`.
fn rate(per_sec: f64) -> String {
    format!("{} events/s", HumanCount(per_sec.max(0.0) as u64))
}

/// The line that replaces the bar: `Wrote 1,000,000 events in 2 seconds (476,190 events/s)`.
fn summary(rows: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let per_sec = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
    format!(
        "Wrote {} events in {} ({})",
        HumanCount(rows),
        HumanDuration(elapsed),
        rate(per_sec)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimated_totals_are_marked() {
        assert!(template(Total::Estimate(5)).contains("{human_pos}/~{human_len} events"));
        assert!(template(Total::Exact(5)).contains("{human_pos}/{human_len} events"));
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            summary(1_000_000, Duration::from_millis(2_100)),
            "Wrote 1,000,000 events in 2 seconds (476,190 events/s)"
        );
    }
}
