//! Charts as inline SVG, drawn on the server.
//!
//! Written by hand on purpose: the console's charts are a few bars and lines over at
//! most a few hundred buckets. Drawn here they need no script (the page's CSP allows
//! none), no asset and no layout at run time, every bar carries its own tooltip
//! (`<title>`), and they print and screenshot as they look. A plotting crate (plotters)
//! would bring fonts and a backend for what is ~150 lines of arithmetic and markup; a
//! vendored JavaScript library would need a script source in the CSP and a second
//! rendering path for clients without script.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 170.0;
/// Room on the left for the axis labels, below for the times, above for markers.
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 14.0;

/// One series: a name (legend, tooltips), a CSS class, a value per bucket.
pub struct Series<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub values: Vec<Option<f64>>,
}

/// Text for SVG: `<`, `>`, `&` and quotes escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round number at or above `v`, for the top of an axis (1, 2 or 5 times a power of 10).
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v * 0.999_999)
        .unwrap_or(10.0 * p)
}

struct Frame {
    n: usize,
    top: f64,
    svg: String,
}

impl Frame {
    fn new(
        label: &str,
        n: usize,
        top: f64,
        fmt: &dyn Fn(f64) -> String,
        times: &[String],
    ) -> Frame {
        let mut svg = String::with_capacity(4096 + n * 160);
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">"#,
            esc(label)
        );
        let f = Frame { n, top, svg };
        let mut f = f;
        // Grid lines at 0, half and the top, labelled.
        for frac in [0.0, 0.5, 1.0] {
            let y = f.y(top * frac);
            let _ = write!(
                f.svg,
                r#"<line class="grid" x1="{LEFT}" x2="{W}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 4.0,
                y + 4.0,
                esc(&fmt(top * frac))
            );
        }
        // Times under the first, middle and last buckets.
        if n > 0 {
            let mut at = vec![0, n / 2, n - 1];
            at.dedup();
            for i in at {
                let anchor = if i == 0 {
                    "start"
                } else if i == n - 1 {
                    "end"
                } else {
                    "middle"
                };
                let x = if i == n - 1 { W } else { f.x(i) };
                let _ = write!(
                    f.svg,
                    r#"<text class="axis" x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                    H - 4.0,
                    esc(times.get(i).map(String::as_str).unwrap_or(""))
                );
            }
        }
        f
    }

    fn slot(&self) -> f64 {
        (W - LEFT) / self.n.max(1) as f64
    }

    fn x(&self, i: usize) -> f64 {
        LEFT + i as f64 * self.slot()
    }

    fn y(&self, v: f64) -> f64 {
        let plot = H - BOTTOM - TOP;
        H - BOTTOM - (v / self.top).clamp(0.0, 1.0) * plot
    }

    /// The tooltip (already escaped) of bucket `i`, over its whole slot, so a thin bar
    /// or a lone point is easy to point at.
    fn hit(&mut self, i: usize, tip: &str) {
        let _ = write!(
            self.svg,
            r#"<rect class="hit" x="{:.1}" y="0" width="{:.1}" height="{:.1}"><title>{tip}</title></rect>"#,
            self.x(i),
            self.slot(),
            H - BOTTOM
        );
    }

    fn end(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// Stacked bars (one stack per bucket), with marker series drawn as ticks above the
/// buckets where they are non-zero (degraded answers, fallbacks, refusals).
pub fn bars(
    label: &str,
    times: &[String],
    stacks: &[Series],
    marks: &[Series],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let n = times.len();
    let total = |i: usize| -> f64 {
        stacks
            .iter()
            .map(|s| s.values.get(i).copied().flatten().unwrap_or(0.0))
            .sum()
    };
    let max = (0..n).map(total).fold(0.0, f64::max);
    let mut f = Frame::new(label, n, nice_ceiling(max), fmt, times);
    let w = (f.slot() * 0.8).max(1.0);
    for (i, time) in times.iter().enumerate() {
        let mut base = 0.0;
        let x = f.x(i) + f.slot() * 0.1;
        let mut tip = esc(time);
        for s in stacks {
            let v = s.values.get(i).copied().flatten().unwrap_or(0.0);
            let _ = write!(tip, "\n{}: {}", esc(s.name), esc(&fmt(v)));
            if v <= 0.0 {
                continue;
            }
            let (y0, y1) = (f.y(base), f.y(base + v));
            let _ = write!(
                f.svg,
                r#"<rect class="{}" x="{x:.1}" y="{y1:.1}" width="{w:.1}" height="{:.1}"/>"#,
                s.class,
                (y0 - y1).max(0.5)
            );
            base += v;
        }
        let mut row = 0.0;
        for m in marks {
            let v = m.values.get(i).copied().flatten().unwrap_or(0.0);
            if v > 0.0 {
                let _ = write!(tip, "\n{}: {}", esc(m.name), v);
                let _ = write!(
                    f.svg,
                    r#"<rect class="mark {}" x="{x:.1}" y="{:.1}" width="{w:.1}" height="3"/>"#,
                    m.class,
                    1.0 + row * 4.0
                );
                row += 1.0;
            }
        }
        f.hit(i, &tip);
    }
    f.end()
}

/// Lines, one per series; a bucket without a value breaks the line.
pub fn lines(
    label: &str,
    times: &[String],
    series: &[Series],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let n = times.len();
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let mut f = Frame::new(label, n, nice_ceiling(max), fmt, times);
    for s in series {
        let mut d = String::new();
        let mut pen_down = false;
        for i in 0..n {
            match s.values.get(i).copied().flatten() {
                Some(v) => {
                    let x = f.x(i) + f.slot() / 2.0;
                    let _ = write!(
                        d,
                        "{}{x:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        f.y(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        // Points as dots too: a point between two gaps draws no line.
        for i in 0..n {
            if let Some(v) = s.values.get(i).copied().flatten() {
                let _ = write!(
                    f.svg,
                    r#"<circle class="{}" cx="{:.1}" cy="{:.1}" r="1.8"/>"#,
                    s.class,
                    f.x(i) + f.slot() / 2.0,
                    f.y(v)
                );
            }
        }
        if !d.is_empty() {
            let _ = write!(
                f.svg,
                r#"<path class="{}" d="{}"><title>{}</title></path>"#,
                s.class,
                d.trim_end(),
                esc(s.name)
            );
        }
    }
    for (i, time) in times.iter().enumerate() {
        let mut tip = esc(time);
        for s in series {
            let v = s.values.get(i).copied().flatten();
            let _ = write!(
                tip,
                "\n{}: {}",
                esc(s.name),
                v.map(|v| esc(&fmt(v))).unwrap_or_else(|| "–".into())
            );
        }
        f.hit(i, &tip);
    }
    f.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert!((nice_ceiling(0.0031) - 0.005).abs() < 1e-12);
    }

    #[test]
    fn bars_are_scaled_to_the_axis_and_carry_tooltips() {
        let svg = bars(
            "calls",
            &times(2),
            &[
                Series {
                    name: "ok",
                    class: "ok",
                    values: vec![Some(8.0), Some(0.0)],
                },
                Series {
                    name: "errors",
                    class: "err",
                    values: vec![Some(2.0), None],
                },
            ],
            &[Series {
                name: "degraded",
                class: "deg",
                values: vec![None, Some(1.0)],
            }],
            &|v| format!("{v}"),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // 10 calls fill the plot exactly (top = 10): the stack reaches y = TOP.
        assert!(svg.contains(&format!(r#"y="{TOP:.1}""#)), "{svg}");
        assert_eq!(
            svg.matches(r#"class="ok""#).count(),
            1,
            "a zero draws nothing"
        );
        assert!(svg.contains("<title>t0\nok: 8\nerrors: 2</title>"));
        assert!(svg.contains("<title>t1\nok: 0\nerrors: 0\ndegraded: 1</title>"));
        assert!(svg.contains(r#"class="mark deg""#));
    }

    #[test]
    fn text_is_escaped_and_gaps_break_lines() {
        let svg = lines(
            "<latency>",
            &["<a>".to_string(), "b".into(), "c".into()],
            &[Series {
                name: "p50 & co",
                class: "p50",
                values: vec![Some(1.0), None, Some(2.0)],
            }],
            &|v| format!("{v} ms"),
        );
        assert!(!svg.contains("<a>") && svg.contains("&lt;a&gt;"));
        assert!(svg.contains("p50 &amp; co"));
        let d = svg.split(" d=\"").nth(1).and_then(|d| d.split('"').next());
        let d = d.expect("a path");
        assert_eq!(d.matches('M').count(), 2, "the gap lifts the pen: {d}");
        assert!(!d.contains('L'), "{d}");
    }
}
