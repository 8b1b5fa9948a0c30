//! Errors the engine reports: problems in a bundle and problems in a request.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where in a bundle a problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// File name as passed to load (e.g. `access.cedar`, `tests/x.yaml`).
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    /// The offending line of text (trimmed, at most 200 characters).
    pub snippet: String,
}

impl Location {
    /// A location with no line.
    pub fn file(file: &str) -> Self {
        Location {
            file: file.to_string(),
            line: 0,
            column: 0,
            snippet: String::new(),
        }
    }

    /// The location of byte `offset` in `text`.
    pub fn at_offset(file: &str, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before
            .get(line_start..)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        Self::at_line(file, text, line as u32, column as u32)
    }

    /// The location of a 1-based `line` (and column) in `text`.
    pub fn at_line(file: &str, text: &str, line: u32, column: u32) -> Self {
        let snippet = text
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .map(|l| l.trim().chars().take(200).collect())
            .unwrap_or_default();
        Location {
            file: file.to_string(),
            line,
            column,
            snippet,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// The kind of a bundle problem; stable names used across the WIT boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// `portcullis.toml` is missing a key, has an unknown one, or a bad value.
    Manifest,
    /// The schema does not parse or does not fit what the engine supplies.
    Schema,
    /// A policy file does not parse, or its annotations are wrong.
    PolicyParse,
    /// A policy does not validate strictly against the schema.
    PolicyValidation,
    /// `entities.json` does not parse or does not fit the schema.
    Entities,
    /// A case file under `tests/` is malformed.
    CaseFile,
    /// A required file is absent, or a file is not one the bundle can hold.
    MissingFile,
    /// The bundle is over a limit (size, policy count).
    Limit,
}

impl ProblemKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Manifest => "manifest",
            ProblemKind::Schema => "schema",
            ProblemKind::PolicyParse => "policy-parse",
            ProblemKind::PolicyValidation => "policy-validation",
            ProblemKind::Entities => "entities",
            ProblemKind::CaseFile => "case-file",
            ProblemKind::MissingFile => "missing-file",
            ProblemKind::Limit => "limit",
        }
    }
}

/// One reason a bundle cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleProblem {
    /// What sort of problem.
    pub kind: ProblemKind,
    /// Lowercase message saying what was found and what was expected.
    pub message: String,
    /// Where, when known.
    pub location: Option<Location>,
}

impl BundleProblem {
    /// A problem at a location.
    pub fn at(kind: ProblemKind, location: Location, message: impl Into<String>) -> Self {
        BundleProblem {
            kind,
            message: message.into(),
            location: Some(location),
        }
    }

    /// A problem with no location.
    pub fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        BundleProblem {
            kind,
            message: message.into(),
            location: None,
        }
    }
}

impl fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => {
                write!(f, "{loc}: {}: {}", self.kind.as_str(), self.message)?;
                if !loc.snippet.is_empty() {
                    write!(f, "\n    | {}", loc.snippet)?;
                }
                Ok(())
            }
            None => write!(f, "{}: {}", self.kind.as_str(), self.message),
        }
    }
}

/// A request that cannot be decided as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct RequestError {
    /// Dotted path of the offending field (`context.mtls.verified`), or
    /// empty when the problem is the document itself (malformed JSON).
    pub field: String,
    /// What was found and what was expected.
    pub message: String,
}

impl RequestError {
    /// An error about `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        RequestError {
            field: field.into(),
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("field `{}`: {}", self.field, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a\nbc\n  def\n";
        let loc = Location::at_offset("f", text, 7);
        assert_eq!((loc.line, loc.column), (3, 3));
        assert_eq!(loc.snippet, "def");
        let first = Location::at_offset("f", text, 0);
        assert_eq!((first.line, first.column), (1, 1));
    }
}
