//! Math answer grading.
mod equation;
pub mod equiv;
mod eval;
pub mod expr;
pub mod extract;
pub mod normalize;
mod points;
pub use equiv::{Stage, Verdict, answers_match};
pub use extract::{Extracted, ExtractionMethod, extract_answer, last_boxed};
pub use normalize::normalize;
