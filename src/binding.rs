//! The napi layer: JS values in, plain JS objects or `Error`s with a spec `code` out.
//! Everything else lives in [`crate::sfu`].

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

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

/// The event names the listener methods take. The server emits all but the last; `error` is
/// accepted and never emitted, so that Node's `events.once(server, name)` and
/// `events.on(server, name)`, which listen for `error` on any emitter, work.
const EVENTS: [&str; 8] =
    ["connectionstatechange", "constraintschange", "roomclosed", "offertimeout", "activespeaker", "audiolevels", "layerschange", "error"];

/// Delivers events on the JS thread: one weak threadsafe function per server (it never keeps
/// the process alive), called with the event's index in `EVENTS` and its JSON text.
type Dispatcher = ThreadsafeFunction<FnArgs<(u32, String)>, (), (), Status, false, true>;

/// Event listeners, with `EventEmitter`'s rules: in the order they were added, a function may
/// be added more than once, `once` listeners are removed before they are called.
#[derive(Default)]
struct Listeners {
    /// Added, removed and read on the JS thread only; behind a lock because the dispatcher, a
    /// `Send` value, holds it too.
    list: Mutex<Vec<Listener>>,
    /// Listeners per event, for the runtime threads: an event nobody listens to is not even
    /// serialised.
    counts: [AtomicUsize; EVENTS.len()],
}

struct Listener {
    event: usize,
    function: FunctionRef<Unknown<'static>, Unknown<'static>>,
    once: bool,
}

impl Listeners {
    fn lock(&self) -> MutexGuard<'_, Vec<Listener>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recount(&self, list: &[Listener]) {
        for (event, count) in self.counts.iter().enumerate() {
            count.store(list.iter().filter(|l| l.event == event).count(), Ordering::Release);
        }
    }

    fn add(&self, event: usize, function: &Function<'_, Unknown<'static>, Unknown<'static>>, once: bool) -> napi::Result<()> {
        let function = function.create_ref()?;
        let mut list = self.lock();
        list.push(Listener { event, function, once });
        self.recount(&list);
        Ok(())
    }

    /// Removes the most recent registration of `function` for `event`, as
    /// `EventEmitter.removeListener` does.
    fn remove(&self, env: &Env, event: usize, function: Unknown<'_>) -> napi::Result<()> {
        let mut list = self.lock();
        let mut found = None;
        for (i, l) in list.iter().enumerate().rev() {
            if l.event == event && env.strict_equals(l.function.borrow_back(env)?, function)? {
                found = Some(i);
                break;
            }
        }
        if let Some(i) = found {
            // Dropped on this, the JS thread.
            drop(list.remove(i));
            self.recount(&list);
        }
        Ok(())
    }

    /// The sink the core emits into, from any thread.
    fn sink(self: &Arc<Self>, dispatcher: Dispatcher) -> EventSink {
        let listeners = self.clone();
        Arc::new(move |event: ServerEvent| {
            let Some(index) = EVENTS.iter().position(|e| *e == event.name()) else { return };
            if listeners.counts[index].load(Ordering::Acquire) == 0 {
                return;
            }
            let Ok(json) = serde_json::to_string(&event) else { return };
            dispatcher.call((index as u32, json).into(), ThreadsafeFunctionCallMode::NonBlocking);
        })
    }

    /// Calls the listeners of `event` registered now, on the JS thread, each with the same
    /// object. A listener that throws does not stop the others; what it threw is raised as an
    /// uncaught exception (`process.on('uncaughtException')`), as a throw from a listener of
    /// any event Node emits from I/O is.
    fn deliver(&self, env: &Env, event: usize, json: &str) {
        let functions: Vec<Function<'_, Unknown<'static>, Unknown<'static>>> = {
            let mut list = self.lock();
            let mut functions = Vec::new();
            list.retain(|l| {
                if l.event != event {
                    return true;
                }
                if let Ok(function) = l.function.borrow_back(env) {
                    functions.push(function);
                }
                !l.once
            });
            self.recount(&list);
            functions
        };
        if functions.is_empty() {
            return;
        }
        let Ok(value) = parse_json(env, json) else {
            clear_pending_exception(env);
            return;
        };
        for function in functions {
            // SAFETY: plain N-API calls on the JS thread, with values of this callback's scope.
            unsafe {
                let (env, mut this, mut result) = (env.raw(), std::ptr::null_mut(), std::ptr::null_mut());
                napi::sys::napi_get_undefined(env, &mut this);
                let args = [value.raw()];
                let status = napi::sys::napi_call_function(env, this, function.raw(), 1, args.as_ptr(), &mut result);
                if status == napi::sys::Status::napi_pending_exception {
                    let mut thrown = std::ptr::null_mut();
                    napi::sys::napi_get_and_clear_last_exception(env, &mut thrown);
                    napi::sys::napi_fatal_exception(env, thrown);
                }
            }
        }
    }
}

/// The dispatcher of a new server's events: a function that does nothing, wrapped in a weak
/// threadsafe function whose callback does the delivering (on the JS thread, with an `Env`).
fn dispatcher(env: &Env, listeners: &Arc<Listeners>) -> napi::Result<Dispatcher> {
    let listeners = listeners.clone();
    let noop: Function<(), ()> = env.create_function_from_closure("deliverMediaServerEvents", |_| Ok(()))?;
    noop.build_threadsafe_function::<FnArgs<(u32, String)>>().weak::<true>().build_callback(
        move |ctx: ThreadsafeCallContext<FnArgs<(u32, String)>>| {
            let (event, json) = ctx.value.data;
            listeners.deliver(&ctx.env, event as usize, &json);
            Ok(())
        },
    )
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

/// An event name argument, checked: its index in `EVENTS`.
fn event_arg(env: &Env, event: Unknown<'_>) -> napi::Result<usize> {
    let name = match id_of(env, "the event name", Some(event)) {
        Ok(Some(Value::String(name))) => name,
        _ => return Err(throw(env, SfuError::InvalidArgument("the event name must be a string".into()))),
    };
    EVENTS.iter().position(|e| *e == name).ok_or_else(|| {
        throw(env, SfuError::InvalidArgument(format!("unknown event '{name}' (events: {})", EVENTS.join(", "))))
    })
}

/// A listener argument: a function.
fn function_arg<'f>(env: &Env, listener: Unknown<'f>) -> napi::Result<Function<'f, Unknown<'static>, Unknown<'static>>> {
    if listener.get_type().map_err(|e| throw(env, unreadable(env, "the listener", e)))? != ValueType::Function {
        return Err(throw(env, SfuError::InvalidArgument("the listener must be a function".into())));
    }
    // SAFETY: checked to be a function just above.
    unsafe { listener.cast() }.map_err(|e| throw(env, unreadable(env, "the listener", e)))
}

/// The arguments of `on`/`once`/`off`: the event name and the function, checked.
fn listener_args<'f>(
    env: &Env,
    event: Unknown<'_>,
    listener: Unknown<'f>,
) -> napi::Result<(usize, Function<'f, Unknown<'static>, Unknown<'static>>)> {
    let event = event_arg(env, event)?;
    Ok((event, function_arg(env, listener)?))
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
    fn add_listener<'a>(&self, env: &Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>, once: bool) -> napi::Result<Object<'a>> {
        guarded(env, || {
            let (event, listener) = listener_args(env, event, listener)?;
            self.listeners.add(event, &listener, once)?;
            Ok(this.object)
        })
    }

    fn remove_listener<'a>(&self, env: &Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        guarded(env, || {
            let (event, listener) = listener_args(env, event, listener)?;
            self.listeners.remove(env, event, listener.to_unknown())?;
            Ok(this.object)
        })
    }

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
        let variable = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Value::Object(map) = json.get_or_insert_with(|| Value::Object(Default::default())) {
            let engine = variable("MEDIASERVER_ENGINE").filter(|_| !map.contains_key("engine"));
            let loops = engine.as_deref().unwrap_or("loops") == "loops"
                && map.get("engine").is_none_or(|e| e.as_str() == Some("loops"));
            if let Some(engine) = engine {
                map.insert("engine".into(), Value::String(engine));
            }
            // Not with udpPort: one port is one loop.
            let free = !map.contains_key("workers") && map.get("udpPort").is_none_or(Value::is_null);
            if let (Some(workers), true, true) = (variable("MEDIASERVER_WORKERS").and_then(|w| w.parse::<u64>().ok()), loops, free) {
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
        let events = listeners.sink(dispatcher(env, &listeners)?);
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

    /// Calls `listener` with each event of that name from now on: `connectionstatechange`,
    /// `constraintschange`, `roomclosed`, `offertimeout`, `activespeaker`, `audiolevels`, `layerschange` (`error`
    /// is accepted and never emitted).
    /// As `EventEmitter.on`: the same function added twice is called twice, listeners are called
    /// in the order they were added, and a listener that throws is an uncaught exception.
    /// Listeners never keep the process alive.
    #[napi(
        ts_generic_types = "K extends MediaServerEventName | 'error'",
        ts_args_type = "event: K, listener: MediaServerListener<K>",
        ts_return_type = "this"
    )]
    pub fn on<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        self.add_listener(&env, this, event, listener, false)
    }

    /// The same as `on()`.
    #[napi(
        js_name = "addListener",
        ts_generic_types = "K extends MediaServerEventName | 'error'",
        ts_args_type = "event: K, listener: MediaServerListener<K>",
        ts_return_type = "this"
    )]
    pub fn add_listener_js<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        self.add_listener(&env, this, event, listener, false)
    }

    /// Calls `listener` with the next event of that name only: it is removed before it is called.
    #[napi(
        ts_generic_types = "K extends MediaServerEventName | 'error'",
        ts_args_type = "event: K, listener: MediaServerListener<K>",
        ts_return_type = "this"
    )]
    pub fn once<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        self.add_listener(&env, this, event, listener, true)
    }

    /// Removes a listener added with `on()` or `once()`: the most recent registration of that
    /// function for that event, as `EventEmitter.off` does. It is not called again, not even for
    /// an event already on its way.
    #[napi(
        ts_generic_types = "K extends MediaServerEventName | 'error'",
        ts_args_type = "event: K, listener: MediaServerListener<K>",
        ts_return_type = "this"
    )]
    pub fn off<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        self.remove_listener(&env, this, event, listener)
    }

    /// The same as `off()`.
    #[napi(
        js_name = "removeListener",
        ts_generic_types = "K extends MediaServerEventName | 'error'",
        ts_args_type = "event: K, listener: MediaServerListener<K>",
        ts_return_type = "this"
    )]
    pub fn remove_listener_js<'a>(&self, env: Env, this: This<'a>, event: Unknown<'_>, listener: Unknown<'_>) -> napi::Result<Object<'a>> {
        self.remove_listener(&env, this, event, listener)
    }

    /// Removes every listener of `event`, or of every event without one.
    #[napi(ts_args_type = "event?: MediaServerEventName | 'error'", ts_return_type = "this")]
    pub fn remove_all_listeners<'a>(&self, env: Env, this: This<'a>, event: Option<Unknown<'_>>) -> napi::Result<Object<'a>> {
        guarded(&env, || {
            let event = match event {
                Some(event) if event.get_type()? != ValueType::Undefined => Some(event_arg(&env, event)?),
                _ => None,
            };
            let removed: Vec<Listener> = {
                let mut list = self.listeners.lock();
                let (removed, kept) = list.drain(..).partition(|l| event.is_none_or(|e| l.event == e));
                *list = kept;
                self.listeners.recount(&list);
                removed
            };
            // Dropped on this, the JS thread, once the lock is released.
            drop(removed);
            Ok(this.object)
        })
    }

    /// How many listeners `event` has; with `listener`, how many times that function is one of
    /// them.
    #[napi(ts_args_type = "event: MediaServerEventName | 'error', listener?: (...args: any[]) => void")]
    pub fn listener_count(&self, env: Env, event: Unknown<'_>, listener: Option<Unknown<'_>>) -> napi::Result<u32> {
        guarded(&env, || {
            let event = event_arg(&env, event)?;
            let listener = match listener {
                Some(l) if l.get_type()? != ValueType::Undefined => Some(function_arg(&env, l)?.to_unknown()),
                _ => None,
            };
            let list = self.listeners.lock();
            let mut count = 0;
            for l in list.iter().filter(|l| l.event == event) {
                if let Some(listener) = listener {
                    if !env.strict_equals(l.function.borrow_back(&env)?, listener)? {
                        continue;
                    }
                }
                count += 1;
            }
            Ok(count)
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

    /// Caps the simulcast layers consumer `userId` gets of producer `producerId`'s video
    /// (`PUT /rooms/:room_id/users/:user_id/layers/:producer_id`). Resolves to the layers the
    /// server now selects; the switch happens at that layer's next keyframe (`layerschange`).
    #[napi(
        ts_args_type = "roomId: string | number, userId: string | number, producerId: string | number, layers: PreferredLayers",
        ts_return_type = "Promise<LayersResponse>"
    )]
    pub fn set_preferred_layers<'env>(
        &self,
        env: &'env Env,
        room_id: Option<Unknown<'_>>,
        user_id: Option<Unknown<'_>>,
        producer_id: Option<Unknown<'_>>,
        layers: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(
            env,
            [(Arg::Id("roomId"), room_id), (Arg::Id("userId"), user_id), (Arg::Id("producerId"), producer_id), (Arg::Body("layers"), layers)],
        );
        settle(env, async move {
            let [room_id, user_id, producer_id, layers] = converted?;
            core.set_preferred_layers(&required(room_id), &required(user_id), &required(producer_id), layers.as_ref()).await
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

