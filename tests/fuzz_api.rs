//! Property tests of the API readers (`api::parse_body`, `parse_id`, `parse_optional_id`,
//! `user_info_of`, `parse_produce`, `parse_consume`, `parse_server_options`): on every JSON
//! value a caller can pass (any shape, nested, near-valid bodies with one field replaced,
//! and JSON texts parsed from bytes and from mutated bodies) they return a result or
//! `INVALID_ARGUMENT`, never panic or another code, and agree with a small reference model of
//! the spec's rules.
//!
//! `cargo test --test fuzz_api` runs a bounded number of cases; `PROPTEST_CASES=200000
//! cargo test --release --test fuzz_api` runs a long session.

use mediaserver_rs::sfu::api;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Number, Value};

#[path = "support/api_model.rs"]
mod api_model;
#[path = "support/config.rs"]
mod config;

use api_model::{check_against_model, check_server_options, model_consume, model_id, model_produce};

// ---------------------------------------------------------------------------------------------
// JSON of every shape

/// Keys the readers look at, and a few they do not.
const KEYS: &[&str] = &[
    "offer", "constraints", "answers", "answer", "id", "type", "sdp", "audio", "video", "userInfo", "roomId", "listenIp",
    "announcedIp", "listenIps", "ip", "portRange", "min", "max", "udpPort", "enableTcp", "maxRooms", "maxUsersPerRoom",
    "maxConnections", "offerTimeoutMs", "maxUserInfoBytes", "logLevel", "", "__proto__", "constructor", "x-unknown",
];

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            0.0, -0.0, 0.5, 1.0, 2.0, -3.0, 1.5, 1e16, -1e16, 1e300, -1e300, 9_007_199_254_740_991.0, 9_007_199_254_740_992.0,
            9_007_199_254_740_993.0, -9_007_199_254_740_992.0, 65_535.0, 65_536.0, f64::MIN_POSITIVE, f64::MAX, f64::MIN,
        ]),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-z0-9]{0,4}",
        2 => prop::sample::select(vec![
            "offer", "answer", "pranswer", "v=0\r\n", "127.0.0.1", "::1", "0.0.0.0", "203.0.113.7", "localhost", "1", "-1",
            "1.5", "", " ", "\u{0}", "null", "true",
        ])
        .prop_map(str::to_owned),
        1 => (250usize..260).prop_map(|n| "x".repeat(n)),
        1 => (250usize..260).prop_map(|n| "\u{e9}".repeat(n)),
        1 => (250usize..260).prop_map(|n| "\u{1f600}".repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(65_535), Just(65_536), Just(40_000)].prop_map(|n| json!(n)),
        float().prop_filter_map("JSON has no NaN or infinity", |f| Number::from_f64(f).map(Value::Number)),
        string().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => string()]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Near-valid request bodies and options: a valid one with some fields replaced by anything.
fn near_valid() -> impl Strategy<Value = Value> {
    let base = prop_oneof![
        Just(json!({"offer": {"type": "offer", "sdp": "v=0\r\n"}})),
        Just(json!({"offer": {"type": "offer", "sdp": "v=0\r\n"}, "constraints": {"audio": true, "video": false}})),
        Just(json!({"constraints": {"video": false}})),
        Just(json!({"id": "p1", "answer": {"type": "answer", "sdp": "v=0\r\n"}})),
        Just(json!({"answers": [{"id": 1, "answer": {"type": "answer", "sdp": "a"}}, {"id": "2", "answer": {"type": "answer", "sdp": "b"}}]})),
        Just(json!({"userInfo": {"name": "x", "n": [1, 2, {"a": null}]}})),
        Just(json!({"listenIp": "127.0.0.1", "announcedIp": "203.0.113.7", "portRange": {"min": 40000, "max": 40099}, "enableTcp": true,
                    "maxRooms": 2, "maxUsersPerRoom": 3, "maxConnections": 4, "offerTimeoutMs": 1500, "maxUserInfoBytes": 100})),
        Just(json!({"listenIps": ["127.0.0.1", {"ip": "127.0.0.2", "announcedIp": "198.51.100.1"}], "udpPort": 0, "offerTimeoutMs": null})),
    ];
    (base, prop::collection::vec((any::<Index>(), any::<Index>(), value(), any::<bool>()), 0..4)).prop_map(|(mut base, edits)| {
        for (at, key_at, replacement, delete) in edits {
            replace_somewhere(&mut base, at, key_at, replacement, delete);
        }
        base
    })
}

/// Replaces (or deletes, or adds) a value in one of the objects or arrays inside `value`.
fn replace_somewhere(value: &mut Value, at: Index, key_at: Index, replacement: Value, delete: bool) {
    /// The paths (indices of children) of every container, depth first.
    fn containers(value: &Value, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if value.is_object() || value.is_array() {
            out.push(path.clone());
        }
        let children: Vec<&Value> = match value {
            Value::Object(map) => map.values().collect(),
            Value::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        for (i, child) in children.into_iter().enumerate() {
            path.push(i);
            containers(child, path, out);
            path.pop();
        }
    }
    let mut all = Vec::new();
    containers(value, &mut Vec::new(), &mut all);
    if all.is_empty() {
        *value = replacement;
        return;
    }
    let mut target = value;
    for &i in &all[at.index(all.len())] {
        target = match target {
            Value::Object(map) => map.values_mut().nth(i).unwrap(),
            Value::Array(items) => &mut items[i],
            _ => unreachable!(),
        };
    }
    match target {
        Value::Object(map) => {
            if map.is_empty() || (!delete && key_at.index(3) == 0) {
                map.insert(KEYS[key_at.index(KEYS.len())].to_owned(), replacement);
            } else {
                let key = map.keys().nth(key_at.index(map.len())).cloned().unwrap();
                if delete {
                    map.remove(&key);
                } else {
                    map.insert(key, replacement);
                }
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                items.push(replacement);
            } else {
                let i = key_at.index(items.len());
                if delete {
                    items.remove(i);
                } else {
                    items[i] = replacement;
                }
            }
        }
        _ => unreachable!(),
    }
}

/// JSON texts: from random bytes, and from valid bodies mutated character by character.
fn parsed_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        // (a text that is not JSON is the string it says, as a body parser would not get here)
        prop::collection::vec(prop_oneof![any::<u8>(), prop::sample::select(b"{}[]\",:-.0123456789eEtrufalsn ".to_vec())], 0..48)
            .prop_map(|b| serde_json::from_slice(&b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned()))),
        (near_valid(), prop::collection::vec((any::<Index>(), prop::sample::select(vec![
            "", "{", "}", "[", "]", ",", ":", "\"", "0", "-", "1e999", "null", "true", "\"x\"", "{}", "[]", "\\u0000", "\"id\":",
        ])), 1..4))
            .prop_map(|(v, edits)| {
                let mut text = serde_json::to_string(&v).unwrap();
                for (at, insert) in edits {
                    let b: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
                    let i = b[at.index(b.len())];
                    text.insert_str(i, insert);
                }
                serde_json::from_str(&text).unwrap_or(v)
            }),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![3 => value(), 3 => near_valid(), 1 => parsed_text()]
}

// ---------------------------------------------------------------------------------------------
// The tests

proptest! {
    #![proptest_config(config::cases(1500))]

    #[test]
    fn ids_follow_the_model(value in any_json()) {
        check_against_model("parse_id", &value, api::parse_id("id", &value), model_id(&value));
        let optional = api::parse_optional_id("id", Some(&value));
        let model = if value.is_null() { Some(None) } else { model_id(&value).map(Some) };
        check_against_model("parse_optional_id", &value, optional, model);
    }

    #[test]
    fn bodies_follow_the_model(value in any_json()) {
        let model = match &value {
            Value::Null => Some(Map::new()),
            Value::Object(map) => Some(map.clone()),
            _ => None,
        };
        check_against_model("parse_body", &value, api::parse_body(Some(&value)), model);
    }

    #[test]
    fn user_info_follows_the_model(value in any_json(), max in prop_oneof![0usize..64, Just(16 * 1024), any::<usize>()]) {
        let body = match value {
            Value::Object(map) if map.contains_key("userInfo") => map,
            other => Map::from_iter([("userInfo".to_owned(), other)]),
        };
        let given = body.get("userInfo").cloned().unwrap_or(Value::Null);
        let model = if given.is_null() {
            Some(json!({}))
        } else {
            (serde_json::to_string(&given).unwrap().len() <= max).then(|| given.clone())
        };
        check_against_model("user_info_of", &Value::Object(body.clone()), api::user_info_of(&body, max), model);
    }

    #[test]
    fn produce_requests_follow_the_model(value in any_json()) {
        let Ok(body) = api::parse_body(Some(&value)) else { return Ok(()) };
        check_against_model("parse_produce", &value, api::parse_produce(&body), model_produce(&body));
    }

    #[test]
    fn consume_requests_follow_the_model(value in any_json()) {
        let Ok(body) = api::parse_body(Some(&value)) else { return Ok(()) };
        check_against_model("parse_consume", &value, api::parse_consume(&body), model_consume(&body));
    }

    /// Options: INVALID_ARGUMENT or options that say what was given.
    #[test]
    fn server_options_are_read_or_invalid_argument(value in any_json(), extra in prop::sample::select(vec![vec![], vec!["logLevel"]])) {
        check_server_options(&value, &extra);
    }

    /// An unknown key anywhere at the top level of the options is refused, whatever its value.
    #[test]
    fn unknown_options_are_refused(value in near_valid(), unknown in "x-unknown[a-zA-Z]{0,6}", v in value()) {
        let mut map = value.as_object().cloned().unwrap_or_default();
        map.insert(unknown, v);
        let options = Value::Object(map);
        let result = api::parse_server_options(Some(&options), &["logLevel"]);
        prop_assert_eq!(result.map(|_| ()).map_err(|e| e.code()), Err("INVALID_ARGUMENT"));
    }
}

#[test]
fn the_models_agree_on_the_spec_examples() {
    for (value, id) in [(json!("abc"), Some("abc")), (json!(1), Some("1")), (json!(2.0), Some("2")), (json!(1.5), None), (json!(""), None), (json!(null), None)] {
        assert_eq!(model_id(&value).as_deref(), id, "{value}");
        check_against_model("parse_id", &value, api::parse_id("id", &value), model_id(&value));
    }
    let body = json!({"answers": [{"id": "1", "answer": {"type": "answer", "sdp": "a"}}, {"id": 1, "answer": {"type": "answer", "sdp": "b"}}]});
    let body = body.as_object().unwrap();
    assert!(model_consume(body).is_none(), "the string and the number 1 are the same producer");
    check_against_model("parse_consume", &json!(body), api::parse_consume(body), model_consume(body));
}
