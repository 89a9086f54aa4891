//! Query parameters: how the server parses them and what the OpenAPI document says about
//! them, from one table, so the two cannot drift apart.
//!
//! Every query parameter arrives as optional text ([`super::error::ValidQuery`]); the
//! handler parses it here with an error that names it. [`document`] then writes each
//! parameter's exact schema (type, range, enum, pattern) into the served document.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use crate::model::call::CallResult;
use crate::model::persona::Flow;
use crate::model::profile::InteractionType;
use crate::model::tick::{TickStatus, Trigger};

/// Page sizes of the listings.
pub const PAGE_SIZES: (i64, i64) = (1, 500);
/// Day spans of the profile statistics.
pub const DAY_SPANS: (i64, i64) = (1, 3650);
/// A listing cursor: microseconds since the epoch and the last row's id (simple form).
/// Empty means the first page.
const CURSOR_PATTERN: &str = "^$|^[0-9]{1,18}-[0-9a-f]{32}$";

/// The schema of each query parameter, by name (the same name means the same thing on
/// every API route; the dashboard page is lenient: a bad `days` shows the default).
fn schema_of(path: &str, name: &str) -> Option<Value> {
    let names = |all: &[&str]| json!({"type": "string", "enum": all});
    Some(match name {
        "days" if path == "/" => json!({"type": "string", "description": "1–365; anything else: 30"}),
        "since" | "until" => json!({
            "type": "string",
            "pattern": format!("^$|{}", crate::time::instant_pattern()),
            "description": "empty = not set",
        }),
        "limit" => json!({"type": "integer", "minimum": PAGE_SIZES.0, "maximum": PAGE_SIZES.1}),
        "days" => json!({"type": "integer", "minimum": DAY_SPANS.0, "maximum": DAY_SPANS.1}),
        "cursor" => json!({"type": "string", "pattern": CURSOR_PATTERN}),
        "tick" => json!({"type": "string", "format": "uuid"}),
        "status" => names(&TickStatus::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        "trigger" => names(&Trigger::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        "result" => names(&CallResult::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        "flow" => names(&Flow::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        "type" => names(&InteractionType::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        "provision" => json!({"type": "string", "enum": ["true", "false"]}),
        "persona" | "module" | "archetype" | "goal" => json!({"type": "string", "description": "empty = not set"}),
        _ => return None,
    })
}

/// Writes the exact schema of every query parameter into an OpenAPI document.
///
/// # Panics
/// When a route has a query parameter this table does not know: a new parameter must be
/// given its schema here (caught by the unit test below, not at runtime in production).
pub fn document(openapi: &mut Value) {
    let Some(paths) = openapi.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for parameter in parameters.iter_mut().filter(|p| p["in"] == "query") {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let schema = schema_of(path, &name)
                    .unwrap_or_else(|| panic!("query parameter `{name}` of {path} has no schema in api::params"));
                parameter["schema"] = schema;
                parameter["required"] = Value::Bool(false);
            }
        }
    }
}

/// A free-text filter: empty means not set.
pub fn text(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// A whole number in `range` (inclusive), `default` when absent.
pub fn integer(name: &str, value: Option<&str>, (min, max): (i64, i64), default: i64) -> Result<i64, ApiError> {
    let Some(value) = value else { return Ok(default) };
    let bad = || ApiError::field(name, format!("must be a whole number from {min} to {max}"));
    let number = value.parse::<i64>().map_err(|_| bad())?;
    if !(min..=max).contains(&number) {
        return Err(bad());
    }
    Ok(number)
}

/// One of a fixed set of words (a `text_enum`); present means non-empty.
pub fn choice<T: FromStr<Err = String>>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError> {
    value
        .map(|v| v.parse::<T>().map_err(|message| ApiError::field(name, message)))
        .transpose()
}

/// `true` or `false` (absent: false).
pub fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::field(name, "must be true or false")),
    }
}

/// A UUID in its hyphenated form (what `format: uuid` means).
pub fn uuid(name: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(value)
        .ok()
        .filter(|_| value.len() == 36)
        .ok_or_else(|| ApiError::field(name, "must be a UUID like 0196b3f4-6c1e-7a52-9d3b-1f0e2a4c5d6e"))
}

/// A point in time (see [`crate::time::instant_pattern`]); empty means not set.
pub fn instant(name: &str, value: Option<&str>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| crate::time::parse_instant(v, now).map_err(|m| ApiError::field(name, m)))
        .transpose()
}

/// The cursor after the row at `at` with `id`.
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}-{}", at.timestamp_micros(), id.simple())
}

/// Reads a cursor; any value of the documented pattern is a position in the listing.
pub fn decode_cursor(value: Option<&str>) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || ApiError::field("cursor", "not a cursor: pass next_cursor from the previous page");
    let (micros, id) = value.split_once('-').ok_or_else(bad)?;
    let well_formed = (1..=18).contains(&micros.len())
        && micros.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return Err(bad());
    }
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros)
        .unwrap_or_else(crate::time::latest)
        .min(crate::time::latest());
    Ok(Some((at, Uuid::try_parse(id).map_err(|_| bad())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_parameter_of_the_api_has_its_schema() {
        // `openapi_text` runs `document`, which panics on a parameter without a schema.
        let openapi: Value = serde_json::from_str(super::super::openapi_text()).unwrap();
        assert_eq!(
            openapi["paths"]["/api/v1/admin/ticks"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "limit")
                .unwrap()["schema"]["maximum"],
            500
        );
    }

    #[test]
    fn cursors_round_trip_and_any_well_formed_one_is_a_position() {
        let at = crate::time::now();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(Some(&encode_cursor(at, id))).unwrap(), Some((at, id)));
        assert!(decode_cursor(Some("999999999999999999-0123456789abcdef0123456789abcdef")).is_ok());
        assert_eq!(decode_cursor(Some("")).unwrap(), None, "empty: the first page");
        for bad in [
            "1-XYZ",
            "12",
            "-0123456789abcdef0123456789abcdef",
            "1-0123456789ABCDEF0123456789ABCDEF",
        ] {
            assert!(decode_cursor(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_whole_and_in_range() {
        assert_eq!(integer("limit", None, PAGE_SIZES, 50).unwrap(), 50);
        assert_eq!(integer("limit", Some("500"), PAGE_SIZES, 50).unwrap(), 500);
        for bad in ["", "0", "501", "1.5", "ten", "-1"] {
            let err = integer("limit", Some(bad), PAGE_SIZES, 50).unwrap_err();
            assert_eq!(err.body.details[0].field, "limit", "{bad:?}");
        }
    }
}
