//! `multinic bench --plot FILE`: the figure of docs/benchmarks.md, drawn as SVG text from the
//! medians of the run (no plotting library: lines, bars, axes and labels are a few SVG elements).
//!
//! Panels: attach and detach latency against the number of NICs *m* for ours, the netlink floor
//! and the Multus way (host-device, then macvlan; x on a log2 scale, as m doubles), and pod start
//! on the cluster with and without NICs (row 10), when that row ran. A median that is missing
//! (every run of it failed) is left out of its line, never drawn as zero.

use std::fmt::Write as _;

/// The three variants of rows 1–3, in legend order.
pub const VARIANTS: [&str; 3] = ["ours", "netlink floor", "Multus way"];
const COLOURS: [&str; 3] = ["#d62728", "#2ca02c", "#1f77b4"];

/// The medians of one (mode, m) of rows 1–3, in ms, in [`VARIANTS`] order. `NaN`: no median.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachPoint {
    pub mode: &'static str,
    pub m: usize,
    pub attach: [f64; 3],
    pub detach: [f64; 3],
}

/// Row 10's pod start medians of one mode, in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct StartPoint {
    pub mode: &'static str,
    pub nics: usize,
    pub with_nics: f64,
    pub no_claim: f64,
}

/// The points of one line panel: m and the three medians.
type Series = Vec<(usize, [f64; 3])>;

const PANEL_W: f64 = 300.0;
const PANEL_H: f64 = 220.0;
const MARGIN_L: f64 = 52.0;
const MARGIN_T: f64 = 28.0;
const MARGIN_B: f64 = 36.0;
const COLUMNS: usize = 3;

/// A "nice" axis maximum (1, 2 or 5 × 10^k) at or above `max`, and its tick step.
fn axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.25);
    }
    let exp = max.log10().floor();
    let base = 10f64.powf(exp);
    for k in [1.0, 2.0, 5.0, 10.0] {
        if k * base >= max {
            return (k * base, k * base / 4.0);
        }
    }
    (10.0 * base, 2.5 * base)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The frame of panel `index` (axes, title, y ticks up to `ymax`): its plot area's origin and size.
fn frame(out: &mut String, index: usize, title: &str, ymax: f64, step: f64, ylabel: &str) -> (f64, f64, f64, f64) {
    let x0 = (index % COLUMNS) as f64 * (PANEL_W + MARGIN_L) + MARGIN_L;
    let y0 = (index / COLUMNS) as f64 * (PANEL_H + MARGIN_T + MARGIN_B) + MARGIN_T;
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"##,
        x0 + PANEL_W / 2.0,
        y0 - 10.0,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0:.1}" y="{y0:.1}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    let mut tick = 0.0;
    while tick <= ymax + step / 2.0 {
        let y = y0 + PANEL_H - tick / ymax * PANEL_H;
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            x0 + PANEL_W,
            x0 - 4.0,
            y + 3.0,
            format_tick(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="10" transform="rotate(-90 {:.1} {:.1})" text-anchor="middle">{}</text>"##,
        x0 - 38.0,
        y0 + PANEL_H / 2.0,
        x0 - 38.0,
        y0 + PANEL_H / 2.0,
        esc(ylabel)
    );
    (x0, y0, PANEL_W, PANEL_H)
}

fn format_tick(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A line panel: `points` (m, the three medians) on a log2 x axis.
fn line_panel(out: &mut String, index: usize, title: &str, points: &[(usize, [f64; 3])]) {
    let ymax_data = points
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (ymax, step) = axis(ymax_data);
    let (x0, y0, w, h) = frame(out, index, title, ymax, step, "ms (median)");
    let ms: Vec<usize> = points.iter().map(|(m, _)| *m).collect();
    let lo = ms.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = ms.iter().copied().max().unwrap_or(1).max(1) as f64;
    let span = (hi.log2() - lo.log2()).max(1.0);
    let x_of = |m: usize| x0 + 12.0 + ((m.max(1) as f64).log2() - lo.log2()) / span * (w - 24.0);
    for &m in &ms {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{m}</text>"##,
            x_of(m),
            y0 + h + 14.0
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">m (NICs per pod)</text>"##,
        x0 + w / 2.0,
        y0 + h + 28.0
    );
    for (v, colour) in COLOURS.iter().enumerate() {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|(_, values)| values[v].is_finite())
            .map(|(m, values)| (x_of(*m), y0 + h - values[v] / ymax * h))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            r##"<polyline data-variant="{}" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"##,
            VARIANTS[v],
            line.join(" ")
        );
        for (x, y) in &pts {
            let _ = writeln!(out, r##"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"##);
        }
    }
}

/// Pod start: per mode a bar with NICs and one without a claim.
fn start_panel(out: &mut String, index: usize, starts: &[StartPoint]) {
    let ymax_data = starts
        .iter()
        .flat_map(|s| [s.with_nics, s.no_claim])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (ymax, step) = axis(ymax_data);
    let nics = starts.first().map_or(0, |s| s.nics);
    let title = format!("pod create → Ready, {nics} NICs vs no claim");
    let (x0, y0, w, h) = frame(out, index, &title, ymax, step, "ms (median)");
    let slot = w / starts.len().max(1) as f64;
    for (i, s) in starts.iter().enumerate() {
        let left = x0 + i as f64 * slot;
        for (j, (value, colour, label)) in [(s.with_nics, COLOURS[0], "NICs"), (s.no_claim, "#999", "none")]
            .into_iter()
            .enumerate()
        {
            if !value.is_finite() {
                continue;
            }
            let bw = slot / 3.0;
            let x = left + slot / 6.0 + j as f64 * bw;
            let bh = value / ymax * h;
            let _ = writeln!(
                out,
                r##"<rect data-bar="{} {label}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{value:.0}</text>"##,
                s.mode,
                y0 + h - bh,
                bw - 4.0,
                x + bw / 2.0 - 2.0,
                y0 + h - bh - 3.0
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
            left + slot / 2.0,
            y0 + h + 14.0,
            esc(s.mode)
        );
    }
}

/// The whole figure. `caption` (tree, machine, runs) goes under the title.
pub fn svg(attach: &[AttachPoint], starts: &[StartPoint], caption: &str) -> String {
    let mut panels: Vec<(String, Series)> = Vec::new();
    let mut modes: Vec<&str> = attach.iter().map(|p| p.mode).collect();
    modes.dedup();
    for mode in modes {
        let mut of = |pick: fn(&AttachPoint) -> [f64; 3], what: &str| {
            let mut pts: Series = attach
                .iter()
                .filter(|p| p.mode == mode)
                .map(|p| (p.m, pick(p)))
                .collect();
            pts.sort_by_key(|(m, _)| *m);
            panels.push((format!("{what}, {mode}"), pts));
        };
        of(|p| p.attach, "attach (CNI ADD)");
        of(|p| p.detach, "detach (CNI DEL)");
    }
    let count = panels.len() + usize::from(!starts.is_empty());
    let rows = count.div_ceil(COLUMNS).max(1);
    let width = COLUMNS as f64 * (PANEL_W + MARGIN_L) + 20.0;
    let height = rows as f64 * (PANEL_H + MARGIN_T + MARGIN_B) + 70.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let mut body = String::new();
    for (i, (title, pts)) in panels.iter().enumerate() {
        line_panel(&mut body, i, title, pts);
    }
    if !starts.is_empty() {
        start_panel(&mut body, panels.len(), starts);
    }
    // The panels sit below the legend line.
    let _ = writeln!(out, r##"<g transform="translate(0 40)">"##);
    out.push_str(&body);
    let _ = writeln!(out, "</g>");
    let _ = writeln!(
        out,
        r##"<text x="10" y="16" font-size="12">{}</text>"##,
        esc(&format!("multinic bench: {caption}"))
    );
    for (v, colour) in COLOURS.iter().enumerate() {
        let x = 10.0 + v as f64 * 130.0;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.0}" y1="30" x2="{:.0}" y2="30" stroke="{colour}" stroke-width="3"/><text x="{:.0}" y="34" font-size="11">{}</text>"##,
            x + 20.0,
            x + 25.0,
            VARIANTS[v]
        );
    }
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(mode: &'static str, m: usize, scale: f64) -> AttachPoint {
        AttachPoint {
            mode,
            m,
            attach: [2.0 * scale, 1.5 * scale, 20.0 * scale],
            detach: [3.0 * scale, 2.5 * scale, f64::NAN],
        }
    }

    #[test]
    fn axes_round_up_to_1_2_5() {
        assert_eq!(axis(0.7), (1.0, 0.25));
        assert_eq!(axis(1.3), (2.0, 0.5));
        assert_eq!(axis(420.0), (500.0, 125.0));
        assert_eq!(axis(600.0), (1000.0, 250.0));
        assert_eq!(axis(f64::NAN), (1.0, 0.25));
        assert_eq!(axis(0.0), (1.0, 0.25));
    }

    #[test]
    fn figure_has_a_line_per_variant_and_panel_and_leaves_missing_medians_out() {
        let attach: Vec<AttachPoint> = [1, 2, 4, 8, 16]
            .into_iter()
            .map(|m| point("host-device", m, m as f64))
            .chain([8].into_iter().map(|m| point("macvlan", m, 1.0)))
            .collect();
        let starts = [
            StartPoint {
                mode: "host-device",
                nics: 8,
                with_nics: 767.6,
                no_claim: 573.2,
            },
            StartPoint {
                mode: "macvlan",
                nics: 8,
                with_nics: f64::NAN,
                no_claim: 573.2,
            },
        ];
        let s = svg(&attach, &starts, "tree abc, 20 runs <quiet>");
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        // 4 panels × 3 variants, less the two detach panels' Multus line (all NaN).
        assert_eq!(s.matches("<polyline").count(), 10, "{s}");
        assert_eq!(s.matches(r#"data-variant="Multus way""#).count(), 2);
        // host-device attach of ours: five points, x growing with m.
        let ours = s
            .lines()
            .find(|l| l.contains(r#"data-variant="ours""#))
            .and_then(|l| l.split("points=\"").nth(1))
            .and_then(|l| l.split('"').next())
            .unwrap();
        let xs: Vec<f64> = ours
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(xs.len(), 5);
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        // Bars: three (the macvlan pod with NICs had no median); the caption is escaped.
        assert_eq!(s.matches("data-bar=").count(), 3);
        assert!(s.contains("&lt;quiet&gt;"));
        // Without row 10 there is no bar panel.
        assert_eq!(svg(&attach, &[], "x").matches("data-bar=").count(), 0);
    }
}
