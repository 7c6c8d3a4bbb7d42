//! Token and error bodies, and the classification of a whole response into an outcome (D7).
//!
//! Bodies are parsed with serde-json-core, strictly and without a heap. Time fields arrive as
//! JSON strings from IMDS (`"3599"`) and as numbers from Azure ML and Service Fabric (`3599`);
//! serde-json-core cannot deserialize "any", so a body is read in up to two passes: the first
//! learns which time fields are strings (kept as borrowed text) and which are numbers, the
//! second (only when a number was seen) reads those numbers with the right call.
//!
//! The strict check in [`crate::json`] walks the body anyway and reports the top-level
//! members; when they are of the usual shapes the fields are taken from that walk and
//! serde-json-core is not run at all (a fast path that gives the same answers, tested
//! against the two-pass parse).
//!
//! [`token`] reads token bodies, [`error`] error bodies, and [`outcome`] decides what a
//! whole response means.

mod error;
mod outcome;
mod token;

pub use error::{ErrorBody, ErrorDetail, MAX_CODE_LEN, MAX_DESCRIPTION_LEN};
pub use outcome::{classify, Classified, Failure, FailureKind, OutcomeClass};
pub use token::{parse_token_body, BodyError, TimeField, TokenBody};

/// Deepest nesting accepted in a body (unknown fields may hold arrays and objects).
const MAX_DEPTH: usize = 32;

#[cfg(test)]
mod tests;
