//! The napi layer: JS values in, plain JS objects or `Error`s with a spec `code` out.
//! Everything else lives in [`crate::sfu`].

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use napi::bindgen_prelude::{
    FnArgs, FromNapiValue, Function, FunctionRef, JsObjectValue, JsValue, Object, PromiseRaw, This, ToNapiValue, Unknown,
};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, ValueType};
use napi_derive::napi;
use serde::Serialize;
use serde_json::Value;

use crate::logging::{self, LogRecord, LogSink};
use crate::sfu::api::parse_server_options;
use crate::sfu::error::{SfuError, SfuResult};
use crate::sfu::events::{EventSink, ServerEvent};
use crate::sfu::metrics::ProcessSample;
use crate::sfu::MediaServerCore;

/// A JS function called from runtime threads with one value, given as its JSON text. Weak: it
/// never keeps the Node process alive.
type JsCallback = ThreadsafeFunction<String, (), Unknown<'static>, Status, false, true>;

fn js_callback(listener: &Function<'_, Unknown<'static>, ()>) -> napi::Result<JsCallback> {
    listener
        .build_threadsafe_function::<String>()
        .weak::<true>()
        .build_callback(|ctx: ThreadsafeCallContext<String>| parse_json(&ctx.env, &ctx.value))
}

/// `JSON.parse` of `text`: objects with own properties only (a `__proto__` key included),
/// which a property-by-property conversion cannot give.
fn parse_json<'env>(env: &Env, text: &str) -> napi::Result<Unknown<'env>> {
    let json: Object = env.get_global()?.get_named_property("JSON")?;
    let parse: Function<String, Unknown<'env>> = json.get_named_property("parse")?;
    parse.call(text.to_owned())
}

/// The event names `on()` takes.
const EVENTS: [&str; 6] = ["connectionstatechange", "constraintschange", "roomclosed", "offertimeout", "activespeaker", "audiolevels"];

/// Event listeners, shared between the JS thread (which adds and removes them) and the
/// runtime threads that emit. The lock is held only to copy or edit the list.
#[derive(Default)]
struct Listeners(Mutex<Vec<Listener>>);

struct Listener {
    event: &'static str,
    callback: Arc<JsCallback>,
    /// The function itself, to find it again in `off()`.
    function: FunctionRef<Unknown<'static>, ()>,
}

impl Listeners {
    fn sink(self: &Arc<Self>) -> EventSink {
        let listeners = self.clone();
        Arc::new(move |event: ServerEvent| {
            let callbacks: Vec<Arc<JsCallback>> = listeners
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|l| l.event == event.name())
                .map(|l| l.callback.clone())
                .collect();
            if callbacks.is_empty() {
                return;
            }
            let Ok(json) = serde_json::to_string(&event) else { return };
            for callback in callbacks {
                callback.call(json.clone(), ThreadsafeFunctionCallMode::NonBlocking);
            }
        })
    }
}

/// A WebRTC SFU: rooms of users whose audio and video it forwards. Every method mirrors one
/// endpoint of the media-server API and resolves to the same JSON the HTTP server returns.
#[napi]
pub struct MediaServer {
    core: Arc<MediaServerCore>,
    listeners: Arc<Listeners>,
}

/// A JS `Error` whose `code` is the spec's code.
fn js_error(env: &Env, err: SfuError) -> napi::Error {
    let raw = unsafe { ToNapiValue::to_napi_value(env.raw(), napi::Error::new(err.code(), err.to_string())) };
    match raw {
        Ok(value) => napi::Error::from(unsafe { Unknown::from_raw_unchecked(env.raw(), value) }),
        Err(e) => e,
    }
}

/// Runs a core call on the runtime and settles a promise with its JSON result. The call runs
/// in its own task so that a panic in it becomes an `INTERNAL` rejection.
fn settle<'env, T, F>(env: &'env Env, call: F) -> napi::Result<PromiseRaw<'env, Unknown<'env>>>
where
    T: Serialize + Send + 'static,
    F: Future<Output = SfuResult<T>> + Send + 'static,
{
    let task = async move {
        let result = match tokio::spawn(call).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => Err(SfuError::Internal("internal error: the call panicked".into())),
            Err(join) => Err(SfuError::internal("the call was cancelled", join)),
        };
        Ok(result.and_then(|value| serde_json::to_string(&value).map_err(|e| SfuError::internal("serializing", e))))
    };
    env.spawn_future_with_callback(task, |env, result: SfuResult<String>| match result {
        // `()` (close) resolves to undefined, as `Promise<void>` says.
        Ok(json) if json == "null" => {
            // SAFETY: a plain undefined on this callback's env.
            let raw = unsafe { ToNapiValue::to_napi_value(env.raw(), ())? };
            Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), raw) })
        }
        Ok(json) => parse_json(env, &json),
        Err(e) => Err(js_error(env, e)),
    })
}

fn throw(env: &Env, err: SfuError) -> napi::Error {
    js_error(env, err)
}

/// Drops a JS exception left pending by a call into JS that threw (a hostile getter, a
/// throwing `toJSON`), so that the error we report in its place, with a code, is the one the
/// caller sees.
fn clear_pending_exception(env: &Env) {
    let mut pending = false;
    // SAFETY: plain N-API calls on the env of the current call.
    unsafe {
        if napi::sys::napi_is_exception_pending(env.raw(), &mut pending) == napi::sys::Status::napi_ok && pending {
            let mut exception = std::ptr::null_mut();
            napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut exception);
        }
    }
}

/// A failure of ours to read a JS value, as the caller's `INVALID_ARGUMENT`.
fn unreadable(env: &Env, what: &str, err: napi::Error) -> SfuError {
    clear_pending_exception(env);
    SfuError::InvalidArgument(format!("{what} cannot be read: {}", err.reason))
}

/// An id as the spec reads it: a string, or a finite number. `undefined` is absent and `null`
/// is null (the core decides whether either is allowed). Nothing else is an id: not a Date,
/// not an object with `toJSON`, not `NaN`.
fn id_of(env: &Env, what: &str, value: Option<Unknown<'_>>) -> SfuResult<Option<Value>> {
    let Some(value) = value else { return Ok(None) };
    match value.get_type().map_err(|e| unreadable(env, what, e))? {
        ValueType::Undefined => Ok(None),
        ValueType::Null => Ok(Some(Value::Null)),
        ValueType::String => {
            // SAFETY: the value was just checked to be a string.
            let s = unsafe { String::from_napi_value(env.raw(), value.raw()) }.map_err(|e| unreadable(env, what, e))?;
            Ok(Some(Value::String(s)))
        }
        ValueType::Number => {
            // SAFETY: the value was just checked to be a number.
            let n = unsafe { f64::from_napi_value(env.raw(), value.raw()) }.map_err(|e| unreadable(env, what, e))?;
            serde_json::Number::from_f64(n)
                .map(|n| Some(Value::Number(n)))
                .ok_or_else(|| SfuError::InvalidArgument(format!("{what} must be a string or a finite number, got {n}")))
        }
        other => Err(SfuError::InvalidArgument(format!("{what} must be a string or a number, got {}", type_name(other)))),
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Undefined => "undefined",
        ValueType::Null => "null",
        ValueType::Boolean => "a boolean",
        ValueType::Number => "a number",
        ValueType::String => "a string",
        ValueType::Symbol => "a symbol",
        ValueType::Object => "an object",
        ValueType::Function => "a function",
        ValueType::External => "an external",
        ValueType::BigInt => "a bigint",
        _ => "an unknown type",
    }
}

/// `JSON.stringify`'s replacer for arguments: a number JSON cannot carry (`NaN`, `Infinity`)
/// is an error, not the `null` that `JSON.stringify` would silently make of it.
const FINITE_REPLACER: &str = "(function (key, value) {\n  if (typeof value === 'number' && !Number.isFinite(value)) {\n    throw new RangeError((key === '' ? 'the value' : JSON.stringify(key)) + ' is ' + value + ', which JSON cannot carry')\n  }\n  return value\n})";

/// A body or options argument as the JSON an HTTP client would have sent: `JSON.stringify`
/// semantics, so `toJSON` is honoured (an `RTCSessionDescription` can be passed as is) and
/// functions are dropped, except that a non-finite number is an error. `undefined` is absent.
fn json_of(env: &Env, what: &str, value: Option<Unknown<'_>>) -> SfuResult<Option<Value>> {
    let Some(value) = value else { return Ok(None) };
    match value.get_type().map_err(|e| unreadable(env, what, e))? {
        ValueType::Undefined => return Ok(None),
        ValueType::Null => return Ok(Some(Value::Null)),
        _ => {}
    }
    let text = (|| -> napi::Result<Option<String>> {
        let json: Object = env.get_global()?.get_named_property("JSON")?;
        let stringify: Function<FnArgs<(Unknown, Unknown)>, Option<String>> = json.get_named_property("stringify")?;
        let replacer: Unknown = env.run_script(FINITE_REPLACER)?;
        stringify.call((value, replacer).into())
    })()
    .map_err(|e| unreadable(env, what, e))?
    .ok_or_else(|| SfuError::InvalidArgument(format!("{what} has no JSON form (a function or a symbol?)")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SfuError::InvalidArgument(format!("{what} cannot be read as JSON: {e}")))
}

/// How a method's arguments are read.
#[derive(Clone, Copy)]
enum Arg {
    Id(&'static str),
    Body(&'static str),
}

/// Converts the call's arguments, or settles the promise with the conversion error.
fn args<const N: usize>(env: &Env, values: [(Arg, Option<Unknown<'_>>); N]) -> SfuResult<[Option<Value>; N]> {
    let mut out = [const { None }; N];
    for (slot, (arg, value)) in out.iter_mut().zip(values) {
        *slot = match arg {
            Arg::Id(what) => id_of(env, what, value)?,
            Arg::Body(what) => json_of(env, what, value)?,
        };
    }
    Ok(out)
}

fn required(value: Option<Value>) -> Value {
    value.unwrap_or(Value::Null)
}

/// Runs a synchronous method's body; a panic in it becomes an `INTERNAL` error instead of
/// reaching Node.
fn guarded<T>(env: &Env, body: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "a synchronous call panicked");
            clear_pending_exception(env);
            Err(throw(env, SfuError::Internal(format!("internal error: {what}"))))
        }
    }
}

/// A listener argument of `on`/`off`: the event name and the function, checked.
fn listener_args<'f>(
    env: &Env,
    event: Unknown<'_>,
    listener: Unknown<'f>,
) -> napi::Result<(&'static str, Function<'f, Unknown<'static>, ()>)> {
    let name = match id_of(env, "the event name", Some(event)) {
        Ok(Some(Value::String(name))) => name,
        _ => return Err(throw(env, SfuError::InvalidArgument("the event name must be a string".into()))),
    };
    let Some(event) = EVENTS.iter().find(|e| **e == name) else {
        return Err(throw(
            env,
            SfuError::InvalidArgument(format!("unknown event '{name}' (events: {})", EVENTS.join(", "))),
        ));
    };
    if listener.get_type().map_err(|e| throw(env, unreadable(env, "the listener", e)))? != ValueType::Function {
        return Err(throw(env, SfuError::InvalidArgument("the listener must be a function".into())));
    }
    // SAFETY: checked to be a function just above.
    let function: Function<'f, Unknown<'static>, ()> = unsafe { listener.cast() }.map_err(|e| throw(env, unreadable(env, "the listener", e)))?;
    Ok((event, function))
}

/// The start of this process, seconds since the Unix epoch: read once, so that it does not
/// wobble with the clock from one scrape to the next.
fn process_start_time(uptime: f64) -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        ((now - uptime) * 1000.0).round() / 1000.0
    })
}

/// What Node tells about this process: CPU time (`process.cpuUsage()`), memory
/// (`process.memoryUsage()`) and uptime, read on the JS thread.
fn process_sample(env: &Env) -> napi::Result<ProcessSample> {
    let process: Object = env.get_global()?.get_named_property("process")?;
    let cpu_usage: Function<(), Object> = process.get_named_property("cpuUsage")?;
    let cpu = cpu_usage.apply(process, ())?;
    let memory_usage: Function<(), Object> = process.get_named_property("memoryUsage")?;
    let memory = memory_usage.apply(process, ())?;
    let uptime: Function<(), f64> = process.get_named_property("uptime")?;
    let uptime = uptime.apply(process, ())?;
    let number = |object: &Object, key: &str| -> napi::Result<f64> { object.get_named_property::<f64>(key) };
    let bytes = |key: &str| number(&memory, key).ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64);
    Ok(ProcessSample {
        cpu_user_micros: number(&cpu, "user")?.max(0.0) as u64,
        cpu_system_micros: number(&cpu, "system")?.max(0.0) as u64,
        start_time_seconds: process_start_time(uptime),
        resident_memory_bytes: bytes("rss").unwrap_or(0),
        heap_total_bytes: bytes("heapTotal"),
        heap_used_bytes: bytes("heapUsed"),
        external_memory_bytes: bytes("external"),
        ..Default::default()
    })
}

/// `metrics(options)`: whether to include the process's figures (`{ process: false }` leaves them
/// out). Strict like the server's options: an unknown key is an error.
fn metrics_options(options: Option<Value>) -> SfuResult<bool> {
    match options {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Object(map)) => {
            if let Some(key) = map.keys().find(|k| k.as_str() != "process") {
                return Err(SfuError::InvalidArgument(format!("unknown metrics option '{key}' (options: process)")));
            }
            match map.get("process") {
                None | Some(Value::Null) => Ok(true),
                Some(Value::Bool(process)) => Ok(*process),
                Some(other) => Err(SfuError::InvalidArgument(format!("options.process must be a boolean, got {other}"))),
            }
        }
        Some(other) => Err(SfuError::InvalidArgument(format!("options must be an object, got {other}"))),
    }
}

impl MediaServer {
    fn construct(env: &Env, options: Option<Unknown<'_>>) -> napi::Result<Self> {
        let fail = |e: SfuError| throw(env, e);
        let on_log = match &options {
            Some(o) if o.get_type()? == ValueType::Object => {
                // SAFETY: checked to be an object just above.
                let object: Object = unsafe { o.cast() }.map_err(|e| fail(unreadable(env, "options", e)))?;
                let on_log: Unknown =
                    object.get_named_property("onLog").map_err(|e| fail(unreadable(env, "options.onLog", e)))?;
                match on_log.get_type()? {
                    ValueType::Undefined | ValueType::Null => None,
                    ValueType::Function => {
                        // SAFETY: checked to be a function just above.
                        let function: Function<Unknown<'static>, ()> = unsafe { on_log.cast()? };
                        Some(js_callback(&function)?)
                    }
                    _ => return Err(fail(SfuError::InvalidArgument("onLog must be a function".into()))),
                }
            }
            _ => None,
        };
        let mut json = json_of(env, "options", options).map_err(fail)?;
        // MEDIASERVER_ENGINE and MEDIASERVER_WORKERS pick the engine and the loops when the
        // options do not: a whole suite can be run on either engine, and on any number of loops.
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Value::Object(map) = json.get_or_insert_with(|| Value::Object(Default::default())) {
            let engine = env("MEDIASERVER_ENGINE").filter(|_| !map.contains_key("engine"));
            let loops = engine.as_deref().unwrap_or("loops") == "loops"
                && map.get("engine").is_none_or(|e| e.as_str() == Some("loops"));
            if let Some(engine) = engine {
                map.insert("engine".into(), Value::String(engine));
            }
            // Not with udpPort: one port is one loop.
            let free = !map.contains_key("workers") && map.get("udpPort").is_none_or(Value::is_null);
            if let (Some(workers), true, true) = (env("MEDIASERVER_WORKERS").and_then(|w| w.parse::<u64>().ok()), loops, free) {
                map.insert("workers".into(), Value::from(workers));
            }
        }
        let level = match json.as_ref().and_then(|o| o.get("logLevel")) {
            None | Some(Value::Null) => None,
            Some(Value::String(level)) => Some(level.clone()),
            Some(other) => return Err(fail(SfuError::InvalidArgument(format!("logLevel must be a string, got {other}")))),
        };
        let sink: Option<LogSink> = on_log.map(|callback| {
            Arc::new(move |record: LogRecord| {
                if let Ok(json) = serde_json::to_string(&record) {
                    callback.call(json, ThreadsafeFunctionCallMode::NonBlocking);
                }
            }) as LogSink
        });
        let listeners = Arc::new(Listeners::default());
        let events = listeners.sink();
        let core = parse_server_options(json.as_ref(), &["logLevel", "onLog"])
            .and_then(|options| {
                logging::configure(level.as_deref(), sink)?;
                // Single-port mode binds and spawns its socket task here.
                napi::bindgen_prelude::within_runtime_if_available(|| MediaServerCore::new(options, events))
            })
            .map_err(fail)?;
        Ok(Self { core: Arc::new(core), listeners })
    }
}

#[napi]
impl MediaServer {
    #[napi(constructor, ts_args_type = "options?: MediaServerOptions")]
    pub fn new(env: Env, options: Option<Unknown<'_>>) -> napi::Result<Self> {
        guarded(&env, || Self::construct(&env, options))
    }

    /// Calls `listener` with each event of that name: `connectionstatechange`,
    /// `constraintschange`, `roomclosed`, `offertimeout`. Listeners never keep the process alive.
    #[napi(
        ts_generic_types = "K extends MediaServerEventName",
        ts_args_type = "event: K, listener: (event: Extract<MediaServerEvent, { type: K }>) => void",
        ts_return_type = "this"
    )]
    pub fn on<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        guarded(&env, || {
            let (event, listener) = listener_args(&env, event, listener)?;
            let callback = Arc::new(js_callback(&listener)?);
            let function = listener.create_ref()?;
            self.listeners.0.lock().unwrap_or_else(|e| e.into_inner()).push(Listener { event, callback, function });
            Ok(this.object)
        })
    }

    /// Removes a listener added with `on()` (every registration of it for that event).
    #[napi(
        ts_generic_types = "K extends MediaServerEventName",
        ts_args_type = "event: K, listener: (event: Extract<MediaServerEvent, { type: K }>) => void",
        ts_return_type = "this"
    )]
    pub fn off<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        guarded(&env, || {
            let (event, listener) = listener_args(&env, event, listener)?;
            let mut listeners = self.listeners.0.lock().unwrap_or_else(|e| e.into_inner());
            let mut kept = Vec::with_capacity(listeners.len());
            for l in listeners.drain(..) {
                let same = l.event == event && env.strict_equals(l.function.borrow_back(&env)?, listener)?;
                if !same {
                    kept.push(l);
                }
            }
            *listeners = kept;
            Ok(this.object)
        })
    }

    /// `POST /rooms/:room_id` (or `POST /rooms` without an id: a UUID v4 is generated).
    #[napi(
        ts_args_type = "roomId?: string | number | null, body?: CreateRoomBody",
        ts_return_type = "Promise<CreateRoomResponse>"
    )]
    pub fn create_room<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        body: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Body("body"), body)]);
        settle(env, async move {
            let [room_id, body] = converted?;
            core.create_room(room_id.as_ref(), body.as_ref()).await
        })
    }

    /// `POST /rooms/:room_id/users/:user_id`.
    #[napi(
        ts_args_type = "roomId: string | number, userId: string | number, body?: AddUserBody",
        ts_return_type = "Promise<AddUserResponse>"
    )]
    pub fn add_user<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
        body: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id), (Arg::Body("body"), body)]);
        settle(env, async move {
            let [room_id, user_id, body] = converted?;
            core.add_user(&required(room_id), &required(user_id), body.as_ref()).await
        })
    }

    /// `POST /rooms/:room_id/users/:user_id/produce`.
    #[napi(
        ts_args_type = "roomId: string | number, userId: string | number, body: ProduceBody",
        ts_return_type = "Promise<ProduceResponse>"
    )]
    pub fn produce<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
        body: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id), (Arg::Body("body"), body)]);
        settle(env, async move {
            let [room_id, user_id, body] = converted?;
            core.produce(&required(room_id), &required(user_id), body.as_ref()).await
        })
    }

    /// `POST /rooms/:room_id/users/:user_id/consume`.
    #[napi(
        ts_args_type = "roomId: string | number, userId: string | number, body: ConsumeBody",
        ts_return_type = "Promise<ConsumeResponse>"
    )]
    pub fn consume<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
        body: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id), (Arg::Body("body"), body)]);
        settle(env, async move {
            let [room_id, user_id, body] = converted?;
            core.consume(&required(room_id), &required(user_id), body.as_ref()).await
        })
    }

    /// `DELETE /rooms/:room_id/users/:user_id/produce`.
    #[napi(
        ts_args_type = "roomId: string | number, userId: string | number",
        ts_return_type = "Promise<StopProduceResponse>"
    )]
    pub fn stop_produce<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id)]);
        settle(env, async move {
            let [room_id, user_id] = converted?;
            core.stop_produce(&required(room_id), &required(user_id)).await
        })
    }

    /// `DELETE /rooms/:room_id/users/:user_id`. The last user out deletes the room.
    #[napi(
        ts_args_type = "roomId: string | number, userId: string | number",
        ts_return_type = "Promise<RemoveUserResponse>"
    )]
    pub fn remove_user<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id)]);
        settle(env, async move {
            let [room_id, user_id] = converted?;
            core.remove_user(&required(room_id), &required(user_id)).await
        })
    }

    /// `DELETE /rooms/:room_id`.
    #[napi(ts_args_type = "roomId: string | number", ts_return_type = "Promise<DeleteRoomResponse>")]
    pub fn delete_room<'env>(&self, env: &'env Env, room_id: Option<Unknown<'_>>) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id)]);
        settle(env, async move {
            let [room_id] = converted?;
            core.delete_room(&required(room_id)).await
        })
    }

    /// Per-connection statistics of a room, or only of the connections whose other end is
    /// `userId` (its upstream and the downstreams it consumes).
    #[napi(ts_args_type = "roomId: string | number, userId?: string | number", ts_return_type = "Promise<RoomStats>")]
    pub fn get_stats<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id)]);
        settle(env, async move {
            let [room_id, user_id] = converted?;
            core.get_stats(&required(room_id), user_id.as_ref()).await
        })
    }

    /// What a room holds: its users with their `userInfo` and producers (constraints, codecs,
    /// connection state), and every downstream with its state and whether an offer waits for
    /// its answer. Read only.
    #[napi(ts_args_type = "roomId: string | number", ts_return_type = "Promise<RoomView>")]
    pub fn get_room<'env>(&self, env: &'env Env, room_id: Option<Unknown<'_>>) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [(Arg::Id("roomId"), room_id)]);
        settle(env, async move {
            let [room_id] = converted?;
            core.get_room(&required(room_id)).await
        })
    }

    /// Counts of rooms, users and connections held by this server, and what it forwarded.
    #[napi(ts_return_type = "Promise<ServerStats>")]
    pub fn stats<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        settle(env, async move { core.stats().await })
    }

    /// The server's metrics in the Prometheus text format (version 0.0.4): rooms, users,
    /// connections by direction and state, forwarded packets and bytes, NACKs and PLIs, ports in
    /// use, and the process's CPU and memory (left out with `{ process: false }`).
    #[napi(ts_args_type = "options?: MetricsOptions", ts_return_type = "Promise<string>")]
    pub fn metrics<'env>(&self, env: &'env Env, options: Option<Unknown<'_>>) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let process = json_of(env, "options", options).and_then(metrics_options).and_then(|include| {
            if !include {
                return Ok(None);
            }
            process_sample(env).map(Some).map_err(|e| {
                clear_pending_exception(env);
                SfuError::Internal(format!("reading the process's figures from Node: {}", e.reason))
            })
        });
        settle(env, async move {
            let mut process = process?;
            if let Some(sample) = &mut process {
                sample.read_os();
            }
            core.metrics(process.as_ref()).await
        })
    }

    /// Closes every connection and frees every port. Later calls reject with `SERVER_CLOSED`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        settle(env, async move { core.close().await })
    }
}

