//! A small Prometheus registry: counters, gauges and histograms with fixed buckets, each a
//! family of series keyed by a fixed number of label values, rendered in the text exposition
//! format 0.0.4.
//!
//! Written here rather than taken from a crate because nmo needs little of one: a dozen series
//! known at compile time, label values that are bounded by construction (controller names,
//! error categories, phases) or that follow objects the operator caches (window names), and
//! one text rendering. Series that follow cached objects are [`Sourced`]: computed from the
//! cache at scrape time, so a deleted object's series disappears with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The `Content-Type` of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that renders itself in the text exposition format.
pub trait Encode: Send + Sync {
    /// Append `# HELP`, `# TYPE` and the sample lines to `out`.
    fn encode(&self, out: &mut String);
}

/// Name, help text and label names of a family.
#[derive(Clone, Copy, Debug)]
pub struct Desc<const N: usize> {
    /// The metric name, `nmo_...`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Label names, in the order label values are given.
    pub labels: [&'static str; N],
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a HELP text: backslash and newline.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escape a label value: backslash, double quote and newline.
pub fn escape_label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}` for the given names and values plus an optional extra pair (`le`); empty
/// when there is no label at all.
fn label_set(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label_value(v)))
        .collect();
    if let Some((n, v)) = extra {
        pairs.push(format!("{n}=\"{}\"", escape_label_value(v)));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A sample value as Prometheus writes it: `+Inf`, `-Inf`, `NaN` or a decimal number.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

fn key<const N: usize>(values: [&str; N]) -> [String; N] {
    values.map(str::to_string)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A family of counters: monotonically increasing integers.
pub struct Counter<const N: usize> {
    desc: Desc<N>,
    series: Mutex<BTreeMap<[String; N], u64>>,
}

impl<const N: usize> Counter<N> {
    /// An empty family. A family without labels shows its single series (0) from the start.
    pub fn new(desc: Desc<N>) -> Self {
        let mut series = BTreeMap::new();
        if N == 0 {
            series.insert(key([""; N]), 0);
        }
        Counter {
            desc,
            series: Mutex::new(series),
        }
    }

    /// Add one to the series `labels`.
    pub fn inc(&self, labels: [&str; N]) {
        self.inc_by(labels, 1);
    }

    /// Add `n` to the series `labels`.
    pub fn inc_by(&self, labels: [&str; N], n: u64) {
        let mut series = lock(&self.series);
        let v = series.entry(key(labels)).or_default();
        *v = v.saturating_add(n);
    }

    /// Show the series `labels` (at 0) even before it is first incremented.
    pub fn touch(&self, labels: [&str; N]) {
        lock(&self.series).entry(key(labels)).or_default();
    }

    /// The value of the series `labels` (0 when absent).
    pub fn get(&self, labels: [&str; N]) -> u64 {
        lock(&self.series).get(&key(labels)).copied().unwrap_or(0)
    }
}

impl<const N: usize> Encode for Counter<N> {
    fn encode(&self, out: &mut String) {
        header(out, self.desc.name, self.desc.help, "counter");
        for (labels, v) in lock(&self.series).iter() {
            let _ = writeln!(
                out,
                "{}{} {v}",
                self.desc.name,
                label_set(&self.desc.labels, labels, None)
            );
        }
    }
}

/// A family of gauges: values that go up and down, set by the code that knows them.
pub struct Gauge<const N: usize> {
    desc: Desc<N>,
    series: Mutex<BTreeMap<[String; N], f64>>,
}

impl<const N: usize> Gauge<N> {
    /// An empty family. A family without labels shows its single series (0) from the start.
    pub fn new(desc: Desc<N>) -> Self {
        let mut series = BTreeMap::new();
        if N == 0 {
            series.insert(key([""; N]), 0.0);
        }
        Gauge {
            desc,
            series: Mutex::new(series),
        }
    }

    /// Set the series `labels` to `v`.
    pub fn set(&self, labels: [&str; N], v: f64) {
        lock(&self.series).insert(key(labels), v);
    }

    /// The value of the series `labels`, if it exists.
    pub fn get(&self, labels: [&str; N]) -> Option<f64> {
        lock(&self.series).get(&key(labels)).copied()
    }

    /// Drop the series `labels`.
    pub fn remove(&self, labels: [&str; N]) {
        lock(&self.series).remove(&key(labels));
    }
}

impl<const N: usize> Encode for Gauge<N> {
    fn encode(&self, out: &mut String) {
        header(out, self.desc.name, self.desc.help, "gauge");
        for (labels, v) in lock(&self.series).iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.desc.name,
                label_set(&self.desc.labels, labels, None),
                format_value(*v)
            );
        }
    }
}

/// The series of a [`Sourced`] gauge, as its source computes them.
pub type Samples<const N: usize> = Vec<([String; N], f64)>;

type Source<const N: usize> = Box<dyn Fn() -> Samples<N> + Send + Sync>;

/// A family of gauges computed at scrape time by a source, typically from a controller's cache.
/// Without a source (the controller is not running) the family has no series.
pub struct Sourced<const N: usize> {
    desc: Desc<N>,
    source: Mutex<Option<Source<N>>>,
}

impl<const N: usize> Sourced<N> {
    /// A family without a source yet.
    pub fn new(desc: Desc<N>) -> Self {
        Sourced {
            desc,
            source: Mutex::new(None),
        }
    }

    /// Compute the series with `source` from now on.
    pub fn set_source(&self, source: impl Fn() -> Samples<N> + Send + Sync + 'static) {
        *lock(&self.source) = Some(Box::new(source));
    }

    /// Forget the source: the family has no series.
    pub fn clear_source(&self) {
        *lock(&self.source) = None;
    }

    /// The series now, sorted by labels.
    pub fn samples(&self) -> Samples<N> {
        let mut samples = lock(&self.source).as_ref().map(|f| f()).unwrap_or_default();
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        samples
    }
}

impl<const N: usize> Encode for Sourced<N> {
    fn encode(&self, out: &mut String) {
        header(out, self.desc.name, self.desc.help, "gauge");
        for (labels, v) in self.samples() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.desc.name,
                label_set(&self.desc.labels, &labels, None),
                format_value(v)
            );
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Buckets {
    /// Observations per bucket (not cumulative); one more than the bounds, for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

/// A family of histograms with fixed upper bounds.
pub struct Histogram<const N: usize> {
    desc: Desc<N>,
    bounds: &'static [f64],
    series: Mutex<BTreeMap<[String; N], Buckets>>,
}

impl<const N: usize> Histogram<N> {
    /// An empty family with the given bucket upper bounds (increasing; `+Inf` is implied). A
    /// family without labels shows its single series (all zero) from the start.
    pub fn new(desc: Desc<N>, bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds increase");
        let h = Histogram {
            desc,
            bounds,
            series: Mutex::new(BTreeMap::new()),
        };
        if N == 0 {
            h.touch([""; N]);
        }
        h
    }

    fn empty(&self) -> Buckets {
        Buckets {
            counts: vec![0; self.bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Show the series `labels` (all zero) even before its first observation.
    pub fn touch(&self, labels: [&str; N]) {
        let empty = self.empty();
        lock(&self.series).entry(key(labels)).or_insert(empty);
    }

    /// Record `v` in the series `labels`.
    pub fn observe(&self, labels: [&str; N], v: f64) {
        let empty = self.empty();
        let mut series = lock(&self.series);
        let b = series.entry(key(labels)).or_insert(empty);
        let i = self
            .bounds
            .iter()
            .position(|bound| v <= *bound)
            .unwrap_or(self.bounds.len());
        b.counts[i] += 1;
        b.sum += v;
    }

    /// How many observations the series `labels` has.
    pub fn count(&self, labels: [&str; N]) -> u64 {
        lock(&self.series)
            .get(&key(labels))
            .map(|b| b.counts.iter().sum())
            .unwrap_or(0)
    }

    /// The sum of the observations of the series `labels`.
    pub fn sum(&self, labels: [&str; N]) -> f64 {
        lock(&self.series)
            .get(&key(labels))
            .map(|b| b.sum)
            .unwrap_or(0.0)
    }
}

impl<const N: usize> Encode for Histogram<N> {
    fn encode(&self, out: &mut String) {
        let name = self.desc.name;
        let names = &self.desc.labels;
        header(out, name, self.desc.help, "histogram");
        for (labels, b) in lock(&self.series).iter() {
            let mut cumulative = 0;
            for (i, count) in b.counts.iter().enumerate() {
                cumulative += count;
                let le = self
                    .bounds
                    .get(i)
                    .map(|v| format_value(*v))
                    .unwrap_or_else(|| "+Inf".to_string());
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    label_set(names, labels, Some(("le", &le)))
                );
            }
            let set = label_set(names, labels, None);
            let _ = writeln!(out, "{name}_sum{set} {}", format_value(b.sum));
            let _ = writeln!(out, "{name}_count{set} {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(e: &dyn Encode) -> String {
        let mut out = String::new();
        e.encode(&mut out);
        out
    }

    const D0: Desc<0> = Desc {
        name: "nmo_things_total",
        help: "Things.",
        labels: [],
    };
    const D1: Desc<1> = Desc {
        name: "nmo_x",
        help: "X by kind.",
        labels: ["kind"],
    };

    #[test]
    fn an_unlabelled_counter_shows_zero_from_the_start() {
        let c = Counter::new(D0);
        assert_eq!(
            render(&c),
            "# HELP nmo_things_total Things.\n# TYPE nmo_things_total counter\nnmo_things_total 0\n"
        );
        c.inc([]);
        c.inc_by([], 2);
        assert!(render(&c).ends_with("nmo_things_total 3\n"));
    }

    #[test]
    fn labelled_series_appear_when_first_used_and_are_sorted() {
        let c = Counter::new(D1);
        assert_eq!(render(&c).lines().count(), 2, "headers only");
        c.inc(["b"]);
        c.inc(["a"]);
        c.touch(["c"]);
        let text = render(&c);
        let samples: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            samples,
            [
                "nmo_x{kind=\"a\"} 1",
                "nmo_x{kind=\"b\"} 1",
                "nmo_x{kind=\"c\"} 0"
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let g = Gauge::new(D1);
        g.set(["a\"b\\c\nd"], 1.5);
        assert!(
            render(&g).contains("nmo_x{kind=\"a\\\"b\\\\c\\nd\"} 1.5\n"),
            "{}",
            render(&g)
        );
    }

    #[test]
    fn gauges_are_set_and_removed() {
        let g = Gauge::new(D1);
        g.set(["a"], 1.0);
        g.set(["a"], 0.0);
        assert_eq!(g.get(["a"]), Some(0.0));
        g.remove(["a"]);
        assert_eq!(g.get(["a"]), None);
        assert!(!render(&g).contains("nmo_x{"));
    }

    #[test]
    fn values_are_written_as_prometheus_reads_them() {
        let table = [
            (0.0, "0"),
            (1.0, "1"),
            (0.005, "0.005"),
            (2.5, "2.5"),
            (1e-7, "0.0000001"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, text) in table {
            assert_eq!(format_value(v), text, "{v}");
        }
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let h = Histogram::new(
            Desc {
                name: "nmo_d_seconds",
                help: "D.",
                labels: ["c"],
            },
            &[0.1, 1.0],
        );
        h.observe(["x"], 0.05);
        h.observe(["x"], 0.1); // on the bound: in that bucket (le means <=)
        h.observe(["x"], 0.5);
        h.observe(["x"], 7.0);
        assert_eq!(
            render(&h),
            "# HELP nmo_d_seconds D.\n# TYPE nmo_d_seconds histogram\n\
             nmo_d_seconds_bucket{c=\"x\",le=\"0.1\"} 2\n\
             nmo_d_seconds_bucket{c=\"x\",le=\"1\"} 3\n\
             nmo_d_seconds_bucket{c=\"x\",le=\"+Inf\"} 4\n\
             nmo_d_seconds_sum{c=\"x\"} 7.65\n\
             nmo_d_seconds_count{c=\"x\"} 4\n"
        );
        assert_eq!(h.count(["x"]), 4);
        assert_eq!(h.count(["y"]), 0);
    }

    #[test]
    fn an_unlabelled_histogram_shows_empty_buckets_from_the_start() {
        let h = Histogram::new(
            Desc {
                name: "nmo_h",
                help: "H.",
                labels: [],
            },
            &[1.0],
        );
        assert_eq!(
            render(&h).lines().skip(2).collect::<Vec<_>>(),
            [
                "nmo_h_bucket{le=\"1\"} 0",
                "nmo_h_bucket{le=\"+Inf\"} 0",
                "nmo_h_sum 0",
                "nmo_h_count 0"
            ]
        );
    }

    #[test]
    fn a_sourced_gauge_shows_what_its_source_has_now_and_nothing_without_one() {
        let g = Sourced::new(D1);
        assert_eq!(render(&g).lines().count(), 2);
        let names = std::sync::Arc::new(Mutex::new(vec!["w2", "w1"]));
        let from = names.clone();
        g.set_source(move || lock(&from).iter().map(|n| ([n.to_string()], 1.0)).collect());
        let text = render(&g);
        assert_eq!(
            text.lines().skip(2).collect::<Vec<_>>(),
            ["nmo_x{kind=\"w1\"} 1", "nmo_x{kind=\"w2\"} 1"]
        );
        lock(&names).retain(|n| *n != "w1");
        assert_eq!(
            render(&g).lines().skip(2).collect::<Vec<_>>(),
            ["nmo_x{kind=\"w2\"} 1"],
            "a series whose object is gone disappears"
        );
        g.clear_source();
        assert_eq!(render(&g).lines().count(), 2);
    }
}
