//! The canonical JSON form of a config, which its hash is taken of. It keeps the config's
//! meaning and nothing else: keys sorted, and every key left out that the config reads the
//! same without, so that a field added later with a default changes no existing form.
//! Hashing itself lives with the config ([`crate::train::config::RunConfig::hash`]).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// The canonical JSON text of `config`: its serde JSON form without every key whose removal
/// leaves an equal config when read back (a field at its default, an unset option), with
/// object keys sorted and numbers printed as serde_json prints them.
pub fn canonical_json<T: Serialize + DeserializeOwned + PartialEq>(config: &T) -> String {
    let mut json = json_of(config);
    let read_back = T::deserialize(&json).expect("a config reads back from its own JSON");
    strip_defaults(&mut json, "", &read_back);
    json.sort_all_objects();
    json.to_string()
}

/// The serde JSON form of `config`, read back from text so that an `f32` holds the value
/// as written (`0.1`, not `0.10000000149011612`).
fn json_of<T: Serialize>(config: &T) -> Value {
    let text = serde_json::to_string(config).expect("a config serialises to JSON");
    serde_json::from_str(&text).expect("serde_json reads its own output")
}

/// Removes from `root`, at JSON pointer `at` and below, every key without which `root`
/// still reads back as `config`. Fields are independent, so keys are tried one at a time
/// and a removed key stays removed.
fn strip_defaults<T: DeserializeOwned + PartialEq>(root: &mut Value, at: &str, config: &T) {
    let keys: Vec<String> = match root.pointer(at) {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => (0..items.len()).map(|i| i.to_string()).collect(),
        _ => return,
    };
    for key in keys {
        if let Some(object) = object_at(root, at) {
            let value = object.remove(&key).expect("a key just listed");
            if T::deserialize(&*root).is_ok_and(|c| c == *config) {
                continue;
            }
            object_at(root, at).expect("the object just edited").insert(key.clone(), value);
        }
        strip_defaults(root, &pointer(at, &key), config);
    }
}

/// The object at JSON pointer `at` in `root`, if that is an object.
fn object_at<'a>(root: &'a mut Value, at: &str) -> Option<&'a mut Map<String, Value>> {
    root.pointer_mut(at).and_then(Value::as_object_mut)
}

/// JSON pointer `at` extended by `key`, escaped as RFC 6901 says.
fn pointer(at: &str, key: &str) -> String {
    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"))
}
