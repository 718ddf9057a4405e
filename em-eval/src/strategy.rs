//! How answers are produced: the decoding strategies the paper compares.

use em_infer::{AdaptiveTemperatureConfig, EmInfConfig};

use crate::{EvalError, Result};

/// How answers are produced. Serialised (in a run's manifest) with its whole configuration, e.g.
/// `{"strategy": "em_inf", "threshold": 0.3, "kl_weight": 0.05, ...}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy")]
pub enum Strategy {
    /// One sample at the options' temperature.
    Sampling,
    /// Greedy decoding.
    Greedy,
    /// EM-INF in front of the sampler.
    EmInf(EmInfConfig),
    /// Adaptive temperature in front of the sampler.
    AdaptiveTemperature(AdaptiveTemperatureConfig),
    /// `n` samples, majority answer (math only).
    SelfConsistency {
        /// Samples per problem.
        n: usize,
    },
    /// `rounds` rounds of iterative refinement; the last round's answer counts.
    Refinement {
        /// Rounds.
        rounds: usize,
    },
}

impl Strategy {
    /// The name used in file names and reports: `sampling`, `greedy`, `em-inf`,
    /// `adaptive-temperature`, `self-consistency-N`, `refinement-N`.
    pub fn name(&self) -> String {
        match self {
            Strategy::Sampling => "sampling".into(),
            Strategy::Greedy => "greedy".into(),
            Strategy::EmInf(_) => "em-inf".into(),
            Strategy::AdaptiveTemperature(_) => "adaptive-temperature".into(),
            Strategy::SelfConsistency { n } => format!("self-consistency-{n}"),
            Strategy::Refinement { rounds } => format!("refinement-{rounds}"),
        }
    }

    /// Parses a name: the forms of [`Strategy::name`], with the paper's defaults for the
    /// unnumbered `self-consistency` (4) and `refinement` (3), and the default EM-INF and
    /// adaptive-temperature configs.
    ///
    /// # Errors
    /// [`EvalError::Strategy`] for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        let numbered = |prefix: &str, default: usize| -> Option<usize> {
            let rest = name.strip_prefix(prefix)?;
            if rest.is_empty() {
                return Some(default);
            }
            rest.strip_prefix('-')?.parse().ok().filter(|n| *n > 0)
        };
        Ok(match name {
            "sampling" => Strategy::Sampling,
            "greedy" => Strategy::Greedy,
            "em-inf" => Strategy::EmInf(EmInfConfig::default()),
            "adaptive-temperature" => {
                Strategy::AdaptiveTemperature(AdaptiveTemperatureConfig::default())
            }
            _ => {
                if let Some(n) = numbered("self-consistency", 4) {
                    Strategy::SelfConsistency { n }
                } else if let Some(rounds) = numbered("refinement", 3) {
                    Strategy::Refinement { rounds }
                } else {
                    return Err(EvalError::Strategy(name.to_string()));
                }
            }
        })
    }
}
