//! The napi layer: JS values in, plain JS objects or `Error`s with a spec `code` out.
//! Everything else lives in [`crate::sfu`].

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use napi::bindgen_prelude::{Function, Object, PromiseRaw, ToNapiValue, Unknown};
use napi::bindgen_prelude::JsObjectValue;
use napi::{Env, ValueType};
use napi_derive::napi;
use serde::Serialize;
use serde_json::Value;

use crate::sfu::error::{SfuError, SfuResult};
use crate::sfu::{MediaServerCore, ServerOptions};

#[napi(object)]
pub struct PortRange {
    pub min: u32,
    pub max: u32,
}

#[napi(object)]
pub struct MediaServerOptions {
    /// Address every connection binds. Default: every interface (`0.0.0.0`).
    pub listen_ip: Option<String>,
    /// Address written into ICE candidates instead of the bound one (servers behind 1:1 NAT).
    pub announced_ip: Option<String>,
    /// Inclusive UDP port range for connections; one port per connection.
    pub port_range: Option<PortRange>,
}

/// A WebRTC SFU: rooms of users whose audio and video it forwards. Every method mirrors one
/// endpoint of the media-server API and resolves to the same JSON the HTTP server returns.
#[napi]
pub struct MediaServer {
    core: Arc<MediaServerCore>,
}

fn parse_ip(what: &str, value: Option<String>) -> SfuResult<Option<IpAddr>> {
    value
        .map(|ip| ip.parse().map_err(|_| SfuError::InvalidArgument(format!("{what} '{ip}' is not an IP address"))))
        .transpose()
}

fn parse_options(options: Option<MediaServerOptions>) -> SfuResult<ServerOptions> {
    let Some(options) = options else { return Ok(ServerOptions::default()) };
    let port_range = match options.port_range {
        None => None,
        Some(PortRange { min, max }) => {
            let port = |p: u32| {
                u16::try_from(p).map_err(|_| SfuError::InvalidArgument(format!("port {p} is out of range")))
            };
            Some((port(min)?, port(max)?))
        }
    };
    Ok(ServerOptions {
        listen_ip: parse_ip("listenIp", options.listen_ip)?,
        announced_ip: parse_ip("announcedIp", options.announced_ip)?,
        port_range,
    })
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
fn settle<'env, T, F>(env: &'env Env, call: F) -> napi::Result<PromiseRaw<'env, Value>>
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
        Ok(result.and_then(|value| serde_json::to_value(value).map_err(|e| SfuError::internal("serializing", e))))
    };
    env.spawn_future_with_callback(task, |env, result: SfuResult<Value>| result.map_err(|e| js_error(env, e)))
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
    #[napi(constructor)]
    pub fn new(env: Env, options: Option<MediaServerOptions>) -> napi::Result<Self> {
        let core = parse_options(options).and_then(MediaServerCore::new).map_err(|e| throw(&env, e))?;
        Ok(Self { core: Arc::new(core) })
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
    ) -> napi::Result<PromiseRaw<'env, Value>> {
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
    ) -> napi::Result<PromiseRaw<'env, Value>> {
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
    ) -> napi::Result<PromiseRaw<'env, Value>> {
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
    ) -> napi::Result<PromiseRaw<'env, Value>> {
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
    ) -> napi::Result<PromiseRaw<'env, Value>> {
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
    ) -> napi::Result<PromiseRaw<'env, Value>> {
        let core = self.core.clone();
        let converted = args(env, [room_id, user_id]);
        settle(env, async move {
            let [room_id, user_id] = converted?;
            core.remove_user(&required(room_id), &required(user_id)).await
        })
    }

    /// `DELETE /rooms/:room_id`.
    #[napi(ts_args_type = "roomId: string | number", ts_return_type = "Promise<DeleteRoomResponse>")]
    pub fn delete_room<'env>(&self, env: &'env Env, room_id: Option<Unknown<'_>>) -> napi::Result<PromiseRaw<'env, Value>> {
        let core = self.core.clone();
        let converted = args(env, [room_id]);
        settle(env, async move {
            let [room_id] = converted?;
            core.delete_room(&required(room_id)).await
        })
    }

    /// Counts of rooms, users and connections held by this server.
    #[napi(ts_return_type = "Promise<ServerStats>")]
    pub fn stats<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Value>> {
        let core = self.core.clone();
        settle(env, async move { core.stats().await })
    }

    /// Closes every connection and frees every port. Later calls reject with `SERVER_CLOSED`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Value>> {
        let core = self.core.clone();
        settle(env, async move {
            core.close().await;
            Ok(())
        })
    }
}

