//! Reading a catalog file one persona at a time: the `personas` array is never held whole,
//! so a catalog of 100,000 personas is checked and seeded in bounded memory.

use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What a catalog says besides its personas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// The target (product) of every persona that names none.
    pub target: Option<String>,
    /// The `archetypes` table (goals shared by an archetype's personas), unchecked.
    pub archetypes: Option<Value>,
    /// The `spaces` list (households and teams of the file's personas), unchecked.
    pub spaces: Option<Value>,
    /// Top-level keys the format does not know.
    pub unknown: Vec<String>,
    /// Whether the file has a `personas` array at all.
    pub has_personas: bool,
}

/// Reads `reader` as a catalog and calls `each(index, persona)` for every entry of its
/// `personas` array, in order. `Err` is a problem with the file as a whole (not JSON, not
/// an object, `personas` not an array), with its line and column.
pub fn scan(reader: impl Read, each: &mut dyn FnMut(usize, Value)) -> Result<Head, String> {
    let mut deserializer = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    let head =
        de::Deserializer::deserialize_map(&mut deserializer, FileVisitor { each }).map_err(|err| describe(&err))?;
    deserializer.end().map_err(|err| describe(&err))?;
    Ok(head)
}

fn describe(err: &serde_json::Error) -> String {
    let message = err.to_string();
    // serde_json appends " at line L column C"; say it our way, once.
    let core = message.split(" at line ").next().unwrap_or(&message);
    format!(
        "not a valid catalog at line {}, column {}: {core}",
        err.line(),
        err.column()
    )
}

struct FileVisitor<'a> {
    each: &'a mut dyn FnMut(usize, Value),
}

impl<'de> Visitor<'de> for FileVisitor<'_> {
    type Value = Head;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a catalog object {\"personas\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "personas" => {
                    map.next_value_seed(PersonasSeed { each: &mut *self.each })?;
                    head.has_personas = true;
                }
                "target" => head.target = Some(map.next_value::<String>()?),
                "archetypes" => head.archetypes = Some(map.next_value::<Value>()?),
                "spaces" => head.spaces = Some(map.next_value::<Value>()?),
                "$schema" | "description" => {
                    map.next_value::<String>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    head.unknown.push(key);
                }
            }
        }
        Ok(head)
    }
}

struct PersonasSeed<'a> {
    each: &'a mut dyn FnMut(usize, Value),
}

impl<'de> DeserializeSeed<'de> for PersonasSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PersonasSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`personas`: an array of persona objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(persona) = seq.next_element::<Value>()? {
            (self.each)(index, persona);
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personas_come_one_at_a_time_and_the_head_is_kept() {
        let text = r#"{"personas": [{"name": "a"}, {"name": "b"}], "target": "crm", "extra": 1}"#;
        let mut seen = Vec::new();
        let head = scan(text.as_bytes(), &mut |i, p| seen.push((i, p["name"].clone()))).unwrap();
        assert_eq!(seen, [(0, Value::from("a")), (1, Value::from("b"))]);
        assert_eq!(head.target.as_deref(), Some("crm"));
        assert_eq!(head.unknown, ["extra"]);
        assert!(head.has_personas);
    }

    #[test]
    fn broken_json_is_placed() {
        let err = scan("{\"personas\": [\n  {,]}".as_bytes(), &mut |_, _| {}).unwrap_err();
        assert!(err.contains("line 2, column 4"), "{err}");
        let err = scan("[1, 2]".as_bytes(), &mut |_, _| {}).unwrap_err();
        assert!(err.contains("catalog object"), "{err}");
    }
}
