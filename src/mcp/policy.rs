//! Which tools a persona is offered, and which module a tool belongs to.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::ToolInfo;
use crate::config::McpConfig;

/// Allow/deny globs on tool names, destructive tools withheld unless allowed, and the
/// module of each tool.
#[derive(Clone, Debug)]
pub struct ToolPolicy {
    allow: GlobSet,
    deny: GlobSet,
    allow_destructive: GlobSet,
    modules: Vec<(globset::GlobMatcher, String)>,
    separator: String,
}

fn set(globs: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        // Config validation has checked every glob.
        if let Ok(glob) = Glob::new(glob) {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

impl ToolPolicy {
    pub fn new(config: &McpConfig) -> Self {
        Self {
            allow: set(&config.allow),
            deny: set(&config.deny),
            allow_destructive: set(&config.allow_destructive),
            modules: config
                .modules
                .iter()
                .filter_map(|(glob, module)| Some((Glob::new(glob).ok()?.compile_matcher(), module.clone())))
                .collect(),
            separator: config.module_separator.clone(),
        }
    }

    /// The module of a tool: an `mcp.modules` glob match, else the part of the name
    /// before the separator, else the whole name.
    pub fn module_of(&self, tool: &str) -> String {
        if let Some((_, module)) = self.modules.iter().find(|(glob, _)| glob.is_match(tool)) {
            return module.clone();
        }
        match tool.split_once(self.separator.as_str()) {
            Some((module, _)) if !module.is_empty() => module.to_string(),
            _ => tool.to_string(),
        }
    }

    /// `Ok` if the tool may be offered, else why not.
    pub fn check(&self, tool: &ToolInfo) -> Result<(), &'static str> {
        if tool.task_required {
            return Err(
                "it must be called as a task (execution.taskSupport = \"required\"), which this client does not do",
            );
        }
        if self.deny.is_match(&tool.name) {
            return Err("denied by mcp.deny");
        }
        if !self.allow.is_match(&tool.name) {
            return Err("not in mcp.allow");
        }
        if tool.destructive && !self.allow_destructive.is_match(&tool.name) {
            return Err("annotated destructiveHint and not in mcp.allow_destructive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, destructive: bool) -> ToolInfo {
        ToolInfo {
            name: name.into(),
            module: String::new(),
            description: None,
            input_schema: std::sync::Arc::new(serde_json::json!({"type": "object"})),
            destructive,
            task_required: false,
        }
    }

    #[test]
    fn modules_come_from_the_separator_or_the_override() {
        let mut config = McpConfig::default();
        let policy = ToolPolicy::new(&config);
        assert_eq!(policy.module_of("todo.create"), "todo");
        assert_eq!(policy.module_of("search"), "search");
        config.modules.insert("cal_*".into(), "calendar".into());
        config.module_separator = "_".into();
        let policy = ToolPolicy::new(&config);
        assert_eq!(policy.module_of("cal_add_event"), "calendar");
        assert_eq!(policy.module_of("notes_add"), "notes");
    }

    #[test]
    fn deny_wins_and_destructive_tools_need_explicit_permission() {
        let config = McpConfig {
            allow: vec!["todo.*".into(), "notes.*".into()],
            deny: vec!["notes.export".into()],
            allow_destructive: vec!["todo.delete".into()],
            ..McpConfig::default()
        };
        let policy = ToolPolicy::new(&config);
        assert!(policy.check(&tool("todo.create", false)).is_ok());
        assert!(policy.check(&tool("todo.delete", true)).is_ok());
        assert!(
            policy
                .check(&tool("notes.purge", true))
                .unwrap_err()
                .contains("destructiveHint")
        );
        assert!(
            policy
                .check(&tool("notes.export", false))
                .unwrap_err()
                .contains("mcp.deny")
        );
        assert!(
            policy
                .check(&tool("mood.log", false))
                .unwrap_err()
                .contains("mcp.allow")
        );
        let task = ToolInfo {
            task_required: true,
            ..tool("todo.export", false)
        };
        assert!(policy.check(&task).unwrap_err().contains("taskSupport"));
    }
}
