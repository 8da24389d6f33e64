//! The pod-to-pod connectivity matrix: who can ping whom.
//!
//! Owns: the matrix value, its table for people, its JSON, and the matrix
//! the example policies (examples/lab/policies.yaml) should produce, so
//! `up` can say whether what it measured is what the policy means.
//!
//! Must never: ping (the shell probes and fills the matrix in).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::plan::PodPlan;

/// `cells[from][to]`: `Some(true)` answered, `Some(false)` did not,
/// `None` not probed (a pod to itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    /// `NAMESPACE/NAME` of each pod, rows and columns in this order.
    pub pods: Vec<String>,
    pub cells: Vec<Vec<Option<bool>>>,
}

impl Matrix {
    /// A matrix over `pods` with each cell from `f(from, to)`; the
    /// diagonal is `None`.
    pub fn from_fn(pods: Vec<String>, mut f: impl FnMut(usize, usize) -> bool) -> Matrix {
        let n = pods.len();
        let cells = (0..n)
            .map(|i| (0..n).map(|j| (i != j).then(|| f(i, j))).collect())
            .collect();
        Matrix { pods, cells }
    }

    pub fn get(&self, from: usize, to: usize) -> Option<bool> {
        self.cells.get(from)?.get(to).copied().flatten()
    }

    /// Whether every probed pair answered.
    pub fn all_reachable(&self) -> bool {
        self.cells.iter().flatten().all(|c| *c != Some(false))
    }

    /// Pairs that answered / were probed.
    pub fn counts(&self) -> (usize, usize) {
        let probed = self.cells.iter().flatten().filter(|c| c.is_some()).count();
        let ok = self
            .cells
            .iter()
            .flatten()
            .filter(|c| **c == Some(true))
            .count();
        (ok, probed)
    }

    /// The cells that differ from `expected`, one line each; `None` when
    /// they agree.
    pub fn diff(&self, expected: &Matrix) -> Option<String> {
        let mut out = String::new();
        for (i, from) in self.pods.iter().enumerate() {
            for (j, to) in self.pods.iter().enumerate() {
                let (got, want) = (self.get(i, j), expected.get(i, j));
                if got != want {
                    let word = |c: Option<bool>| match c {
                        Some(true) => "reachable",
                        Some(false) => "blocked",
                        None => "not probed",
                    };
                    let _ = writeln!(
                        out,
                        "{from} -> {to}: {} (expected {})",
                        word(got),
                        word(want)
                    );
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The table: one row per source pod, one column per destination
    /// (numbered, with the numbers in the row labels), `ok` for an answer,
    /// `--` for none, `.` for the pod itself.
    pub fn to_table(&self) -> String {
        let width = self.pods.iter().map(String::len).max().unwrap_or(0) + 5;
        let mut out = String::new();
        let _ = write!(out, "{:width$}", "from \\ to");
        for j in 0..self.pods.len() {
            let _ = write!(out, "{:>4}", j + 1);
        }
        out.push('\n');
        for (i, pod) in self.pods.iter().enumerate() {
            let _ = write!(out, "{:width$}", format!("{:>2} {pod}", i + 1));
            for j in 0..self.pods.len() {
                let cell = match self.get(i, j) {
                    Some(true) => "ok",
                    Some(false) => "--",
                    None => ".",
                };
                let _ = write!(out, "{cell:>4}");
            }
            out.push('\n');
        }
        let (ok, probed) = self.counts();
        let _ = writeln!(out, "{ok}/{probed} pairs reachable");
        out
    }
}

/// What the example policies allow: anything, except into `backend`,
/// where only `frontend` pods labelled `app: web` may go.
pub fn example_policy_allows(from: &PodPlan, to: &PodPlan) -> bool {
    to.namespace != "backend"
        || (from.namespace == "frontend"
            && from.labels.get("app").map(String::as_str) == Some("web"))
}

/// The matrix the example policies should produce over `pods`.
pub fn expected_with_example_policy(pods: &[PodPlan]) -> Matrix {
    Matrix::from_fn(pods.iter().map(PodPlan::id).collect(), |i, j| {
        match (pods.get(i), pods.get(j)) {
            (Some(a), Some(b)) => example_policy_allows(a, b),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::plan::{LabOptions, Plan};
    use super::*;

    #[test]
    fn table_and_expectation() {
        let plan = Plan::new(&LabOptions {
            nodes: 2,
            ..Default::default()
        });
        let open = Matrix::from_fn(plan.pods.iter().map(PodPlan::id).collect(), |_, _| true);
        assert!(open.all_reachable());
        assert_eq!(open.counts(), (12, 12));
        let want = expected_with_example_policy(&plan.pods);
        let table = want.to_table();
        let expected = "\
from \\ to              1   2   3   4
 1 frontend/web-n1     .  ok  ok  ok
 2 backend/db-n1      ok   .  ok  --
 3 frontend/web-n2    ok  ok   .  ok
 4 backend/db-n2      ok  --  ok   .
10/12 pairs reachable
";
        assert_eq!(table, expected, "\n{table}");
        let d = open.diff(&want).unwrap();
        assert_eq!(
            d,
            "backend/db-n1 -> backend/db-n2: reachable (expected blocked)\n\
             backend/db-n2 -> backend/db-n1: reachable (expected blocked)\n"
        );
        assert_eq!(want.diff(&want), None);
    }
}
