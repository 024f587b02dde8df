//! Figures as printed: free-form lines of measured values, then one verdict per ratio.

/// What a ratio must reach.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

/// One ratio of a figure and its verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What the ratio compares.
    pub label: String,
    /// The measured ratio.
    pub ratio: f64,
    /// The goal for it.
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
            "ratio {:<44} {:>7.3}   goal {:<7} {}",
            self.label,
            self.ratio,
            goal,
            if self.pass() { "PASS" } else { "MISS" }
        )
    }
}

/// One figure of the issue.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    /// Number and title, e.g. `1. Ingest efficiency`.
    pub title: String,
    /// Measured values, one per line, printed as they are.
    pub lines: Vec<String>,
    /// Ratios with goals (none for the memory and scaling figures).
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
            label: label.to_owned(),
            ratio,
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
