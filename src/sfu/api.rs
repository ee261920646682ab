//! Requests and responses of the media-server API, shaped exactly as the spec's JSON.
//! Parsing is strict about types (wrong shape = `INVALID_ARGUMENT`) and lenient about
//! extra fields, as a JSON HTTP API would be.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{SfuError, SfuResult};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub sdp_type: String,
    pub sdp: String,
}

impl SessionDescription {
    pub fn offer(sdp: String) -> Self {
        Self { sdp_type: "offer".into(), sdp }
    }
    pub fn answer(sdp: String) -> Self {
        Self { sdp_type: "answer".into(), sdp }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    pub audio: bool,
    pub video: bool,
}

impl Constraints {
    pub const NONE: Constraints = Constraints { audio: false, video: false };
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateRoomResponse {
    pub room_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub users: Vec<PeerInfo>,
    #[serde(rename = "userInfo", skip_serializing_if = "Option::is_none")]
    pub user_info: Option<Value>,
}

/// Another user of the room, as `addUser`, `produce`, `stopProduce` and `removeUser` list them.
/// `offer` and `constraints` are present only where the spec puts them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerInfo {
    pub id: String,
    #[serde(rename = "userInfo")]
    pub user_info: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<SessionDescription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddUserResponse {
    pub id: String,
    #[serde(rename = "userInfo")]
    pub user_info: Value,
    pub users: Vec<PeerInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProduceResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<SessionDescription>,
    pub id: String,
    #[serde(rename = "userInfo")]
    pub user_info: Value,
    pub constraints: Constraints,
    pub outbound: Vec<PeerInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumeResponse {
    pub status: &'static str,
}

/// What `setPreferredLayers` asks for: caps on the layers one consumer gets of one producer's
/// video (`None`: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PreferredLayers {
    pub spatial: Option<u8>,
    pub temporal: Option<u8>,
}

/// The layers the server selects for a consumer after `setPreferredLayers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayersResponse {
    pub spatial_layer: u8,
    /// `null`: every temporal layer is forwarded (temporal layers are not selected yet).
    pub temporal_layer: Option<u8>,
}

/// Reads `{ spatialLayer?, temporalLayer? }`: each absent, `null`, or an integer 0–255.
pub fn parse_preferred_layers(body: &Map<String, Value>) -> SfuResult<PreferredLayers> {
    if let Some(key) = body.keys().find(|k| !matches!(k.as_str(), "spatialLayer" | "temporalLayer")) {
        return Err(SfuError::InvalidArgument(format!("unknown field '{key}': the layers are spatialLayer and temporalLayer")));
    }
    let layer = |name: &str| -> SfuResult<Option<u8>> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| SfuError::InvalidArgument(format!("{name} must be an integer from 0 to 255, or null"))),
        }
    };
    Ok(PreferredLayers { spatial: layer("spatialLayer")?, temporal: layer("temporalLayer")? })
}

/// The response of both `stopProduce` (with `constraints`) and `removeUser` (without).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaveResponse {
    pub id: String,
    #[serde(rename = "userInfo")]
    pub user_info: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    pub outbound: Vec<PeerInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeleteRoomResponse {
    pub count: u32,
}

/// Constraints as given: a kind left out keeps its current value (or, with an offer, the
/// value derived from the offer), so `{video: false}` alone mutes video and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConstraintsPatch {
    pub audio: Option<bool>,
    pub video: Option<bool>,
}

impl ConstraintsPatch {
    pub fn apply(self, base: Constraints) -> Constraints {
        Constraints { audio: self.audio.unwrap_or(base.audio), video: self.video.unwrap_or(base.video) }
    }
}

/// What `produce` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceRequest {
    pub offer: Option<SessionDescription>,
    pub constraints: Option<ConstraintsPatch>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeAnswer {
    pub producer_id: String,
    pub answer: SessionDescription,
}

/// An id as the spec allows it: a string, or a number turned into its decimal string.
pub fn parse_id(what: &str, value: &Value) -> SfuResult<String> {
    // A JS number is exact up to 2^53 - 1 (Number.MAX_SAFE_INTEGER); past it two ids could be
    // one number.
    const MAX_SAFE: u64 = (1 << 53) - 1;
    let id = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_u64().is_some_and(|v| v <= MAX_SAFE) || n.as_i64().is_some_and(|v| v.unsigned_abs() <= MAX_SAFE) => {
            n.to_string()
        }
        Value::Number(n) => {
            // 1.0 is the integer 1 in JS; anything fractional is not an id.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() <= MAX_SAFE as f64 => {
                    format!("{}", f as i64)
                }
                _ => {
                    return Err(SfuError::InvalidArgument(format!(
                        "{what} must be a string or an integer of at most 2^53 - 1 in magnitude"
                    )))
                }
            }
        }
        _ => return Err(SfuError::InvalidArgument(format!("{what} must be a string or a number"))),
    };
    if id.is_empty() {
        return Err(SfuError::InvalidArgument(format!("{what} must not be empty")));
    }
    if id.chars().count() > 256 {
        return Err(SfuError::InvalidArgument(format!("{what} is longer than 256 characters")));
    }
    Ok(id)
}

/// An optional id: absent, `null` or `undefined` give `None`.
pub fn parse_optional_id(what: &str, value: Option<&Value>) -> SfuResult<Option<String>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_id(what, v).map(Some),
    }
}

/// A request body: absent or `null` is an empty object; anything but an object is an error.
pub fn parse_body(value: Option<&Value>) -> SfuResult<Map<String, Value>> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(SfuError::InvalidArgument("the body must be an object".into())),
    }
}

/// `userInfo` is any JSON value of at most `max_bytes` serialised; absent or `null` means the
/// default `{}`. The limit matters: every join echoes every other user's `userInfo`, so the
/// bytes a room moves grow with the square of its size.
pub fn user_info_of(body: &Map<String, Value>, max_bytes: usize) -> SfuResult<Value> {
    match body.get("userInfo") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(v) => {
            let size = serialized_len(v);
            if size > max_bytes {
                return Err(SfuError::InvalidArgument(format!(
                    "userInfo is {size} bytes as JSON, over the limit of {max_bytes} (option maxUserInfoBytes)"
                )));
            }
            Ok(v.clone())
        }
    }
}

/// The length of `value` as compact JSON, without building the text.
fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

fn parse_description(what: &str, value: &Value) -> SfuResult<SessionDescription> {
    let obj = value
        .as_object()
        .ok_or_else(|| SfuError::InvalidArgument(format!("{what} must be an object {{type, sdp}}")))?;
    let sdp_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| SfuError::InvalidArgument(format!("{what}.type must be a string")))?;
    let sdp = obj
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| SfuError::InvalidArgument(format!("{what}.sdp must be a string")))?;
    Ok(SessionDescription { sdp_type: sdp_type.to_owned(), sdp: sdp.to_owned() })
}

fn parse_constraints(value: &Value) -> SfuResult<ConstraintsPatch> {
    let obj = value
        .as_object()
        .ok_or_else(|| SfuError::InvalidArgument("constraints must be an object {audio, video}".into()))?;
    let flag = |kind: &str| -> SfuResult<Option<bool>> {
        match obj.get(kind) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            _ => Err(SfuError::InvalidArgument(format!("constraints.{kind} must be a boolean"))),
        }
    };
    let patch = ConstraintsPatch { audio: flag("audio")?, video: flag("video")? };
    if patch.audio.is_none() && patch.video.is_none() {
        return Err(SfuError::InvalidArgument("constraints must name audio, video or both".into()));
    }
    Ok(patch)
}

pub fn parse_produce(body: &Map<String, Value>) -> SfuResult<ProduceRequest> {
    let offer = match body.get("offer") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_description("offer", v)?),
    };
    let constraints = match body.get("constraints") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_constraints(v)?),
    };
    if offer.is_none() && constraints.is_none() {
        return Err(SfuError::InvalidArgument("produce needs an offer, constraints, or both".into()));
    }
    Ok(ProduceRequest { offer, constraints })
}

pub fn parse_consume(body: &Map<String, Value>) -> SfuResult<Vec<ConsumeAnswer>> {
    let one = |item: &Map<String, Value>| -> SfuResult<ConsumeAnswer> {
        let id = item
            .get("id")
            .ok_or_else(|| SfuError::InvalidArgument("each answer needs the producer's id".into()))?;
        let answer = item
            .get("answer")
            .ok_or_else(|| SfuError::InvalidArgument("each item needs an answer".into()))?;
        Ok(ConsumeAnswer { producer_id: parse_id("id", id)?, answer: parse_description("answer", answer)? })
    };
    match body.get("answers") {
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(SfuError::InvalidArgument("answers must not be empty".into()));
            }
            let answers = items
                .iter()
                .map(|item| {
                    item.as_object()
                        .ok_or_else(|| SfuError::InvalidArgument("answers[] items must be objects".into()))
                        .and_then(one)
                })
                .collect::<SfuResult<Vec<_>>>()?;
            let mut seen = std::collections::HashSet::new();
            if !answers.iter().all(|a| seen.insert(a.producer_id.as_str())) {
                return Err(SfuError::InvalidArgument("answers name the same producer twice".into()));
            }
            Ok(answers)
        }
        Some(_) => Err(SfuError::InvalidArgument("answers must be an array".into())),
        None if body.contains_key("id") || body.contains_key("answer") => Ok(vec![one(body)?]),
        None => Err(SfuError::InvalidArgument("consume needs {id, answer} or {answers: [...]}".into())),
    }
}

/// The options of `new MediaServer(options)` that the core reads, checked strictly: a wrong
/// type or an unknown key is an error (a typo would otherwise be silently ignored).
/// `extra_keys` are keys the caller handles itself (logging).
pub fn parse_server_options(value: Option<&Value>, extra_keys: &[&str]) -> SfuResult<super::ServerOptions> {
    use super::peer::ListenAddr;
    use std::net::IpAddr;
    use std::time::Duration;

    const KEYS: [&str; 14] = [
        "listenIp",
        "announcedIp",
        "listenIps",
        "portRange",
        "udpPort",
        "enableTcp",
        "maxRooms",
        "maxUsersPerRoom",
        "maxConnections",
        "offerTimeoutMs",
        "maxUserInfoBytes",
        "engine",
        "workers",
        "audioLevelIntervalMs",
    ];
    let mut options = super::ServerOptions::default();
    let map = match value {
        None | Some(Value::Null) => return Ok(options),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(SfuError::InvalidArgument("options must be an object".into())),
    };
    if let Some(unknown) = map.keys().find(|k| !KEYS.contains(&k.as_str()) && !extra_keys.contains(&k.as_str())) {
        return Err(SfuError::InvalidArgument(format!(
            "unknown option '{unknown}' (known: {})",
            KEYS.iter().chain(extra_keys).copied().collect::<Vec<_>>().join(", ")
        )));
    }
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    let ip = |what: &str, v: &Value| -> SfuResult<IpAddr> {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SfuError::InvalidArgument(format!("{what} must be an IP address, got {v}")))
    };
    let count = |key: &str| -> SfuResult<Option<u64>> {
        get(key)
            .map(|v| v.as_u64().ok_or_else(|| SfuError::InvalidArgument(format!("{key} must be a non-negative integer, got {v}"))))
            .transpose()
    };
    let port = |what: &str, v: &Value| -> SfuResult<u16> {
        v.as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| SfuError::InvalidArgument(format!("{what} must be a port number (0-65535), got {v}")))
    };

    let announced = get("announcedIp").map(|v| ip("announcedIp", v)).transpose()?;
    match (get("listenIp"), get("listenIps")) {
        (Some(_), Some(_)) => {
            return Err(SfuError::InvalidArgument("give listenIp or listenIps, not both".into()));
        }
        (Some(v), None) => options.listen.push(ListenAddr { ip: ip("listenIp", v)?, announced_ip: announced }),
        (None, Some(Value::Array(items))) => {
            if items.is_empty() {
                return Err(SfuError::InvalidArgument("listenIps must not be empty".into()));
            }
            for (i, item) in items.iter().enumerate() {
                let what = format!("listenIps[{i}]");
                options.listen.push(match item {
                    Value::String(_) => ListenAddr { ip: ip(&what, item)?, announced_ip: announced },
                    Value::Object(o) => ListenAddr {
                        ip: ip(&format!("{what}.ip"), o.get("ip").unwrap_or(&Value::Null))?,
                        announced_ip: match o.get("announcedIp").filter(|v| !v.is_null()) {
                            Some(v) => Some(ip(&format!("{what}.announcedIp"), v)?),
                            None => announced,
                        },
                    },
                    _ => return Err(SfuError::InvalidArgument(format!("{what} must be an IP or {{ip, announcedIp?}}"))),
                });
            }
        }
        (None, Some(v)) => return Err(SfuError::InvalidArgument(format!("listenIps must be an array, got {v}"))),
        (None, None) => {
            if announced.is_some() {
                // Every interface, announced as one address.
                options.listen.push(ListenAddr { ip: IpAddr::from([0, 0, 0, 0]), announced_ip: announced });
            }
        }
    }
    if let Some(range) = get("portRange") {
        let r = range
            .as_object()
            .ok_or_else(|| SfuError::InvalidArgument(format!("portRange must be {{min, max}}, got {range}")))?;
        let bound = |k: &str| port(&format!("portRange.{k}"), r.get(k).unwrap_or(&Value::Null));
        options.port_range = Some((bound("min")?, bound("max")?));
    }
    options.udp_port = get("udpPort").map(|v| port("udpPort", v)).transpose()?;
    if let Some(v) = get("enableTcp") {
        options.tcp = v.as_bool().ok_or_else(|| SfuError::InvalidArgument(format!("enableTcp must be a boolean, got {v}")))?;
    }
    let limit = |key: &str| count(key).map(|n| n.map(|n| n as usize));
    options.limits = super::Limits {
        max_rooms: limit("maxRooms")?,
        max_users_per_room: limit("maxUsersPerRoom")?,
        max_connections: limit("maxConnections")?,
    };
    if let Some(max) = count("maxUserInfoBytes")? {
        options.max_user_info_bytes = usize::try_from(max).unwrap_or(usize::MAX);
    }
    if let Some(ms) = count("audioLevelIntervalMs")? {
        if !(20..=60_000).contains(&ms) {
            return Err(SfuError::InvalidArgument(format!("audioLevelIntervalMs must be 20 to 60000, got {ms}")));
        }
        options.audio_level_interval = Some(Duration::from_millis(ms));
    }
    let workers = count("workers")?;
    match get("engine").map(|v| v.as_str()) {
        Some(Some("tasks")) => {
            if workers.is_some() {
                return Err(SfuError::InvalidArgument("workers is an option of engine 'loops'".into()));
            }
            options.engine = None;
        }
        None | Some(Some("loops")) => {
            let workers = match (workers, options.udp_port) {
                (Some(0), _) => return Err(SfuError::InvalidArgument("workers must be at least 1".into())),
                // One port is one socket, so one loop (steering a shared port to several loops
                // is not built yet).
                (Some(n), Some(_)) if n > 1 => {
                    return Err(SfuError::InvalidArgument("engine 'loops' with udpPort runs one loop (workers: 1)".into()))
                }
                (_, Some(_)) => 1,
                (Some(n), None) => n as usize,
                (None, None) => super::default_workers(),
            };
            options.engine = Some(workers);
        }
        Some(_) => return Err(SfuError::InvalidArgument("engine must be 'tasks' or 'loops'".into())),
    }
    if map.contains_key("offerTimeoutMs") {
        // null: offers wait forever.
        options.offer_timeout = count("offerTimeoutMs")?.map(Duration::from_millis);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ids_accept_strings_and_integers_only() {
        assert_eq!(parse_id("roomId", &json!("abc")).unwrap(), "abc");
        assert_eq!(parse_id("roomId", &json!(1)).unwrap(), "1");
        assert_eq!(parse_id("roomId", &json!(-3)).unwrap(), "-3");
        assert_eq!(parse_id("roomId", &json!(2.0)).unwrap(), "2");
        assert_eq!(parse_id("roomId", &json!(9007199254740991u64)).unwrap(), "9007199254740991");
        assert_eq!(parse_id("roomId", &json!(9007199254740991.0)).unwrap(), "9007199254740991");
        for bad in [json!(1.5), json!({}), json!([]), json!(true), json!(""), json!(null), json!(9007199254740992u64), json!(9007199254740992.0), json!(-9007199254740992i64)] {
            assert_eq!(parse_id("roomId", &bad).unwrap_err().code(), "INVALID_ARGUMENT", "{bad}");
        }
        assert_eq!(parse_optional_id("roomId", Some(&json!(null))).unwrap(), None);
        assert_eq!(parse_optional_id("roomId", None).unwrap(), None);
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(parse_body(None).unwrap().is_empty());
        assert!(parse_body(Some(&json!(null))).unwrap().is_empty());
        assert_eq!(parse_body(Some(&json!("x"))).unwrap_err().code(), "INVALID_ARGUMENT");
        assert_eq!(parse_body(Some(&json!([1]))).unwrap_err().code(), "INVALID_ARGUMENT");
    }

    #[test]
    fn user_info_defaults_to_empty_object_and_is_kept_untouched() {
        assert_eq!(user_info_of(&Map::new(), 16).unwrap(), json!({}));
        let info = json!({"contactId": 11, "nested": [1, {"a": null}]});
        assert_eq!(user_info_of(&obj(json!({ "userInfo": info.clone() })), 1024).unwrap(), info);
        assert_eq!(user_info_of(&obj(json!({ "userInfo": 5 })), 1024).unwrap(), json!(5));
    }

    #[test]
    fn user_info_over_the_limit_is_refused() {
        let info = json!({"name": "\u{e9}\u{e9}"});
        let exact = serde_json::to_string(&info).unwrap().len();
        assert_eq!(user_info_of(&obj(json!({ "userInfo": info.clone() })), exact).unwrap(), info);
        let err = user_info_of(&obj(json!({ "userInfo": info })), exact - 1).unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        assert!(err.to_string().contains("maxUserInfoBytes"), "{err}");
    }

    #[test]
    fn produce_needs_offer_or_constraints() {
        assert_eq!(parse_produce(&Map::new()).unwrap_err().code(), "INVALID_ARGUMENT");
        let r = parse_produce(&obj(json!({"constraints": {"audio": true, "video": false}}))).unwrap();
        assert_eq!(r.constraints, Some(ConstraintsPatch { audio: Some(true), video: Some(false) }));
        let partial = parse_produce(&obj(json!({"constraints": {"video": false}}))).unwrap().constraints.unwrap();
        assert_eq!(partial.apply(Constraints { audio: true, video: true }), Constraints { audio: true, video: false });
        assert!(r.offer.is_none());
        let r = parse_produce(&obj(json!({"offer": {"type": "offer", "sdp": "v=0"}}))).unwrap();
        assert_eq!(r.offer.unwrap().sdp, "v=0");
        for bad in [
            json!({"constraints": {"audio": 1, "video": true}}),
            json!({"constraints": {}}),
            json!({"constraints": {"video": "no"}}),
            json!({"constraints": true}),
            json!({"offer": "v=0"}),
            json!({"offer": {"type": "offer"}}),
        ] {
            assert_eq!(parse_produce(&obj(bad.clone())).unwrap_err().code(), "INVALID_ARGUMENT", "{bad}");
        }
    }

    #[test]
    fn consume_takes_one_answer_or_a_list() {
        let one = parse_consume(&obj(json!({"id": 1, "answer": {"type": "answer", "sdp": "s"}}))).unwrap();
        assert_eq!(one, vec![ConsumeAnswer { producer_id: "1".into(), answer: SessionDescription::answer("s".into()) }]);
        let many = parse_consume(&obj(json!({"answers": [
            {"id": "1", "answer": {"type": "answer", "sdp": "a"}},
            {"id": "2", "answer": {"type": "answer", "sdp": "b"}}
        ]})))
        .unwrap();
        assert_eq!(many.len(), 2);
        for bad in [
            json!({}),
            json!({"answers": []}),
            json!({"answers": {}}),
            json!({"id": "1"}),
            json!({"answer": {"type": "answer", "sdp": "a"}}),
            json!({"answers": [{"id": "1", "answer": {"type": "answer", "sdp": "a"}}, {"id": "1", "answer": {"type": "answer", "sdp": "b"}}]}),
        ] {
            assert_eq!(parse_consume(&obj(bad.clone())).unwrap_err().code(), "INVALID_ARGUMENT", "{bad}");
        }
    }

    #[test]
    fn server_options_are_read_strictly() {
        use crate::sfu::peer::ListenAddr;
        let o = parse_server_options(None, &[]).unwrap();
        assert!(o.listen.is_empty() && o.port_range.is_none() && !o.tcp);
        assert_eq!(o.offer_timeout, Some(crate::sfu::DEFAULT_OFFER_TIMEOUT));
        let o = parse_server_options(
            Some(&json!({"listenIp": "127.0.0.1", "announcedIp": "203.0.113.7", "portRange": {"min": 40000, "max": 40099},
                         "enableTcp": true, "maxRooms": 2, "maxUsersPerRoom": 3, "maxConnections": 4, "offerTimeoutMs": 1500})),
            &[],
        )
        .unwrap();
        assert_eq!(o.listen, vec![ListenAddr { ip: "127.0.0.1".parse().unwrap(), announced_ip: Some("203.0.113.7".parse().unwrap()) }]);
        assert_eq!((o.port_range, o.tcp), (Some((40000, 40099)), true));
        assert_eq!((o.limits.max_rooms, o.limits.max_users_per_room, o.limits.max_connections), (Some(2), Some(3), Some(4)));
        assert_eq!(o.offer_timeout, Some(std::time::Duration::from_millis(1500)));
        let o = parse_server_options(
            Some(&json!({"listenIps": ["127.0.0.1", {"ip": "127.0.0.2", "announcedIp": "198.51.100.1"}], "udpPort": 0, "offerTimeoutMs": null})),
            &[],
        )
        .unwrap();
        assert_eq!(o.listen.len(), 2);
        assert_eq!(o.listen[1].announced_ip, Some("198.51.100.1".parse().unwrap()));
        assert_eq!((o.udp_port, o.offer_timeout), (Some(0), None));
        let o = parse_server_options(Some(&json!({"announcedIp": "203.0.113.7"})), &[]).unwrap();
        assert_eq!(o.listen[0].ip.to_string(), "0.0.0.0", "announcedIp alone: every interface, announced");
        assert!(parse_server_options(Some(&json!({"logLevel": "debug"})), &["logLevel"]).is_ok());
        for bad in [
            json!("x"),
            json!({"listenIp": "localhost"}),
            json!({"listenIp": "127.0.0.1", "listenIps": ["127.0.0.1"]}),
            json!({"listenIps": []}),
            json!({"listenIps": [5]}),
            json!({"portRange": {"min": 1}}),
            json!({"portRange": {"min": 1, "max": 70000}}),
            json!({"udpPort": -1}),
            json!({"enableTcp": "yes"}),
            json!({"maxRooms": 1.5}),
            json!({"offerTimeoutMs": "30s"}),
            json!({"listenip": "127.0.0.1"}),
            json!({"logLevel": "debug"}),
        ] {
            assert_eq!(parse_server_options(Some(&bad), &[]).unwrap_err().code(), "INVALID_ARGUMENT", "{bad}");
        }
    }

    #[test]
    fn responses_serialize_to_the_spec_shapes() {
        let created = CreateRoomResponse { room_id: "r".into(), user_id: None, users: vec![], user_info: None };
        assert_eq!(serde_json::to_value(&created).unwrap(), json!({"room_id": "r", "users": []}));
        let created = CreateRoomResponse {
            room_id: "r".into(),
            user_id: Some("1".into()),
            users: vec![],
            user_info: Some(json!({"contactId": 11})),
        };
        assert_eq!(
            serde_json::to_value(&created).unwrap(),
            json!({"room_id": "r", "user_id": "1", "users": [], "userInfo": {"contactId": 11}})
        );
        let left = LeaveResponse {
            id: "1".into(),
            user_info: json!({}),
            constraints: Some(Constraints::NONE),
            outbound: vec![PeerInfo { id: "2".into(), user_info: json!({}), offer: None, constraints: None }],
        };
        assert_eq!(
            serde_json::to_value(&left).unwrap(),
            json!({"id": "1", "userInfo": {}, "constraints": {"audio": false, "video": false}, "outbound": [{"id": "2", "userInfo": {}}]})
        );
    }
}
