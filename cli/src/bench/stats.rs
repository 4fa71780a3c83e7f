//! Medians, percentiles and the printed table.

use std::fmt::Write as _;
use std::time::Duration;

/// Median, min and max of one measured quantity over the runs of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            runs: v.len(),
        })
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; `NaN` for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The rounds of a row: one untimed warm-up, then `runs` timed runs; each with its label
/// ("warm-up", "run k") for the errors.
pub fn rounds(runs: usize) -> impl Iterator<Item = (bool, String)> {
    std::iter::once((false, "warm-up".to_string())).chain((0..runs).map(|run| (true, format!("run {run}"))))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How a value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    S,
    Ms,
    Us,
    PerSec,
    MiB,
    /// A count (API requests): whole numbers as such, else 2 decimals.
    Count,
}

impl Unit {
    fn fmt(self, x: f64) -> String {
        match self {
            Unit::S => format!("{x:.2} s"),
            Unit::Ms => format!("{x:.2} ms"),
            Unit::Us => {
                if x >= 100.0 {
                    format!("{x:.0} µs")
                } else {
                    format!("{x:.1} µs")
                }
            }
            Unit::PerSec => {
                if x >= 10_000.0 {
                    format!("{:.0}k/s", x / 1e3)
                } else {
                    format!("{x:.0}/s")
                }
            }
            Unit::MiB => format!("{x:.1} MiB"),
            Unit::Count if x.fract() == 0.0 => format!("{x:.0}"),
            Unit::Count => format!("{x:.2}"),
        }
    }

    /// A difference, with its sign.
    pub fn signed(self, x: f64) -> String {
        let sign = if x < 0.0 { "−" } else { "+" };
        format!("{sign}{}", self.fmt(x.abs()))
    }

    pub fn summary(self, s: &Summary) -> String {
        format!("{} [{} – {}]", self.fmt(s.median), self.fmt(s.min), self.fmt(s.max))
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub case: String,
    pub unit: Unit,
    pub ours: Option<Summary>,
    /// Name and summary of the baseline, measured in the same runs.
    pub baseline: Option<(String, Option<Summary>)>,
    /// `ours / floor` or `theirs / ours`, from the medians: (label, value).
    pub ratio: Option<(String, f64)>,
    /// `ours − baseline` of the medians, in the row's unit; printed in the ratio column.
    pub added: Option<f64>,
    pub target: String,
    /// Whether the target is met; `None` when there is none.
    pub met: Option<bool>,
    /// The first failure of this row, if any run failed.
    pub error: Option<String>,
}

impl Row {
    pub fn new(id: &str, case: impl Into<String>, unit: Unit) -> Self {
        Self {
            id: id.into(),
            case: case.into(),
            unit,
            ours: None,
            baseline: None,
            ratio: None,
            added: None,
            target: String::new(),
            met: None,
            error: None,
        }
    }

    /// The row's result: the summary of our samples, and the error of `outcome` if the runs
    /// failed.
    pub fn record<E: std::fmt::Display>(&mut self, ours: &[f64], outcome: &Result<(), E>) {
        self.ours = Summary::of(ours);
        if let Err(e) = outcome {
            self.error = Some(e.to_string());
        }
    }

    pub fn failed(id: &str, case: impl Into<String>, error: impl std::fmt::Display) -> Self {
        let mut row = Self::new(id, case, Unit::Ms);
        row.error = Some(error.to_string());
        row
    }
}

/// Renders the rows as one Markdown table (readable as printed, pasteable into docs).
pub fn render(rows: &[Row]) -> String {
    let header = [
        "#",
        "case",
        "ours: median [min – max]",
        "baseline: median [min – max]",
        "ratio",
        "target",
        "met",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let ours = match (&r.error, &r.ours) {
                (Some(_), _) => "FAILED".to_string(),
                (None, Some(s)) => r.unit.summary(s),
                (None, None) => "—".to_string(),
            };
            let baseline = match &r.baseline {
                Some((name, Some(s))) => format!("{name}: {}", r.unit.summary(s)),
                Some((name, None)) => format!("{name}: FAILED"),
                None => "—".to_string(),
            };
            let ratio = match (&r.ratio, r.added) {
                (Some((label, x)), _) => format!("{x:.2}× ({label})"),
                (None, Some(x)) => format!("{} added", r.unit.signed(x)),
                (None, None) => "—".to_string(),
            };
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "—",
            };
            [
                r.id.clone(),
                r.case.clone(),
                ours,
                baseline,
                ratio,
                if r.target.is_empty() {
                    "—".into()
                } else {
                    r.target.clone()
                },
                met.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| -> String {
        let mut s = String::from("|");
        for (c, w) in cols.iter().zip(widths) {
            let pad = w.saturating_sub(c.chars().count());
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        s
    };
    let mut out = line(&header.map(String::from));
    out.push('\n');
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_and_percentiles() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap_or(Summary {
            median: 0.0,
            min: 0.0,
            max: 0.0,
            runs: 0,
        });
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 10.0, 4));
        assert!(Summary::of(&[]).is_none());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..1], 99.0), 1.0);
    }

    #[test]
    fn table_has_one_line_per_row() {
        let mut r = Row::new("1", "attach m=1", Unit::Ms);
        r.ours = Summary::of(&[1.0, 2.0]);
        let mut added = Row::new("10", "pod start", Unit::Ms);
        added.added = Some(-1.5);
        let text = render(&[r, Row::failed("2", "x", "boom"), added]);
        assert_eq!(text.lines().count(), 5);
        assert!(text.contains("FAILED"));
        assert!(text.contains("| −1.50 ms added |"), "{text}");
        let mut count = Row::new("13", "requests", Unit::Count);
        count.ours = Summary::of(&[3.0, 4.0]);
        let mut secs = Row::new("11", "controller", Unit::S);
        secs.ours = Summary::of(&[1.234]);
        let text = render(&[count, secs]);
        assert!(text.contains("| 3.50 [3 – 4] "), "{text}");
        assert!(text.contains("| 1.23 s [1.23 s – 1.23 s] "), "{text}");
    }
}
