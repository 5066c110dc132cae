//! The progress bar operators watch during long exports: events written out of the total, rate,
//! elapsed time and ETA, on stderr, a few redraws a second; then a one-line summary.
//!
//! Drawn only when stderr is a terminal and `--quiet` is off (never in cron, CI or pipes). The
//! total is known before the first row, exact or PostgreSQL's estimate, and the bar says which.
//! The text helpers are pure and unit-tested; indicatif does the drawing.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

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
                    let _ = w.write_str(&rate(state.pos(), state.elapsed()));
                },
            )
            .with_key(
                "left",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&eta(state.pos(), state.len(), state.elapsed()));
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(REFRESH_HZ)));
        Self { bar: Some(bar) }
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

/// The bar's layout; an estimated total shows as `~N`.
pub fn template(total: Total) -> String {
    let approx = if matches!(total, Total::Estimate(_)) {
        "~"
    } else {
        ""
    };
    format!(
        "{{spinner}} [{{wide_bar}}] {{human_pos}}/{approx}{{human_len}} events ({{percent}}%), \
         {{rate}}, {{elapsed}} elapsed, {{left}}"
    )
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Throughput: `812k events/s`, `1.2M events/s`, `35 events/s`.
pub fn rate(rows: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "- events/s".into();
    }
    let per_sec = rows as f64 / secs;
    match per_sec {
        r if r >= 1e6 => format!("{:.1}M events/s", r / 1e6),
        r if r >= 1e4 => format!("{:.0}k events/s", r / 1e3),
        r => format!("{r:.0} events/s"),
    }
}

/// Time left at the current rate: `ETA 12s`, `ETA 3m05s`; `ETA -` before any row.
pub fn eta(pos: u64, len: Option<u64>, elapsed: Duration) -> String {
    match len {
        Some(len) if pos > 0 => {
            let left = elapsed.as_secs_f64() * len.saturating_sub(pos) as f64 / pos as f64;
            format!("ETA {}", duration(Duration::from_secs_f64(left)))
        }
        _ => "ETA -".into(),
    }
}

/// `850ms`, `12.3s`, `3m05s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The line that replaces the bar: `Wrote 1,000,000 events in 1.2s (833k events/s)`.
pub fn summary(rows: u64, elapsed: Duration) -> String {
    format!(
        "Wrote {} events in {} ({})",
        count(rows),
        duration(elapsed),
        rate(rows, elapsed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(10_000_000), "10,000,000");
    }

    #[test]
    fn rates_scale_their_unit() {
        assert_eq!(rate(35, Duration::from_secs(1)), "35 events/s");
        assert_eq!(rate(812_000, Duration::from_secs(1)), "812k events/s");
        assert_eq!(rate(2_400_000, Duration::from_secs(2)), "1.2M events/s");
        assert_eq!(rate(5, Duration::ZERO), "- events/s");
    }

    #[test]
    fn eta_follows_the_current_rate() {
        assert_eq!(eta(0, Some(100), Duration::from_secs(3)), "ETA -");
        assert_eq!(eta(25, Some(100), Duration::from_secs(10)), "ETA 30.0s");
        assert_eq!(eta(1, Some(1_000), Duration::from_secs(1)), "ETA 16m39s");
        assert_eq!(eta(150, Some(100), Duration::from_secs(1)), "ETA 0ms");
        assert_eq!(eta(10, None, Duration::from_secs(1)), "ETA -");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3_720)), "1h02m");
    }

    #[test]
    fn estimated_totals_are_marked() {
        assert!(template(Total::Estimate(5)).contains("{human_pos}/~{human_len} events"));
        assert!(template(Total::Exact(5)).contains("{human_pos}/{human_len} events"));
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            summary(1_000_000, Duration::from_millis(1_200)),
            "Wrote 1,000,000 events in 1.2s (833k events/s)"
        );
    }
}
