//! Charts for the dashboard: server-rendered SVG with the table of its figures under it, so a
//! screen reader (or anyone who wants the numbers) reads the same data the picture draws. No
//! script draws anything; the colours come from the stylesheet (`.series-N`), which keeps the
//! Content-Security-Policy free of inline styles.

use maud::{Markup, html};

/// The drawing area, in SVG units (the SVG scales to its container's width).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
/// Room for the axis labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 10.0;

/// One named series of a chart: a value (or none) per label of the chart.
pub(crate) struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// How a chart draws its series.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Connected points (a gap where a value is missing).
    Line,
    /// Bars side by side per label.
    Bars,
}

/// A chart: what it shows, its labels along the x axis and its series.
pub(crate) struct Chart {
    /// The `id` of its figure (tests and links find it by this).
    pub id: &'static str,
    pub title: String,
    /// What the y axis measures, with its unit.
    pub unit: &'static str,
    pub labels: Vec<String>,
    pub series: Vec<Series>,
    pub kind: Kind,
    /// The top of the y axis (the largest value when `None`).
    pub y_max: Option<f64>,
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

impl Chart {
    fn top(&self) -> f64 {
        let largest = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .fold(0.0_f64, |a, b| a.max(*b));
        let top = self.y_max.unwrap_or(largest).max(largest);
        if top > 0.0 { top } else { 1.0 }
    }

    fn x(&self, i: usize) -> f64 {
        let slots = self.labels.len().max(1) as f64;
        LEFT + (WIDTH - LEFT - RIGHT) * (i as f64 + 0.5) / slots
    }

    fn y(&self, value: f64) -> f64 {
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - value / self.top())
    }

    fn svg(&self) -> Markup {
        let top = self.top();
        let slots = self.labels.len().max(1);
        let slot_width = (WIDTH - LEFT - RIGHT) / slots as f64;
        // At most about eight labels along the axis.
        let label_every = slots.div_ceil(8).max(1);
        let bar_width = slot_width * 0.8 / self.series.len().max(1) as f64;
        html! {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby=(format!("{}-title", self.id)) focusable="false" {
                title id=(format!("{}-title", self.id)) { (self.title) }
                // Grid and y axis: 0, half and the top.
                @for fraction in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(self.y(top * fraction)) y2=(self.y(top * fraction)) {}
                    text.axis x=(LEFT - 4.0) y=(self.y(top * fraction) + 4.0) text-anchor="end" { (number(top * fraction)) }
                }
                @for (i, label) in self.labels.iter().enumerate() {
                    @if i % label_every == 0 {
                        text.axis x=(self.x(i)) y=(HEIGHT - 8.0) text-anchor="middle" { (label) }
                    }
                }
                @for (n, series) in self.series.iter().enumerate() {
                    @match self.kind {
                        Kind::Line => {
                            @for segment in segments(&series.values) {
                                polyline class=(format!("line series-{n}")) points=(
                                    segment.iter().map(|(i, v)| format!("{:.1},{:.1}", self.x(*i), self.y(*v))).collect::<Vec<_>>().join(" ")
                                ) {}
                            }
                            @for (i, value) in series.values.iter().enumerate() {
                                @if let Some(value) = value {
                                    circle class=(format!("dot series-{n}")) cx=(format!("{:.1}", self.x(i))) cy=(format!("{:.1}", self.y(*value))) r="2.5" {}
                                }
                            }
                        }
                        Kind::Bars => {
                            @for (i, value) in series.values.iter().enumerate() {
                                @if let Some(value) = value {
                                    rect class=(format!("bar series-{n}"))
                                        x=(format!("{:.1}", self.x(i) - slot_width * 0.4 + bar_width * n as f64))
                                        y=(format!("{:.1}", self.y(*value)))
                                        width=(format!("{:.1}", bar_width))
                                        height=(format!("{:.1}", (self.y(0.0) - self.y(*value)).max(0.0))) {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The chart and its table, as one figure.
    pub(crate) fn render(&self) -> Markup {
        let empty = self
            .series
            .iter()
            .all(|s| s.values.iter().all(Option::is_none));
        html! {
            figure.chart #(self.id) {
                figcaption {
                    (self.title) " " span.muted { "(" (self.unit) ")" }
                }
                @if empty {
                    p.muted { "No data yet." }
                } @else {
                    (self.svg())
                    ul.legend {
                        @for (n, series) in self.series.iter().enumerate() {
                            li { span class=(format!("swatch series-{n}")) aria-hidden="true" {} (series.name) }
                        }
                    }
                    details {
                        summary { "The figures" }
                        div.scroll {
                            table {
                                caption.sr-only { (self.title) }
                                thead { tr {
                                    th scope="col" { "" }
                                    @for series in &self.series { th scope="col" { (series.name) } }
                                } }
                                tbody {
                                    @for (i, label) in self.labels.iter().enumerate() {
                                        tr {
                                            th scope="row" { (label) }
                                            @for series in &self.series {
                                                td { (series.values.get(i).copied().flatten().map_or("–".to_owned(), number)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Runs of consecutive present values: a line breaks where a value is missing.
fn segments(values: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => run.push((i, *v)),
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_breaks_where_a_value_is_missing() {
        let runs = segments(&[Some(1.0), None, Some(2.0), Some(3.0), None]);
        assert_eq!(runs, vec![vec![(0, 1.0)], vec![(2, 2.0), (3, 3.0)]]);
    }

    #[test]
    fn every_value_is_in_the_table_and_the_picture_has_a_title() {
        let chart = Chart {
            id: "merges",
            title: "Merges per day".to_owned(),
            unit: "intents",
            labels: vec!["12-01".to_owned(), "12-02".to_owned()],
            series: vec![Series {
                name: "merged".to_owned(),
                values: vec![Some(3.0), Some(4.5)],
            }],
            kind: Kind::Bars,
            y_max: None,
        };
        let html = chart.render().into_string();
        assert!(
            html.contains("<title id=\"merges-title\">Merges per day</title>"),
            "{html}"
        );
        assert!(
            html.contains("<td>3</td>") && html.contains("<td>4.5</td>"),
            "{html}"
        );
        assert_eq!(html.matches("<rect").count(), 2, "{html}");
    }
}
