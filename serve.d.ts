/* The HTTP server (serve.js): the media-server REST API over HTTP on top of the addon. */

import type {
  MediaServer,
  MediaServerOptions,
  ErrorCode,
  ServerStats,
  CreateRoomBody,
  CreateRoomResponse,
  AddUserBody,
  AddUserResponse,
  ProduceBody,
  ProduceResponse,
  ConsumeBody,
  ConsumeResponse,
  StopProduceResponse,
  RemoveUserResponse,
  DeleteRoomResponse,
  RoomStats
} from './index'

/** Where the HTTP server listens, and who may use it. */
export interface ListenOptions {
  /**
   * The address the HTTP server listens on. Default `'127.0.0.1'`. An address that is not
   * loopback (`localhost`, 127.0.0.0/8, `::1`), the wildcards `'0.0.0.0'` and `'::'` included,
   * needs a `token` or `insecure: true`.
   */
  host?: string
  /** Its TCP port, 0 to 65535; 0 picks a free port (read it from the result). Default `8080`. */
  port?: number
  /**
   * A shared secret: every request must carry `Authorization: Bearer <token>`, else 401
   * `UNAUTHENTICATED` (before its body is read or the MediaServer sees it). Visible ASCII, no
   * spaces, non-empty. Not transport security: terminate TLS in front of the server.
   */
  token?: string
  /**
   * Listen on an address that is not loopback without a `token` (something in front of the
   * server authenticates every request). Default `false`.
   */
  insecure?: boolean
}

/**
 * The options of `serve()`: where to listen, the token, and either an existing `MediaServer`
 * (`media`) or the options of the one `serve()` makes (every key but `host`, `port`, `token`,
 * `insecure` and `media` is passed untouched to `new MediaServer(…)`). Giving `media` together
 * with MediaServer options is a `TypeError`.
 */
export type ServeOptions =
  | (ListenOptions & MediaServerOptions & { media?: undefined })
  | (ListenOptions & { media: MediaServer })

/** A running HTTP server. */
export interface HttpServerHandle {
  /** `http://host:port`, with the address and port actually bound (IPv6 in brackets). */
  url: string
  /** The TCP port actually bound (the chosen one when `port` was 0). */
  port: number
  /** The address actually bound (e.g. `'127.0.0.1'`). */
  host: string
  /** The MediaServer behind the routes: `options.media`, or the one `serve()` made. */
  media: MediaServer
  /**
   * Stops the HTTP server (requests in flight finish first), then closes `media` if `serve()`
   * made it (a `media` passed in stays open). Calling it again returns the same promise.
   */
  close(): Promise<void>
}

/**
 * Starts the HTTP server; resolves once it listens. Rejects with the MediaServer constructor's
 * error (`code: 'INVALID_ARGUMENT'`, e.g. a `listenIp` that is not an IP address), with a
 * `TypeError`/`RangeError` (`code: 'INVALID_ARGUMENT'`) for bad `host`/`port`/`token`/
 * `insecure`/`media`, with an `Error` (`code: 'INVALID_ARGUMENT'`) for a `host` that is not
 * loopback with neither `token` nor `insecure` (nothing is made or bound then), or with the
 * listen error (`EADDRINUSE`, …); a MediaServer made by `serve()` is closed again then.
 */
export declare function serve(options?: ServeOptions): Promise<HttpServerHandle>

/** Whether `host` is `localhost`, in 127.0.0.0/8 or `::1`: what `serve()` binds without a token. */
export declare function isLoopbackHost(host: string): boolean

/** The `Content-Type` of `GET /metrics`: `'text/plain; version=0.0.4; charset=utf-8'`. */
export declare const metricsContentType: 'text/plain; version=0.0.4; charset=utf-8'

/** The HTTP status of each error code (the spec's error table). */
export declare const httpStatus: Readonly<{
  INVALID_ARGUMENT: 400
  INVALID_SDP: 400
  ROOM_NOT_FOUND: 404
  USER_NOT_FOUND: 404
  ROOM_EXISTS: 409
  USER_EXISTS: 409
  NOT_PRODUCING: 409
  NO_PENDING_OFFER: 409
  RESOURCE_EXHAUSTED: 503
  SERVER_CLOSED: 503
  INTERNAL: 500
  UNAVAILABLE: 503
}>

/**
 * The body of every error response but the 401 (`HttpUnauthenticatedBody`). The status is
 * `httpStatus[code]`, except for errors of the HTTP layer itself, all `INVALID_ARGUMENT`: an
 * unknown route or method is 404, a body over 1 MiB is 413, a request line and headers over
 * Node's 16 KiB is 431, a request not received in time is 408; a body that is not JSON or not a
 * JSON object, a path that is not valid percent-encoding, and a request that is not HTTP are 400.
 */
export interface HttpErrorBody {
  error: {
    code: ErrorCode
    message: string
  }
}

/** The body of a 401: a server with a `token` got a request without it, or with another one. */
export interface HttpUnauthenticatedBody {
  error: {
    code: 'UNAUTHENTICATED'
    message: string
  }
}

/** Every code an error response can carry: the spec's, and `UNAUTHENTICATED` (401). */
export type HttpErrorCode = ErrorCode | 'UNAUTHENTICATED'

/** Every status an error response can have. */
export type HttpErrorStatus = 400 | 401 | 404 | 408 | 409 | 413 | 431 | 500 | 503

/**
 * Every route: its path parameters, the JSON body it reads (`undefined`: no body, which is the
 * same as `{}`), and the JSON of its 200 response (exactly what the MediaServer method resolves
 * to). Path parameters are strings (URL-decoded); the addon reads them as ids.
 */
export interface HttpRoutes {
  'POST /rooms': {
    params: {}
    body: CreateRoomBody | undefined
    /** `room_id` is a generated UUID v4. */
    response: CreateRoomResponse
  }
  'POST /rooms/:room_id': {
    params: { room_id: string }
    body: CreateRoomBody | undefined
    response: CreateRoomResponse
  }
  'POST /rooms/:room_id/users/:user_id': {
    params: { room_id: string; user_id: string }
    body: AddUserBody | undefined
    response: AddUserResponse
  }
  'POST /rooms/:room_id/users/:user_id/produce': {
    params: { room_id: string; user_id: string }
    body: ProduceBody
    response: ProduceResponse
  }
  'POST /rooms/:room_id/users/:user_id/consume': {
    params: { room_id: string; user_id: string }
    body: ConsumeBody
    response: ConsumeResponse
  }
  'DELETE /rooms/:room_id/users/:user_id/produce': {
    params: { room_id: string; user_id: string }
    /** Ignored (the spec sends `{}`); when present it must still be a JSON object. */
    body: Record<string, never> | undefined
    response: StopProduceResponse
  }
  'DELETE /rooms/:room_id/users/:user_id': {
    params: { room_id: string; user_id: string }
    /** Ignored (the spec sends `{}`); when present it must still be a JSON object. */
    body: Record<string, never> | undefined
    response: RemoveUserResponse
  }
  'DELETE /rooms/:room_id': {
    params: { room_id: string }
    /** Ignored (the spec sends `{}`); when present it must still be a JSON object. */
    body: Record<string, never> | undefined
    response: DeleteRoomResponse
  }
  /** An extension, not in the spec: `media.stats()`. */
  'GET /stats': {
    params: {}
    body: undefined
    response: ServerStats
  }
  /** An extension, not in the spec: `media.getStats(room_id)`. */
  'GET /rooms/:room_id/stats': {
    params: { room_id: string }
    body: undefined
    response: RoomStats
  }
  /** An extension, not in the spec: `media.getStats(room_id, user_id)`. */
  'GET /rooms/:room_id/users/:user_id/stats': {
    params: { room_id: string; user_id: string }
    body: undefined
    response: RoomStats
  }
  /**
   * An extension, not in the spec: `media.metrics()`, for Prometheus to scrape. The one route
   * whose 200 is not JSON: the Prometheus text format, `Content-Type: text/plain; version=0.0.4;
   * charset=utf-8` (`metricsContentType`). Errors are JSON bodies as on every route; with a
   * `token`, the scrape needs it too (Prometheus's `authorization: { credentials: … }`).
   */
  'GET /metrics': {
    params: {}
    body: undefined
    response: string
  }
}

/** `'POST /rooms'`, `'GET /stats'`, … */
export type HttpRoute = keyof HttpRoutes
