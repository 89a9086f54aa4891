//! MCP tool names (`todo.create`, up to 128 characters, any text) mapped to function
//! names chat-completions APIs accept (`^[a-zA-Z0-9_-]{1,64}$`) and back.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The two-way map of one session's tools.
#[derive(Clone, Debug, Default)]
pub struct ToolNames {
    to_llm: HashMap<String, String>,
    to_mcp: HashMap<String, String>,
}

const MAX: usize = 64;

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hashed(name: &str, base: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep: String = base.chars().take(MAX - suffix.len() - 1).collect();
    format!("{keep}_{suffix}")
}

impl ToolNames {
    pub fn new<'a>(mcp_names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names = Self::default();
        for mcp in mcp_names {
            let base = sanitize(mcp);
            let mut llm = if base.is_empty() || base.len() > MAX {
                hashed(mcp, &base)
            } else {
                base.clone()
            };
            // Two MCP names may sanitize alike (`a.b` and `a_b`): the later one is hashed.
            if names.to_mcp.contains_key(&llm) {
                llm = hashed(mcp, &base);
            }
            names.to_llm.insert(mcp.to_string(), llm.clone());
            names.to_mcp.insert(llm, mcp.to_string());
        }
        names
    }

    pub fn llm_name(&self, mcp: &str) -> Option<&str> {
        self.to_llm.get(mcp).map(String::as_str)
    }

    pub fn mcp_name(&self, llm: &str) -> Option<&str> {
        self.to_mcp.get(llm).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        !name.is_empty() && name.len() <= MAX && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn names_are_valid_and_reversible() {
        let long = format!("reports.{}", "x".repeat(120));
        let mcp = ["todo.create", "todo_create", "notes/search v2", long.as_str(), "äöü"];
        let names = ToolNames::new(mcp);
        for name in mcp {
            let llm = names.llm_name(name).unwrap();
            assert!(valid(llm), "{llm}");
            assert_eq!(names.mcp_name(llm), Some(name));
        }
        assert_eq!(names.llm_name("todo.create"), Some("todo_create"));
        assert_ne!(
            names.llm_name("todo_create"),
            Some("todo_create"),
            "the collision is hashed"
        );
    }
}
