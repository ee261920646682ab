//! Any JSON value as a request body, an id or the server's options: the API readers return
//! what the reference model of tests/support/api_model.rs says, or INVALID_ARGUMENT. The
//! first byte chooses how the rest becomes JSON: parsed as JSON text, or built value by value
//! (every shape, nested, with the keys the readers look at).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mediaserver_rs::sfu::api;
use serde_json::{json, Map, Number, Value};

#[path = "../../tests/support/api_model.rs"]
mod api_model;

use api_model::{check_against_model, check_server_options, model_consume, model_id, model_produce};

const KEYS: &[&str] = &[
    "offer", "constraints", "answers", "answer", "id", "type", "sdp", "audio", "video", "userInfo", "listenIp",
    "announcedIp", "listenIps", "ip", "portRange", "min", "max", "udpPort", "enableTcp", "maxRooms", "maxUsersPerRoom",
    "maxConnections", "offerTimeoutMs", "maxUserInfoBytes", "logLevel", "", "__proto__", "x-unknown",
];
const STRINGS: &[&str] = &["offer", "answer", "v=0\r\n", "127.0.0.1", "::1", "0.0.0.0", "localhost", "1", "", "\u{e9}"];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }
    fn string(&mut self) -> String {
        match self.byte() {
            b if b < 128 => {
                let n = self.byte() as usize;
                String::from_utf8_lossy(self.take(n)).into_owned()
            }
            b if b < 192 => STRINGS[b as usize % STRINGS.len()].to_owned(),
            b => "x".repeat(250 + b as usize % 10),
        }
    }
    fn value(&mut self, depth: u32) -> Value {
        if self.0.is_empty() {
            return Value::Null;
        }
        match self.byte() % 10 {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => json!(self.u64() as i64),
            3 => json!(self.u64()),
            4 => Number::from_f64(f64::from_bits(self.u64())).map_or(Value::Null, Value::Number),
            5 => json!([0.5, 2.0, 1e16, 9_007_199_254_740_992.0, -0.0, 65_536.0][self.byte() as usize % 6]),
            6 | 7 => Value::String(self.string()),
            8 if depth < 6 => {
                let n = self.byte() % 6;
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            9 if depth < 6 => {
                let n = self.byte() % 7;
                let mut map = Map::new();
                for _ in 0..n {
                    let key = match self.byte() {
                        b if b < 200 => KEYS[b as usize % KEYS.len()].to_owned(),
                        _ => self.string(),
                    };
                    let v = self.value(depth + 1);
                    map.insert(key, v);
                }
                Value::Object(map)
            }
            _ => Value::Null,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let value = if mode & 1 == 0 {
        match serde_json::from_slice::<Value>(rest) {
            Ok(v) => v,
            Err(_) => return,
        }
    } else {
        Bytes(rest).value(0)
    };

    check_against_model("parse_id", &value, api::parse_id("id", &value), model_id(&value));
    let model = if value.is_null() { Some(None) } else { model_id(&value).map(Some) };
    check_against_model("parse_optional_id", &value, api::parse_optional_id("id", Some(&value)), model);
    let body_model = match &value {
        Value::Null => Some(Map::new()),
        Value::Object(map) => Some(map.clone()),
        _ => None,
    };
    check_against_model("parse_body", &value, api::parse_body(Some(&value)), body_model);
    if let Ok(body) = api::parse_body(Some(&value)) {
        check_against_model("parse_produce", &value, api::parse_produce(&body), model_produce(&body));
        check_against_model("parse_consume", &value, api::parse_consume(&body), model_consume(&body));
        for max in [0, 16, 16 * 1024] {
            let given = body.get("userInfo").cloned().unwrap_or(Value::Null);
            let model = if given.is_null() {
                Some(json!({}))
            } else {
                (serde_json::to_string(&given).unwrap().len() <= max).then(|| given.clone())
            };
            check_against_model("user_info_of", &value, api::user_info_of(&body, max), model);
        }
    }
    check_server_options(&value, &[]);
    check_server_options(&value, &["logLevel"]);
});
