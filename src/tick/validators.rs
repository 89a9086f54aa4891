//! The compiled JSON Schemas of tool inputs, shared by every tick of the process: a
//! gateway lists the same tools each session, and compiling a schema costs far more than
//! finding it again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Compiled tool schemas kept at most (oldest first out).
const VALIDATOR_CACHE: usize = 512;

/// A bounded map of compiled schemas; the oldest entry goes when it is full. Keyed by a
/// hash of the schema's JSON (computed without building the text), the schema kept to
/// tell a collision from a hit.
#[derive(Default)]
pub(super) struct ValidatorCache {
    map: HashMap<u64, (serde_json::Value, Arc<jsonschema::Validator>)>,
    order: VecDeque<u64>,
}

/// The hash of a schema's compact JSON.
fn schema_key(schema: &serde_json::Value) -> u64 {
    use std::hash::Hasher as _;
    struct Hashing(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(Default::default());
    // Writing into a hasher cannot fail.
    let _ = serde_json::to_writer(&mut hashing, schema);
    hashing.0.finish()
}

impl ValidatorCache {
    pub(super) fn get(&self, schema: &serde_json::Value) -> Option<&Arc<jsonschema::Validator>> {
        self.map
            .get(&schema_key(schema))
            .filter(|(cached, _)| cached == schema)
            .map(|(_, validator)| validator)
    }

    pub(super) fn insert(&mut self, schema: &serde_json::Value, validator: Arc<jsonschema::Validator>) {
        let key = schema_key(schema);
        if self.map.len() >= VALIDATOR_CACHE
            && !self.map.contains_key(&key)
            && let Some(oldest) = self.order.pop_front()
        {
            self.map.remove(&oldest);
        }
        if self.map.insert(key, (schema.clone(), validator)).is_none() {
            self.order.push_back(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_validator_cache_is_bounded_and_keyed_by_the_schema() {
        let mut cache = ValidatorCache::default();
        let schema = |n: usize| json!({"type": "object", "properties": {format!("p{n}"): {"type": "integer"}}});
        let compiled = |n: usize| Arc::new(jsonschema::validator_for(&schema(n)).unwrap());
        for n in 0..VALIDATOR_CACHE + 10 {
            cache.insert(&schema(n), compiled(n));
        }
        assert_eq!(cache.map.len(), VALIDATOR_CACHE);
        assert_eq!(cache.order.len(), VALIDATOR_CACHE);
        assert!(cache.get(&schema(0)).is_none(), "the oldest went first");
        let newest = cache.get(&schema(VALIDATOR_CACHE + 9)).expect("the newest is kept");
        assert!(newest.is_valid(&json!({"p521": 1})));
        // The same schema with its keys written in another order is the same entry.
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"properties": {"p20": {"type": "integer"}}, "type": "object"}"#).unwrap();
        assert!(cache.get(&reordered).is_some());
    }
}
