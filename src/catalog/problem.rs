//! What is wrong with a catalog, and where: a [`Problem`] names the file, the JSON path
//! (`personas[3].email`) and the message; the path helpers render paths the same way for
//! the schema's report and for the rules it cannot state.

use std::path::{Path, PathBuf};

/// One thing wrong with a catalog file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// Where in the file: `personas[3].email`, or `(file)` for the file as a whole.
    pub path: String,
    pub message: String,
    /// The entry does not have the catalog schema's shape (a missing or unknown field, a
    /// wrong type or enum value), as opposed to breaking a rule the schema cannot state
    /// (a test-domain email, a cron that never fires, a duplicate). The API answers the
    /// first with 400 and the second with 422.
    #[serde(skip)]
    pub shape: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.path, self.message)
    }
}

pub(super) fn problem(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_path_buf(),
        path: path.into(),
        message: message.into(),
        shape: false,
    }
}

/// A problem with the entry's shape (see [`Problem::shape`]).
pub(super) fn shape_problem(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        shape: true,
        ..problem(file, path, message)
    }
}

/// Renders a JSON pointer below `at` as `personas[3].email`.
pub(super) fn json_path<'a>(
    at: &str,
    segments: impl Iterator<Item = jsonschema::paths::LocationSegment<'a>>,
) -> String {
    let mut path = at.to_string();
    for segment in segments {
        match segment {
            jsonschema::paths::LocationSegment::Index(index) => path.push_str(&format!("[{index}]")),
            jsonschema::paths::LocationSegment::Property(name) => path = join(&path, &name),
        }
    }
    if path.is_empty() { "(body)".into() } else { path }
}

pub(super) fn join(path: &str, field: &str) -> String {
    let simple = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    let field = if simple {
        field.to_string()
    } else {
        format!("[{field:?}]")
    };
    match (path, simple) {
        ("" | "(root)" | "(body)", _) => field,
        (_, true) => format!("{path}.{field}"),
        (_, false) => format!("{path}{field}"),
    }
}
