//! Inference strategies over the [`Generator`]: self-consistency (majority vote over N samples)
//! and iterative refinement (the model rereads its own answer), the paper's baselines for
//! EM-INF (`docs/method.md` §3).

use em_models::CausalLm;

use crate::error::{InferError, Result};
use crate::generator::{GenerateConfig, Generation, Generator};
use crate::processor::LogitsProcessor;

/// The outcome of [`self_consistency`].
#[derive(Debug, Clone, PartialEq)]
pub struct SelfConsistency {
    /// All N generations, in sampling order.
    pub samples: Vec<Generation>,
    /// The answer extracted from each sample (`None` where none could be extracted).
    pub answers: Vec<Option<String>>,
    /// Groups of equivalent answers, as indices into `samples`, largest first (ties in the order
    /// their first member was sampled).
    pub groups: Vec<Vec<usize>>,
    /// Index of the chosen sample (the first member of the winning group), `None` when no sample
    /// had an answer.
    pub chosen: Option<usize>,
}

impl SelfConsistency {
    /// The chosen answer.
    pub fn answer(&self) -> Option<&str> {
        self.chosen.and_then(|i| self.answers[i].as_deref())
    }
}

/// Self-consistency: samples `n` continuations of `prompt` in one batch (rows seeded from
/// `config.seed`), extracts an answer from each with `extract`, groups answers with the
/// caller's `equivalent` (an answer joins the first group whose first member it is equivalent
/// to), and picks from the largest group. Ties between equally large groups are broken by a
/// draw seeded with `config.seed`, so the choice is deterministic for a seed.
///
/// # Errors
/// [`InferError::InvalidConfig`] if `n` is 0; anything [`Generator::generate`] returns.
pub fn self_consistency<M: CausalLm + ?Sized>(
    generator: &Generator<'_, M>,
    prompt: &[u32],
    n: usize,
    config: &GenerateConfig,
    processor: &mut dyn LogitsProcessor,
    extract: impl Fn(&str) -> Option<String>,
    equivalent: impl Fn(&str, &str) -> bool,
) -> Result<SelfConsistency> {
    if n == 0 {
        return InferError::invalid("n", 0, "self-consistency needs at least one sample");
    }
    let prompts = vec![prompt.to_vec(); n];
    let samples = generator.generate(&prompts, config, processor, |_| {})?;
    let answers: Vec<Option<String>> = samples.iter().map(|g| extract(&g.text)).collect();
    let (groups, chosen) = vote(&answers, config.seed, equivalent);
    Ok(SelfConsistency {
        samples,
        answers,
        groups,
        chosen,
    })
}

/// Groups `answers` by `equivalent` and picks the first member of a largest group, breaking
/// ties with a draw seeded by `seed`. Returns the groups (largest first, stable) and the pick.
pub fn vote(
    answers: &[Option<String>],
    seed: u64,
    equivalent: impl Fn(&str, &str) -> bool,
) -> (Vec<Vec<usize>>, Option<usize>) {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let Some(answer) = answer else { continue };
        let home = groups.iter_mut().find(|g| {
            answers[g[0]]
                .as_deref()
                .is_some_and(|first| equivalent(first, answer))
        });
        match home {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    let best = groups.first().map_or(0, Vec::len);
    let tied = groups.iter().take_while(|g| g.len() == best).count();
    let chosen = match tied {
        0 => None,
        1 => Some(groups[0][0]),
        _ => {
            use rand::RngExt;
            let mut rng = em_core::rng::rng(seed);
            Some(groups[rng.random_range(0..tied)][0])
        }
    };
    (groups, chosen)
}

/// One round of [`refine`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefinementRound {
    /// The prompt text of this round.
    pub prompt: String,
    /// The model's continuation.
    pub generation: Generation,
}

/// Iterative refinement: round 1 generates from `prompt`; each later round's prompt is the
/// previous prompt + the previous completion + `"\n\n"` + `question` again. Returns every round
/// (the last one is the answer). All rounds use `config` (same seed).
///
/// # Errors
/// [`InferError::InvalidConfig`] if `rounds` is 0; [`InferError::PromptTooLong`] when a round's
/// prompt no longer fits the context; anything [`Generator::generate_text`] returns.
pub fn refine<M: CausalLm + ?Sized>(
    generator: &Generator<'_, M>,
    prompt: &str,
    question: &str,
    rounds: usize,
    config: &GenerateConfig,
    processor: &mut dyn LogitsProcessor,
) -> Result<Vec<RefinementRound>> {
    if rounds == 0 {
        return InferError::invalid("rounds", 0, "refinement needs at least one round");
    }
    let mut out: Vec<RefinementRound> = Vec::with_capacity(rounds);
    let mut current = prompt.to_string();
    for _ in 0..rounds {
        if let Some(previous) = out.last() {
            current = next_prompt(&previous.prompt, &previous.generation.text, question);
        }
        let generation = generator
            .generate_text(&[current.as_str()], config, processor, |_| {})?
            .remove(0);
        out.push(RefinementRound {
            prompt: current.clone(),
            generation,
        });
    }
    Ok(out)
}

/// The next refinement prompt: `prompt + completion + "\n\n" + question`.
pub fn next_prompt(prompt: &str, completion: &str, question: &str) -> String {
    format!("{prompt}{completion}\n\n{question}")
}
