//! The paper's prompt strings (`docs/method.md` §4), so that a grader, a trainer and
//! an evaluation runner ask the same questions.

/// The math system prompt (with the chat template; the user turn is the problem).
pub const MATH_SYSTEM_PROMPT: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

/// Appended to code questions that do not already ask for a code block (HumanEval, MBPP).
pub const CODE_INSTRUCTION: &str =
    "Write your complete solution in Python in a single ```python code block.";

/// The instruction that ends every LeetCode `prompt_sft` in the shipped file (verbatim,
/// misspelling included: it is what the paper's models were prompted with), before the
/// ```` ```python ```` block holding the `class Solution` stub. Such prompts are used as they are.
pub const LEETCODE_INSTRUCTION: &str = "Please complete the code below to solve above prblem:";
