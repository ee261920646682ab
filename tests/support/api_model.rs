//! A reference model of the API readers' rules (the spec's, written plainly), for the API
//! property tests and the body_parse fuzz target.

#![allow(dead_code)]

use mediaserver_rs::sfu::api::{self, ConsumeAnswer, ConstraintsPatch, ProduceRequest, SessionDescription};
use mediaserver_rs::sfu::error::{SfuError, SfuResult};
use serde_json::{Map, Value};

pub fn model_id(value: &Value) -> Option<String> {
    // An integer a JS number holds exactly: at most 2^53 - 1 in magnitude.
    const MAX_SAFE: u64 = (1 << 53) - 1;
    let id = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                (i.unsigned_abs() <= MAX_SAFE).then(|| i.to_string())?
            } else if let Some(u) = n.as_u64() {
                (u <= MAX_SAFE).then(|| u.to_string())?
            } else {
                let f = n.as_f64()?;
                if f.fract() != 0.0 || f.abs() > MAX_SAFE as f64 {
                    return None;
                }
                (f as i64).to_string()
            }
        }
        _ => return None,
    };
    (!id.is_empty() && id.chars().count() <= 256).then_some(id)
}

pub fn model_description(value: &Value) -> Option<SessionDescription> {
    let obj = value.as_object()?;
    Some(SessionDescription { sdp_type: obj.get("type")?.as_str()?.to_owned(), sdp: obj.get("sdp")?.as_str()?.to_owned() })
}

pub fn absent(value: Option<&Value>) -> bool {
    matches!(value, None | Some(Value::Null))
}

pub fn model_produce(body: &Map<String, Value>) -> Option<ProduceRequest> {
    let offer = match body.get("offer") {
        v if absent(v) => None,
        Some(v) => Some(model_description(v)?),
        None => unreachable!(),
    };
    let constraints = match body.get("constraints") {
        v if absent(v) => None,
        Some(v) => {
            let obj = v.as_object()?;
            let flag = |k: &str| match obj.get(k) {
                v if absent(v) => Some(None),
                Some(Value::Bool(b)) => Some(Some(*b)),
                _ => None,
            };
            let patch = ConstraintsPatch { audio: flag("audio")?, video: flag("video")? };
            if patch.audio.is_none() && patch.video.is_none() {
                return None;
            }
            Some(patch)
        }
        None => unreachable!(),
    };
    (offer.is_some() || constraints.is_some()).then_some(ProduceRequest { offer, constraints })
}

pub fn model_consume(body: &Map<String, Value>) -> Option<Vec<ConsumeAnswer>> {
    let one = |item: &Map<String, Value>| {
        Some(ConsumeAnswer { producer_id: model_id(item.get("id")?)?, answer: model_description(item.get("answer")?)? })
    };
    let answers = match body.get("answers") {
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(|i| i.as_object().and_then(one)).collect::<Option<Vec<_>>>()?
        }
        Some(_) => return None,
        None if body.contains_key("id") || body.contains_key("answer") => vec![one(body)?],
        None => return None,
    };
    let mut ids: Vec<&str> = answers.iter().map(|a| a.producer_id.as_str()).collect();
    ids.sort_unstable();
    ids.windows(2).all(|w| w[0] != w[1]).then_some(answers)
}

/// The result's code, or what it parsed.
pub fn check_against_model<T: PartialEq + std::fmt::Debug>(what: &str, input: &Value, result: SfuResult<T>, model: Option<T>) {
    match (result, model) {
        (Ok(got), Some(want)) => assert_eq!(got, want, "{what}({input})"),
        (Err(SfuError::InvalidArgument(_)), None) => {}
        (Err(e), None) => panic!("{what}({input}) returned {} ({e}), not INVALID_ARGUMENT", e.code()),
        (Err(e), Some(want)) => panic!("{what}({input}) refused ({e}) what the model accepts: {want:?}"),
        (Ok(got), None) => panic!("{what}({input}) accepted what the model refuses: {got:?}"),
    }
}

pub fn invalid_argument_only<T: std::fmt::Debug>(what: &str, input: &Value, result: &SfuResult<T>) {
    if let Err(e) = result {
        assert!(matches!(e, SfuError::InvalidArgument(_)), "{what}({input}) returned {} ({e})", e.code());
    }
}

/// `parse_server_options` on `value`: INVALID_ARGUMENT, or options that say what was given
/// (for the keys this model knows; any key it does not know may be accepted or not).
pub fn check_server_options(value: &Value, extra: &[&str]) {
    let result = api::parse_server_options(Some(value), extra);
    invalid_argument_only("parse_server_options", value, &result);
    let Ok(options) = result else { return };
    let Some(map) = value.as_object() else {
        assert!(value.is_null(), "parse_server_options({value}) accepted a non-object");
        return;
    };
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let u64_of = |k: &str| get(k).map(|v| v.as_u64().unwrap());
    assert!(map.keys().all(|k| !k.starts_with("x-unknown") && !k.is_empty() && k != "__proto__"), "an unknown key was accepted: {value}");
    assert_eq!(options.udp_port.map(u64::from), u64_of("udpPort"), "{value}");
    assert_eq!(options.limits.max_rooms.map(|n| n as u64), u64_of("maxRooms"), "{value}");
    assert_eq!(options.limits.max_users_per_room.map(|n| n as u64), u64_of("maxUsersPerRoom"), "{value}");
    assert_eq!(options.limits.max_connections.map(|n| n as u64), u64_of("maxConnections"), "{value}");
    assert_eq!(options.tcp, get("enableTcp").is_some_and(|v| v.as_bool().unwrap()), "{value}");
    if let Some(range) = get("portRange") {
        let bound = |k: &str| range[k].as_u64().unwrap() as u16;
        assert_eq!(options.port_range, Some((bound("min"), bound("max"))), "{value}");
    } else {
        assert_eq!(options.port_range, None, "{value}");
    }
    if map.contains_key("offerTimeoutMs") {
        assert_eq!(options.offer_timeout.map(|d| d.as_millis() as u64), u64_of("offerTimeoutMs"), "{value}");
    }
    let expected_listen = match (get("listenIp"), get("listenIps"), get("announcedIp")) {
        (Some(_), _, _) => 1,
        (None, Some(Value::Array(items)), _) => items.len(),
        (None, None, Some(_)) => 1,
        _ => 0,
    };
    assert_eq!(options.listen.len(), expected_listen, "{value}");
    if let Some(ip) = get("listenIp") {
        assert_eq!(Some(options.listen[0].ip), ip.as_str().unwrap().parse().ok(), "{value}");
    }
}
