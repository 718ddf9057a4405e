//! What generation hands out ([`Generation`], [`StopReason`], the streamed [`TokenEvent`]) and
//! a row while it is generated: its [`Generation`] so far, streaming detokenisation (the text
//! each new token completes) and the stop rules (EOS, stop strings, the row's token limit).

use em_models::Tokenizer;

use crate::error::Result;
use crate::sampling::DrawnRow;

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It produced an EOS token.
    Eos,
    /// Its text reached this stop string.
    StopString(String),
    /// It produced `max_new_tokens` tokens.
    MaxNewTokens,
    /// Prompt + output filled the model's context (`max_position_embeddings`).
    ContextFull,
}

/// One row's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Generated token ids (an EOS that ended the row included).
    pub tokens: Vec<u32>,
    /// Their text, special tokens skipped, cut before a stop string.
    pub text: String,
    /// Why the row stopped.
    pub stop: StopReason,
    /// Per step: log-prob of the token under the distribution it was drawn from.
    pub log_probs: Vec<f64>,
    /// Per step: entropy (nats) of the distribution the token was drawn from (after the
    /// processors, temperature and filters; for greedy decoding, at temperature 1).
    pub entropies: Vec<f64>,
    /// Per step: entropy of the model's own next-token distribution, before any processor.
    pub model_entropies: Vec<f64>,
}

impl Generation {
    /// Mean of [`Generation::entropies`] (0 for no tokens).
    pub fn mean_entropy(&self) -> f64 {
        mean(&self.entropies)
    }

    /// Mean of [`Generation::model_entropies`] (0 for no tokens).
    pub fn mean_model_entropy(&self) -> f64 {
        mean(&self.model_entropies)
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// What the streaming callback sees for every generated token.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    /// The row (index into the prompts).
    pub row: usize,
    /// The decoding step (0 = first new token).
    pub step: usize,
    /// The token id.
    pub token: u32,
    /// Text that became complete with this token (may be empty while a multi-byte character or
    /// a merge is pending; concatenating a row's deltas gives its streamed text).
    pub text: &'a str,
    /// Its log-prob under the distribution it was drawn from.
    pub log_prob: f64,
    /// That distribution's entropy.
    pub entropy: f64,
    /// The model's own entropy at this step.
    pub model_entropy: f64,
    /// Why the row stops here, if it does.
    pub stop: Option<&'a StopReason>,
}

/// Stop strings, with the longest one's length: a new token can only complete a stop string
/// that ends in the text it added, so only the last `longest` bytes before it are searched again.
#[derive(Debug)]
pub(crate) struct StopStrings<'a> {
    strings: &'a [String],
    longest: usize,
}

impl<'a> StopStrings<'a> {
    pub(crate) fn new(strings: &'a [String]) -> Self {
        Self {
            strings,
            longest: strings.iter().map(String::len).max().unwrap_or(0),
        }
    }

    /// The earliest stop string in `text` that ends after byte `from` (earlier text was
    /// searched before), as `(byte offset, stop string)`.
    fn find(&self, text: &str, from: usize) -> Option<(usize, &'a str)> {
        find_stop(text, from.saturating_sub(self.longest), self.strings)
    }
}

/// The earliest of `stops` in `text[from..]` (moved back to a char boundary).
fn find_stop<'s>(text: &str, from: usize, stops: &'s [String]) -> Option<(usize, &'s str)> {
    let mut start = from.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    stops
        .iter()
        .filter_map(|s| {
            text[start..]
                .find(s.as_str())
                .map(|at| (start + at, s.as_str()))
        })
        .min_by_key(|(at, _)| *at)
}

/// A row being generated.
#[derive(Debug)]
pub(crate) struct RowState {
    pub(crate) generation: Generation,
    /// Streaming detokenisation: `tokens[prefix..read]` is already-emitted left context.
    prefix: usize,
    read: usize,
    /// New tokens at most, and the reason reported when they run out.
    limit: usize,
    limit_reason: StopReason,
}

/// What one token did to its row.
#[derive(Debug)]
pub(crate) struct Pushed {
    /// Byte offset in the row's text where this token's text starts.
    pub(crate) emitted_from: usize,
    /// Why the row stops here, if it does.
    pub(crate) stop: Option<StopReason>,
}

impl RowState {
    /// A row whose prompt has `prompt_len` tokens, in a model of `context` positions.
    pub(crate) fn new(prompt_len: usize, context: usize, max_new_tokens: usize) -> Self {
        let room = context - prompt_len;
        let (limit, limit_reason) = if max_new_tokens <= room {
            (max_new_tokens, StopReason::MaxNewTokens)
        } else {
            (room, StopReason::ContextFull)
        };
        Self {
            generation: Generation {
                prompt_tokens: prompt_len,
                tokens: Vec::new(),
                text: String::new(),
                stop: limit_reason.clone(),
                log_probs: Vec::new(),
                entropies: Vec::new(),
                model_entropies: Vec::new(),
            },
            prefix: 0,
            read: 0,
            limit,
            limit_reason,
        }
    }

    /// New tokens this row may still be given at most (its KV cache room).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Appends one drawn token with the model's entropy at that step, streams its text, and
    /// decides whether the row stops (EOS, a stop string — the text is cut before it —, or its
    /// token limit).
    ///
    /// # Errors
    /// Tokenizer failures.
    pub(crate) fn push(
        &mut self,
        drawn: &DrawnRow,
        model_entropy: f64,
        tokenizer: &Tokenizer,
        eos: &[u32],
        stops: &StopStrings<'_>,
    ) -> Result<Pushed> {
        let g = &mut self.generation;
        g.tokens.push(drawn.token);
        g.log_probs.push(drawn.log_prob);
        g.entropies.push(drawn.entropy);
        g.model_entropies.push(model_entropy);
        let emitted_from = g.text.len();
        let fresh = self.stream_text(tokenizer)?;
        let g = &mut self.generation;
        g.text.push_str(&fresh);
        let stop = if eos.contains(&drawn.token) {
            Some(StopReason::Eos)
        } else if let Some((at, s)) = stops.find(&g.text, emitted_from) {
            g.text.truncate(at);
            Some(StopReason::StopString(s.to_string()))
        } else if g.tokens.len() >= self.limit {
            Some(self.limit_reason.clone())
        } else {
            None
        };
        Ok(Pushed { emitted_from, stop })
    }

    /// Ends the row: records `reason` and, unless a stop string cut the text, flushes what
    /// streaming held back (a pending merge or an incomplete character).
    ///
    /// # Errors
    /// Tokenizer failures.
    pub(crate) fn finish(&mut self, reason: StopReason, tokenizer: &Tokenizer) -> Result<()> {
        let g = &mut self.generation;
        if !matches!(reason, StopReason::StopString(_)) {
            g.text = tokenizer.decode(&g.tokens, true)?;
        }
        g.stop = reason;
        Ok(())
    }

    /// The text the row's newest token completes (see `examples/generate.rs`): decodes a short
    /// window, so each token costs a decode of a few tokens, not of the whole output.
    fn stream_text(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let tokens = &self.generation.tokens;
        let before = tokenizer.decode(&tokens[self.prefix..self.read], true)?;
        let after = tokenizer.decode(&tokens[self.prefix..], true)?;
        let fresh = after.get(before.len()..).unwrap_or_default();
        if fresh.is_empty() || fresh.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let fresh = fresh.to_string();
        self.prefix = self.read;
        self.read = tokens.len();
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_stop_takes_the_earliest_and_respects_char_boundaries() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop("a END b\n\n", 0, &stops), Some((2, "END")));
        assert_eq!(find_stop("é\n\n", 1, &stops), Some((2, "\n\n")));
        assert_eq!(find_stop("abc", 0, &stops), None);
        // Only text that could end in the new token's is searched again.
        let s = StopStrings::new(&stops);
        assert_eq!(s.find("xxEND", 4), Some((2, "END")));
        assert_eq!(s.find("END and more text", 16), None);
    }
}
