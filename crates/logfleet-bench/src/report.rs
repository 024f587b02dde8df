//! Figures as printed: free-form lines of measured values, then one verdict per ratio.

/// What a ratio must reach.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

/// One ratio (or absolute value) of a figure and its verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `ratio`, or `value` for a figure whose goal is an absolute amount (bytes, µs).
    pub kind: &'static str,
    /// What the ratio compares.
    pub label: String,
    /// The measured ratio.
    pub ratio: f64,
    /// The goal for it, if any.
    pub goal: Goal,
}

impl Verdict {
    pub fn pass(&self) -> bool {
        match self.goal {
            Goal::AtLeast(g) => self.ratio >= g,
            Goal::AtMost(g) => self.ratio <= g,
        }
    }

    pub fn line(&self) -> String {
        let goal = match self.goal {
            Goal::AtLeast(g) => format!(">= {g}"),
            Goal::AtMost(g) => format!("<= {g}"),
        };
        format!(
            "{} {:<44} {:>7.3}   goal {:<7} {}",
            self.kind,
            self.label,
            self.ratio,
            goal,
            if self.pass() { "PASS" } else { "MISS" }
        )
    }
}

/// One figure of the report.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    /// Number and title, e.g. `1. Ingest efficiency`.
    pub title: String,
    /// Measured values, one per line, printed as they are.
    pub lines: Vec<String>,
    /// Ratios and values with goals (none for the memory, scaling and sweep figures).
    pub verdicts: Vec<Verdict>,
}

impl Figure {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            ..Default::default()
        }
    }

    pub fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }

    pub fn verdict(&mut self, label: &str, ratio: f64, goal: Goal) {
        self.verdicts.push(Verdict {
            kind: "ratio",
            label: label.to_owned(),
            ratio,
            goal,
        });
    }

    /// A verdict on an absolute value (its unit in the label), printed as `value ...`.
    pub fn value_verdict(&mut self, label: &str, value: f64, goal: Goal) {
        self.verdicts.push(Verdict {
            kind: "value",
            label: label.to_owned(),
            ratio: value,
            goal,
        });
    }

    pub fn print(&self) {
        println!("\n== {} ==", self.title);
        for l in &self.lines {
            println!("  {l}");
        }
        for v in &self.verdicts {
            println!("  {}", v.line());
        }
    }
}
