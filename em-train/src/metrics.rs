//! `out/metrics.jsonl` — one JSON line per optimiser step (plus a step-0 line with the initial
//! validation) — and `out/metrics.svg`, drawn from it with plotters' SVG backend (no system
//! fonts needed), rewritten at each checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, io};

/// The metrics file's name in the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The plot's name in the output directory.
pub const PLOT_FILE: &str = "metrics.svg";

/// One line of `metrics.jsonl`. Names are fixed (users grep and plot them); a field that does
/// not apply is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimiser step (0: before training).
    pub step: usize,
    /// The loss that was minimised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Mean token entropy of the batch (Σ H·mask / Σ mask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Mean response length in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_len: Option<f64>,
    /// Global gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Learning rate of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Σ mask: response tokens scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// `tokens` / `time_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Wall time of the step (rollout, update; not validation or checkpointing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_s: Option<f64>,
    /// Of `time_s`: sampling the responses (online runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_time_s: Option<f64>,
    /// Of `time_s`: forward, backward and the optimiser step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_time_s: Option<f64>,
    /// Mean token k3 KL to the initial model (runs with a KL term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// RL: the rollout this optimiser step belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<usize>,
    /// RL: mean reward of the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_mean: Option<f64>,
    /// RL: standard deviation of the rollout's rewards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_std: Option<f64>,
    /// RL: mean |advantage| over the rollout's responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_abs_mean: Option<f64>,
    /// RL: groups of the rollout with a non-zero advantage (not all rewards equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonzero_advantage_groups: Option<usize>,
    /// RL: the policy-gradient (PPO-clip) part of the loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_loss: Option<f64>,
    /// RL: share of tokens where the clipped term was the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_fraction: Option<f64>,
    /// RL: token mean of π/π_old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_mean: Option<f64>,
    /// Held-out accuracy (greedy), when validated at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Mean token entropy of the held-out greedy answers, when validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_entropy: Option<f64>,
    /// Mean length of the held-out greedy answers, when validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_response_len: Option<f64>,
}

/// The metrics file of a run.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// The log in `out` (not created until the first line).
    pub fn new(out: &Path) -> Self {
        Self {
            path: out.join(METRICS_FILE),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line so far (a half-written last line, from a kill, is ignored).
    ///
    /// # Errors
    /// I/O errors; [`TrainError::Data`] for a malformed line that is not the last.
    pub fn read(&self) -> Result<Vec<StepMetrics>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&self.path).map_err(io(&self.path))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(m) => out.push(m),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(e) => {
                    return Err(TrainError::Data {
                        path: self.path.clone(),
                        line: i + 1,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Keeps the lines of steps `≤ step` (a resume from the checkpoint of `step`), atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn truncate_to(&self, step: usize) -> Result<()> {
        let kept: Vec<StepMetrics> = self
            .read()?
            .into_iter()
            .filter(|m| m.step <= step)
            .collect();
        let mut text = String::new();
        for m in &kept {
            text.push_str(&self.line(m)?);
            text.push('\n');
        }
        crate::checkpoint::write_atomic(&self.path, text.as_bytes())
    }

    fn line(&self, metrics: &StepMetrics) -> Result<String> {
        serde_json::to_string(metrics).map_err(|source| TrainError::Json {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends one line and flushes it.
    ///
    /// # Errors
    /// I/O errors.
    pub fn append(&self, metrics: &StepMetrics) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        let line = self.line(metrics)?;
        writeln!(file, "{line}").map_err(io(&self.path))?;
        file.flush().map_err(io(&self.path))
    }
}

/// The panels of the plot: title and how to read the value from a line.
type Series = (&'static str, fn(&StepMetrics) -> Option<f64>);

/// The plotted series, EM-FT's and (when present) EM-RL's.
pub const SERIES: [Series; 8] = [
    ("loss", |m| m.loss),
    ("reward (mean over the rollout)", |m| m.reward_mean),
    ("entropy (nats/token)", |m| m.entropy),
    ("response length (tokens)", |m| m.response_len),
    ("grad norm (before clipping)", |m| m.grad_norm),
    ("validation accuracy", |m| m.val_accuracy),
    ("KL to the initial model", |m| m.kl),
    ("validation entropy", |m| m.val_entropy),
];

/// Draws `metrics` as an SVG document: one panel per series of [`SERIES`] that has at least one
/// value, against the step.
///
/// # Errors
/// [`TrainError::Plot`] when plotters fails.
pub fn plot_svg(metrics: &[StepMetrics], path_for_errors: &Path) -> Result<String> {
    use plotters::prelude::*;
    let panels: Vec<(&str, Vec<(f64, f64)>)> = SERIES
        .iter()
        .map(|(title, get)| {
            let points: Vec<(f64, f64)> = metrics
                .iter()
                .filter_map(|m| get(m).filter(|v| v.is_finite()).map(|v| (m.step as f64, v)))
                .collect();
            (*title, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let err = |e: String| TrainError::Plot {
        path: path_for_errors.to_path_buf(),
        message: e,
    };
    let mut svg = String::new();
    {
        let height = 220 * panels.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (720, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        let max_step = metrics.iter().map(|m| m.step).max().unwrap_or(1).max(1) as f64;
        for ((title, points), area) in panels.iter().zip(areas) {
            let (lo, hi) = points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| {
                    (lo.min(v), hi.max(v))
                });
            let pad = ((hi - lo).abs() * 0.1).max(1e-9);
            let mut chart = ChartBuilder::on(&area)
                .caption(*title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..max_step, (lo - pad)..(hi + pad))
                .map_err(|e| err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("step")
                .draw()
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 2, BLUE.filled())),
                )
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Rewrites `out/metrics.svg` from `out/metrics.jsonl`, atomically.
///
/// # Errors
/// As [`MetricsLog::read`] and [`plot_svg`].
pub fn write_plot(out: &Path) -> Result<()> {
    let metrics = MetricsLog::new(out).read()?;
    let path = out.join(PLOT_FILE);
    let svg = plot_svg(&metrics, &path)?;
    crate::checkpoint::write_atomic(&path, svg.as_bytes())
}
