//! Charts as SVG drawn on the server: no chart library, no JavaScript, nothing fetched.
//!
//! Every label goes through [`super::html::esc`], since labels (countries, protocols) come from
//! data that attackers influence.

use super::html::esc;
use std::fmt::Write;

const PALETTE: [&str; 8] = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6", "#64748b"];

fn nice_max(v: i64) -> i64 {
    if v <= 0 {
        return 1;
    }
    let mag = 10i64.pow((v as f64).log10().floor().max(0.0) as u32);
    for m in [1, 2, 5, 10] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10 * mag
}

fn short(v: i64) -> String {
    if v >= 1_000_000 {
        format!("{:.1}M", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{}k", v / 1000)
    } else {
        v.to_string()
    }
}

/// A timeline: one line per series over `labels` (x axis), with a y axis from 0.
pub fn timeline(title: &str, labels: &[String], series: &[(String, Vec<i64>)]) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 260.0, 60.0, 20.0, 30.0, 40.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = nice_max(series.iter().flat_map(|(_, v)| v.iter().copied()).max().unwrap_or(0));
    let n = labels.len().max(1);
    let x = |i: usize| left + if n > 1 { plot_w * i as f64 / (n - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: i64| top + plot_h - plot_h * v as f64 / max as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for k in 0..=4 {
        let v = max * k / 4;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#6b7280">{v}</text>"##,
            x2 = w - right,
            tx = left - 6.0,
            ty = yy + 4.0,
            v = short(v)
        );
    }
    let step = (n / 8).max(1);
    for (i, l) in labels.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            let anchor = if n > 1 && i == 0 {
                "start"
            } else if n > 1 && i + 1 == n {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="{anchor}" fill="#6b7280">{}</text>"##,
                x(i),
                h - bottom + 16.0,
                esc(l)
            );
        }
    }
    for (si, (name, values)) in series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        let pts: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        if si == 0 && !pts.is_empty() {
            let _ = write!(
                s,
                r#"<polygon points="{:.1},{:.1} {} {:.1},{:.1}" fill="{color}" fill-opacity="0.12"/>"#,
                x(0),
                y(0),
                pts.join(" "),
                x(values.len().saturating_sub(1)),
                y(0)
            );
        }
        let _ = write!(s, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, pts.join(" "));
        if values.len() == 1 {
            // A polyline of one point draws nothing (the first day of a sensor): draw the point.
            let _ =
                write!(s, r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"#, x(0), y(values[0]));
        }
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="8" width="10" height="10" fill="{color}"/><text x="{:.1}" y="17" font-size="12" fill="#111827">{}</text>"##,
            left + 140.0 * si as f64,
            left + 140.0 * si as f64 + 14.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars, one per (label, value), longest first as given.
pub fn bars(title: &str, rows: &[(String, i64)]) -> String {
    let row_h = 24.0;
    let (w, left, right, top) = (440.0, 110.0, 60.0, 8.0);
    let h = top * 2.0 + row_h * rows.len().max(1) as f64;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart bars" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    if rows.is_empty() {
        let _ = write!(s, r##"<text x="10" y="24" font-size="12" fill="#6b7280">no data in this range</text>"##);
    }
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let bw = (w - left - right) * *v as f64 / max as f64;
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ty:.1}" font-size="12" text-anchor="end" fill="#111827">{l}</text><rect x="{left}" y="{ry:.1}" width="{bw:.1}" height="{bh}" rx="3" fill="{color}"/><text x="{vx:.1}" y="{ty:.1}" font-size="12" fill="#374151">{v}</text>"##,
            lx = left - 8.0,
            ty = y + 16.0,
            l = esc(&label.chars().take(16).collect::<String>()),
            ry = y + 4.0,
            bh = row_h - 8.0,
            vx = left + bw + 6.0,
            v = v
        );
    }
    s.push_str("</svg>");
    s
}

/// Most series drawn in a stacked chart (the rest are summed into "other").
const MAX_STACKS: usize = 7;

/// Stacked bars: one bar per label (x axis), one colored segment per series, with a legend.
/// Every bucket gets its bar, so a single bucket is one visible bar, not an empty frame.
pub fn stacked(title: &str, labels: &[String], series: &[(String, Vec<i64>)]) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 280.0, 60.0, 20.0, 40.0, 40.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let n = labels.len().max(1);
    // The first series as given, the rest summed.
    let mut shown: Vec<(String, Vec<i64>)> = series.iter().take(MAX_STACKS).cloned().collect();
    if series.len() > MAX_STACKS {
        let mut other = vec![0; labels.len()];
        for (_, v) in &series[MAX_STACKS..] {
            for (i, x) in v.iter().enumerate() {
                if let Some(o) = other.get_mut(i) {
                    *o += x;
                }
            }
        }
        shown.push(("other".into(), other));
    }
    let totals: Vec<i64> =
        (0..labels.len()).map(|i| shown.iter().map(|(_, v)| v.get(i).copied().unwrap_or(0).max(0)).sum()).collect();
    let max = nice_max(totals.iter().copied().max().unwrap_or(0));
    let slot = plot_w / n as f64;
    let bar = (slot * 0.8).clamp(1.0, 80.0);
    let y = |v: i64| top + plot_h - plot_h * v as f64 / max as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart stacked" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for k in 0..=4 {
        let v = max * k / 4;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#6b7280">{v}</text>"##,
            x2 = w - right,
            tx = left - 6.0,
            ty = yy + 4.0,
            v = short(v)
        );
    }
    if labels.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{left}" y="{}" font-size="12" fill="#6b7280">no data in this range</text>"##,
            top + 20.0
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut base = 0i64;
        for (si, (name, v)) in shown.iter().enumerate() {
            let val = v.get(i).copied().unwrap_or(0).max(0);
            if val == 0 {
                continue;
            }
            let (y0, y1) = (y(base), y(base + val));
            let _ = write!(
                s,
                r#"<rect class="bar" x="{x:.1}" y="{y1:.1}" width="{bar:.1}" height="{hh:.1}" fill="{c}"><title>{l}: {t} {val}</title></rect>"#,
                hh = (y0 - y1).max(1.0),
                c = PALETTE[si % PALETTE.len()],
                l = esc(label),
                t = esc(name)
            );
            base += val;
        }
    }
    // Axis labels: at most about ten, always the first and the last.
    let step = n.div_ceil(10).max(1);
    for (i, l) in labels.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#6b7280">{}</text>"##,
                left + slot * (i as f64 + 0.5),
                h - bottom + 16.0,
                esc(l)
            );
        }
    }
    for (si, (name, _)) in shown.iter().enumerate() {
        let lx = left + 110.0 * si as f64;
        let _ = write!(
            s,
            r##"<rect x="{lx:.1}" y="8" width="10" height="10" fill="{c}"/><text x="{tx:.1}" y="17" font-size="12" fill="#111827">{}</text>"##,
            esc(&name.chars().take(14).collect::<String>()),
            c = PALETTE[si % PALETTE.len()],
            tx = lx + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Vertical bars (the field report's count plots): one column per (label, value) in the order
/// given, labels turned 90° below. With `log`, heights are log10 of the value (a value of 1 is
/// a sliver, 0 no bar) and the axis shows powers of ten, so one protocol with a million attempts
/// does not flatten the rest.
pub fn columns(title: &str, id: &str, rows: &[(String, i64)], log: bool) -> String {
    let (left, right, top, bottom, plot_h) = (56.0, 12.0, 14.0, 110.0, 200.0);
    let col_w = 26.0;
    let w = (left + right + col_w * rows.len().max(4) as f64).max(320.0);
    let h = top + plot_h + bottom;
    let maxv = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    // Log: 0..=k decades with 10^k >= max; linear: 0..=nice_max.
    let (top_value, scale): (f64, Box<dyn Fn(i64) -> f64>) = if log {
        let decades = ((maxv as f64).log10().ceil()).max(1.0);
        (decades, Box::new(move |v: i64| if v <= 0 { 0.0 } else { ((v as f64).log10() + 0.05).min(decades) }))
    } else {
        let m = nice_max(maxv) as f64;
        (m, Box::new(|v: i64| v.max(0) as f64))
    };
    let y = |f: f64| top + plot_h - plot_h * f / top_value;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart columns" id="{id}" role="img" aria-label="{t}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title),
        id = esc(id)
    );
    let ticks: Vec<(f64, String)> = if log {
        (0..=top_value as u32).map(|k| (f64::from(k), short(10i64.saturating_pow(k)))).collect()
    } else if top_value <= 4.0 {
        // Small counts (a few attackers per country): whole numbers only.
        (0..=top_value as i64).map(|k| (k as f64, k.to_string())).collect()
    } else {
        (0..=4).map(|k| (top_value * f64::from(k) / 4.0, short((top_value * f64::from(k) / 4.0) as i64))).collect()
    };
    for (f, label) in ticks {
        let yy = y(f);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#6b7280">{label}</text>"##,
            x2 = w - right,
            tx = left - 6.0,
            ty = yy + 4.0,
        );
    }
    if rows.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="12" fill="#6b7280">no data in this range</text>"##,
            left + 10.0,
            top + 20.0
        );
    }
    for (i, (label, v)) in rows.iter().enumerate() {
        let x = left + col_w * i as f64 + 4.0;
        let f = scale(*v);
        let yy = y(f);
        let color = PALETTE[i % PALETTE.len()];
        let lx = x + (col_w - 8.0) / 2.0 + 4.0;
        let ly = top + plot_h + 8.0;
        let _ = write!(
            s,
            r##"<rect class="col" x="{x:.1}" y="{yy:.1}" width="{cw:.1}" height="{bh:.1}" fill="{color}" data-label="{l}" data-value="{v}"><title>{l}: {v}</title></rect><text x="{lx:.1}" y="{ly:.1}" font-size="11" text-anchor="end" fill="#111827" transform="rotate(-90 {lx:.1} {ly:.1})">{ls}</text>"##,
            cw = col_w - 8.0,
            bh = top + plot_h - yy,
            l = esc(label),
            ls = esc(&label.chars().take(18).collect::<String>()),
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let s = bars("t", &[("<script>".into(), 3)]);
        assert!(!s.contains("<script>"));
        assert!(s.contains("&lt;script&gt;"));
        let s = timeline("t", &["a".into(), "b".into()], &[("<x>".into(), vec![1, 5])]);
        assert!(s.contains("&lt;x&gt;") && s.starts_with("<svg"));
        assert_eq!(nice_max(7), 10);
        // One bucket is one visible bar; labels and names are escaped.
        let s = stacked("t", &["<b>".into()], &[("ssh".into(), vec![3]), ("<i>".into(), vec![2])]);
        assert_eq!(s.matches(r#"<rect class="bar""#).count(), 2, "{s}");
        assert!(!s.contains("<b>") && !s.contains("<i>"));
        assert!(stacked("t", &[], &[]).contains("no data"));
        assert_eq!(nice_max(120), 200);
    }

    #[test]
    fn columns_escape_labels_and_log_scales_heights() {
        let s = columns("t", "c", &[("<x>".into(), 1000), ("b".into(), 10), ("z".into(), 0)], true);
        assert!(s.contains("&lt;x&gt;") && !s.contains("<x>"));
        let height = |label: &str| -> f64 {
            let at = s.find(&format!(r#"data-label="{label}""#)).unwrap();
            let rect = &s[s[..at].rfind("<rect").unwrap()..at];
            let h = rect.split("height=\"").nth(1).unwrap().split('"').next().unwrap();
            h.parse().unwrap()
        };
        // log10: 1000 is three decades, 10 one: a third of the height (plus the sliver).
        let (a, b) = (height("&lt;x&gt;"), height("b"));
        assert!((b / a - 1.05 / 3.0).abs() < 0.02, "{a} {b}");
        assert_eq!(height("z"), 0.0);
        let lin = columns("t", "c", &[("a".into(), 100), ("b".into(), 50)], false);
        assert!(lin.contains(r#"height="200.0" fill"#) && lin.contains(r#"height="100.0" fill"#), "{lin}");
    }
}
