//! The sample organizer's tools: their definitions (names, schemas, annotations) as data,
//! and what each does to a user's data.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One user's organizer data.
#[derive(Debug, Default)]
pub struct UserData {
    next_id: u64,
    todos: BTreeMap<u64, Value>,
    events: BTreeMap<u64, Value>,
    journal: Vec<Value>,
    notes: BTreeMap<u64, Value>,
    habits: BTreeMap<u64, Value>,
    habit_logs: Vec<Value>,
    moods: Vec<Value>,
    contacts: BTreeMap<u64, Value>,
}

impl UserData {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The tool definitions in MCP form: `module.verb` names, input schemas, annotations.
pub fn definitions() -> Vec<Value> {
    let text = |min: u64, max: u64| json!({"type": "string", "minLength": min, "maxLength": max});
    let id = json!({"type": "integer", "minimum": 1});
    let tool = |name: &str, description: &str, properties: Value, required: Value, annotations: Value| {
        json!({
            "name": name,
            "description": description,
            "inputSchema": {"type": "object", "properties": properties, "required": required, "additionalProperties": false},
            "annotations": annotations,
        })
    };
    let read = json!({"readOnlyHint": true});
    let write = json!({"readOnlyHint": false, "destructiveHint": false});
    let destroy = json!({"readOnlyHint": false, "destructiveHint": true});
    vec![
        tool(
            "todo.create",
            "Add a to-do.",
            json!({
                "title": text(1, 200),
                "due": {"type": "string", "format": "date", "description": "YYYY-MM-DD"},
                "priority": {"type": "string", "enum": ["low", "normal", "high"]}
            }),
            json!(["title"]),
            write.clone(),
        ),
        tool(
            "todo.list",
            "List to-dos.",
            json!({
                "status": {"type": "string", "enum": ["open", "done", "all"]}
            }),
            json!([]),
            read.clone(),
        ),
        tool(
            "todo.complete",
            "Mark a to-do done.",
            json!({"id": id}),
            json!(["id"]),
            write.clone(),
        ),
        tool(
            "todo.delete",
            "Delete a to-do for good.",
            json!({"id": id}),
            json!(["id"]),
            destroy.clone(),
        ),
        tool(
            "calendar.add_event",
            "Add a calendar event.",
            json!({
                "title": text(1, 200),
                "start": {"type": "string", "format": "date-time", "description": "RFC 3339 with its offset, e.g. 2026-12-08T09:30:00+01:00"},
                "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
                "location": text(0, 200)
            }),
            json!(["title", "start", "duration_minutes"]),
            write.clone(),
        ),
        tool(
            "calendar.list",
            "List upcoming events.",
            json!({
                "days": {"type": "integer", "minimum": 1, "maximum": 31}
            }),
            json!([]),
            read.clone(),
        ),
        tool(
            "journal.add",
            "Write a journal entry.",
            json!({
                "text": text(1, 5000),
                "tags": {"type": "array", "items": text(1, 30), "maxItems": 10}
            }),
            json!(["text"]),
            write.clone(),
        ),
        tool(
            "journal.list",
            "Read recent journal entries.",
            json!({
                "limit": {"type": "integer", "minimum": 1, "maximum": 50}
            }),
            json!([]),
            read.clone(),
        ),
        tool(
            "notes.create",
            "Create a note.",
            json!({
                "title": text(1, 200),
                "body": text(0, 20000),
                "pinned": {"type": "boolean"}
            }),
            json!(["title", "body"]),
            write.clone(),
        ),
        tool(
            "notes.search",
            "Search notes by text.",
            json!({"query": text(1, 100)}),
            json!(["query"]),
            read.clone(),
        ),
        tool(
            "habits.create",
            "Start tracking a habit.",
            json!({
                "name": text(1, 100),
                "frequency": {"type": "string", "enum": ["daily", "weekly"]}
            }),
            json!(["name", "frequency"]),
            write.clone(),
        ),
        tool(
            "habits.log",
            "Log a habit as done.",
            json!({
                "habit_id": id,
                "date": {"type": "string", "format": "date"}
            }),
            json!(["habit_id"]),
            write.clone(),
        ),
        tool(
            "habits.list",
            "List habits with their streaks.",
            json!({}),
            json!([]),
            read.clone(),
        ),
        tool(
            "mood.log",
            "Log today's mood.",
            json!({
                "score": {"type": "integer", "minimum": 1, "maximum": 5},
                "note": text(0, 500)
            }),
            json!(["score"]),
            write.clone(),
        ),
        tool(
            "mood.history",
            "Mood over the last days.",
            json!({
                "days": {"type": "integer", "minimum": 1, "maximum": 90}
            }),
            json!([]),
            read.clone(),
        ),
        tool(
            "contacts.add",
            "Add a contact.",
            json!({
                "name": text(1, 100),
                "email": {"type": "string", "format": "email"},
                "birthday": {"type": "string", "format": "date"},
                "address": {"type": "object", "properties": {"city": text(1, 100), "country": text(2, 2)}, "required": ["city"], "additionalProperties": false}
            }),
            json!(["name"]),
            write.clone(),
        ),
        tool(
            "contacts.find",
            "Find contacts by name.",
            json!({"query": text(1, 100)}),
            json!(["query"]),
            read,
        ),
        tool("contacts.purge", "Delete every contact.", json!({}), json!([]), destroy),
    ]
}

/// Runs a tool whose arguments already passed its schema. `Err` is a tool-level error
/// (reported with `isError`), e.g. an unknown id.
pub fn run(data: &mut UserData, tool: &str, args: &Value) -> Result<Value, String> {
    let args = Args(args);
    let (module, verb) = tool.split_once('.').unwrap_or((tool, ""));
    match module {
        "todo" => todo(data, verb, &args),
        "calendar" => calendar(data, verb, &args),
        "journal" => journal(data, verb, &args),
        "notes" => notes(data, verb, &args),
        "habits" => habits(data, verb, &args),
        "mood" => mood(data, verb, &args),
        "contacts" => contacts(data, verb, &args),
        _ => Err(format!("unknown tool {tool}")),
    }
}

/// A call's arguments, read leniently (the schema was checked before).
struct Args<'a>(&'a Value);

impl Args<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    fn arg(&self, key: &str) -> Value {
        self.0.get(key).cloned().unwrap_or(Value::Null)
    }

    fn text(&self, key: &str) -> String {
        self.0.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
    }

    fn number(&self, key: &str) -> u64 {
        self.0.get(key).and_then(Value::as_u64).unwrap_or_default()
    }
}

/// The `todo.*` tools.
fn todo(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "create" => {
            let id = data.id();
            let todo = json!({"id": id, "title": args.text("title"), "due": args.arg("due"), "priority": args.get("priority").cloned().unwrap_or(json!("normal")), "done": false});
            data.todos.insert(id, todo.clone());
            Ok(todo)
        }
        "list" => {
            let status = args.get("status").and_then(Value::as_str).unwrap_or("open");
            Ok(json!(
                data.todos
                    .values()
                    .filter(|t| match status {
                        "done" => t["done"] == true,
                        "all" => true,
                        _ => t["done"] == false,
                    })
                    .collect::<Vec<_>>()
            ))
        }
        "complete" => {
            let id = args.number("id");
            let todo = data.todos.get_mut(&id).ok_or(format!("no to-do with id {id}"))?;
            todo["done"] = json!(true);
            Ok(todo.clone())
        }
        "delete" => {
            let id = args.number("id");
            data.todos
                .remove(&id)
                .map(|_| json!({"deleted": id}))
                .ok_or(format!("no to-do with id {id}"))
        }
        _ => Err(format!("unknown tool todo.{verb}")),
    }
}

/// The `calendar.*` tools.
fn calendar(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "add_event" => {
            let start = args.text("start");
            chrono::DateTime::parse_from_rfc3339(&start)
                .map_err(|_| format!("start `{start}` is not an RFC 3339 date-time"))?;
            let id = data.id();
            let event = json!({"id": id, "title": args.text("title"), "start": start, "duration_minutes": args.arg("duration_minutes"), "location": args.arg("location")});
            data.events.insert(id, event.clone());
            Ok(event)
        }
        "list" => Ok(json!(data.events.values().collect::<Vec<_>>())),
        _ => Err(format!("unknown tool calendar.{verb}")),
    }
}

/// The `journal.*` tools.
fn journal(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "add" => {
            let entry = json!({"id": data.id(), "text": args.text("text"), "tags": args.get("tags").cloned().unwrap_or(json!([])), "at": crate::time::now().to_rfc3339()});
            data.journal.push(entry.clone());
            Ok(entry)
        }
        "list" => {
            let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
            Ok(json!(data.journal.iter().rev().take(limit).collect::<Vec<_>>()))
        }
        _ => Err(format!("unknown tool journal.{verb}")),
    }
}

/// The `notes.*` tools.
fn notes(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "create" => {
            let id = data.id();
            let note = json!({"id": id, "title": args.text("title"), "body": args.text("body"), "pinned": args.get("pinned").cloned().unwrap_or(json!(false))});
            data.notes.insert(id, note.clone());
            Ok(note)
        }
        "search" => {
            let query = args.text("query").to_lowercase();
            Ok(json!(
                data.notes
                    .values()
                    .filter(|n| {
                        n["title"].as_str().unwrap_or_default().to_lowercase().contains(&query)
                            || n["body"].as_str().unwrap_or_default().to_lowercase().contains(&query)
                    })
                    .collect::<Vec<_>>()
            ))
        }
        _ => Err(format!("unknown tool notes.{verb}")),
    }
}

/// The `habits.*` tools.
fn habits(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "create" => {
            let id = data.id();
            let habit = json!({"id": id, "name": args.text("name"), "frequency": args.text("frequency")});
            data.habits.insert(id, habit.clone());
            Ok(habit)
        }
        "log" => {
            let id = args.number("habit_id");
            if !data.habits.contains_key(&id) {
                return Err(format!("no habit with id {id}"));
            }
            let entry = json!({"habit_id": id, "date": args.get("date").cloned().unwrap_or_else(|| json!(crate::time::now().date_naive().to_string()))});
            data.habit_logs.push(entry.clone());
            Ok(entry)
        }
        "list" => Ok(json!(
            data.habits
                .values()
                .map(|h| {
                    let streak = data.habit_logs.iter().filter(|l| l["habit_id"] == h["id"]).count();
                    json!({"habit": h, "logged": streak})
                })
                .collect::<Vec<_>>()
        )),
        _ => Err(format!("unknown tool habits.{verb}")),
    }
}

/// The `mood.*` tools.
fn mood(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "log" => {
            let entry =
                json!({"score": args.arg("score"), "note": args.arg("note"), "at": crate::time::now().to_rfc3339()});
            data.moods.push(entry.clone());
            Ok(entry)
        }
        "history" => Ok(json!(data.moods)),
        _ => Err(format!("unknown tool mood.{verb}")),
    }
}

/// The `contacts.*` tools.
fn contacts(data: &mut UserData, verb: &str, args: &Args<'_>) -> Result<Value, String> {
    match verb {
        "add" => {
            let id = data.id();
            let contact = json!({"id": id, "name": args.text("name"), "email": args.arg("email"), "birthday": args.arg("birthday"), "address": args.arg("address")});
            data.contacts.insert(id, contact.clone());
            Ok(contact)
        }
        "find" => {
            let query = args.text("query").to_lowercase();
            Ok(json!(
                data.contacts
                    .values()
                    .filter(|c| c["name"].as_str().unwrap_or_default().to_lowercase().contains(&query))
                    .collect::<Vec<_>>()
            ))
        }
        "purge" => {
            let count = data.contacts.len();
            data.contacts.clear();
            Ok(json!({"deleted": count}))
        }
        _ => Err(format!("unknown tool contacts.{verb}")),
    }
}
