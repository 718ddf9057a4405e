//! Math answer grading.
pub mod equiv;
pub mod expr;
pub mod extract;
pub mod normalize;
pub use equiv::{Stage, Verdict, answers_match};
pub use extract::{Extracted, ExtractionMethod, extract_answer, last_boxed};
pub use normalize::normalize;
