//! The napi layer: JS values in, plain JS objects or `Error`s with a spec `code` out.
//! Everything else lives in [`crate::sfu`].

use std::future::Future;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Function, FunctionRef, JsObjectValue, Object, PromiseRaw, This, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, ValueType};
use napi_derive::napi;
use serde::Serialize;
use serde_json::Value;

use crate::logging::{self, LogRecord, LogSink};
use crate::sfu::api::parse_server_options;
use crate::sfu::error::{SfuError, SfuResult};
use crate::sfu::events::{EventSink, ServerEvent};
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
const EVENTS: [&str; 4] = ["connectionstatechange", "constraintschange", "roomclosed", "offertimeout"];

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
        Ok(json) => parse_json(env, &json),
        Err(e) => Err(js_error(env, e)),
    })
}

fn throw(env: &Env, err: SfuError) -> napi::Error {
    js_error(env, err)
}

/// A JS argument as the JSON an HTTP client would have sent: `JSON.stringify` semantics, so
/// `toJSON` is honoured (an `RTCSessionDescription` can be passed as is) and functions are
/// dropped. `undefined` is absent.
fn json_of(env: &Env, value: Option<Unknown<'_>>) -> SfuResult<Option<Value>> {
    let Some(value) = value else { return Ok(None) };
    match value.get_type() {
        Ok(ValueType::Undefined) => return Ok(None),
        Ok(ValueType::Null) => return Ok(Some(Value::Null)),
        _ => {}
    }
    let text = (|| -> napi::Result<Option<String>> {
        let json: Object = env.get_global()?.get_named_property("JSON")?;
        let stringify: Function<Unknown, Option<String>> = json.get_named_property("stringify")?;
        stringify.call(value)
    })()
    .map_err(|e| SfuError::InvalidArgument(format!("an argument cannot be read as JSON: {}", e.reason)))?
    .ok_or_else(|| SfuError::InvalidArgument("an argument has no JSON form (a function or a symbol?)".into()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SfuError::InvalidArgument(format!("an argument cannot be read as JSON: {e}")))
}

/// Converts the call's arguments, or settles the promise with the conversion error.
fn args<const N: usize>(env: &Env, values: [Option<Unknown<'_>>; N]) -> SfuResult<[Option<Value>; N]> {
    let mut out = [const { None }; N];
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = json_of(env, value)?;
    }
    Ok(out)
}

fn required(value: Option<Value>) -> Value {
    value.unwrap_or(Value::Null)
}

#[napi]
impl MediaServer {
    #[napi(constructor, ts_args_type = "options?: MediaServerOptions")]
    pub fn new(env: Env, options: Option<Unknown<'_>>) -> napi::Result<Self> {
        let on_log = match &options {
            Some(o) if o.get_type()? == ValueType::Object => {
                let object: Object = unsafe { o.cast()? };
                match object.get_named_property::<Unknown>("onLog")? {
                    v if matches!(v.get_type()?, ValueType::Undefined | ValueType::Null) => None,
                    v if v.get_type()? == ValueType::Function => {
                        let function: Function<Unknown<'static>, ()> = unsafe { v.cast()? };
                        Some(js_callback(&function)?)
                    }
                    _ => return Err(throw(&env, SfuError::InvalidArgument("onLog must be a function".into()))),
                }
            }
            _ => None,
        };
        let json = json_of(&env, options).map_err(|e| throw(&env, e))?;
        let level = match json.as_ref().and_then(|o| o.get("logLevel")) {
            None | Some(Value::Null) => None,
            Some(Value::String(level)) => Some(level.clone()),
            Some(other) => {
                return Err(throw(&env, SfuError::InvalidArgument(format!("logLevel must be a string, got {other}"))))
            }
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
            .map_err(|e| throw(&env, e))?;
        Ok(Self { core: Arc::new(core), listeners })
    }

    /// Calls `listener` with each event of that name: `connectionstatechange`,
    /// `constraintschange`, `roomclosed`, `offertimeout`. Listeners never keep the process alive.
    #[napi(
        ts_generic_types = "K extends MediaServerEventName",
        ts_args_type = "event: K, listener: (event: Extract<MediaServerEvent, { type: K }>) => void",
        ts_return_type = "this"
    )]
    pub fn on<'a>(&self, env: Env, this: This<'a>, event: String, listener: Function<'_, Unknown<'static>, ()>) -> napi::Result<Object<'a>> {
        let Some(name) = EVENTS.iter().find(|e| **e == event) else {
            return Err(throw(&env, SfuError::InvalidArgument(format!("unknown event '{event}' (events: {})", EVENTS.join(", ")))));
        };
        let callback = Arc::new(js_callback(&listener)?);
        let function = listener.create_ref()?;
        self.listeners.0.lock().unwrap_or_else(|e| e.into_inner()).push(Listener { event: name, callback, function });
        Ok(this.object)
    }

    /// Removes a listener added with `on()` (every registration of it for that event).
    #[napi(
        ts_generic_types = "K extends MediaServerEventName",
        ts_args_type = "event: K, listener: (event: Extract<MediaServerEvent, { type: K }>) => void",
        ts_return_type = "this"
    )]
    pub fn off<'a>(&self, env: Env, this: This<'a>, event: String, listener: Function<'_, Unknown<'static>, ()>) -> napi::Result<Object<'a>> {
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
        let converted = args(env, [room_id, body]);
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
        let converted = args(env, [room_id, user_id, body]);
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
        let converted = args(env, [room_id, user_id, body]);
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
        let converted = args(env, [room_id, user_id, body]);
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
        let converted = args(env, [room_id, user_id]);
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
        let converted = args(env, [room_id, user_id]);
        settle(env, async move {
            let [room_id, user_id] = converted?;
            core.remove_user(&required(room_id), &required(user_id)).await
        })
    }

    /// `DELETE /rooms/:room_id`.
    #[napi(ts_args_type = "roomId: string | number", ts_return_type = "Promise<DeleteRoomResponse>")]
    pub fn delete_room<'env>(&self, env: &'env Env, room_id: Option<Unknown<'_>>) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        let converted = args(env, [room_id]);
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
        let converted = args(env, [room_id, user_id]);
        settle(env, async move {
            let [room_id, user_id] = converted?;
            core.get_stats(&required(room_id), user_id.as_ref()).await
        })
    }

    /// Counts of rooms, users and connections held by this server, and what it forwarded.
    #[napi(ts_return_type = "Promise<ServerStats>")]
    pub fn stats<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        settle(env, async move { core.stats().await })
    }

    /// Closes every connection and frees every port. Later calls reject with `SERVER_CLOSED`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Unknown<'env>>> {
        let core = self.core.clone();
        settle(env, async move {
            core.close().await;
            Ok(())
        })
    }
}

