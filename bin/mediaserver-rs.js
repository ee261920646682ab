#!/usr/bin/env node
'use strict'
// mediaserver-rs serve [--host 127.0.0.1] [--port 8080] [--announced-ip IP] [--listen-ip IP]
//                      [--port-min N --port-max N | --udp-port N] [--enable-tcp]
//                      [--max-rooms N] [--max-users-per-room N] [--max-connections N]
//                      [--offer-timeout-ms N] [--log-level FILTER] [--token SECRET] [--insecure]
//                      [--redis-url URL [--node-id ID]]
// The media-server REST API over HTTP (see serve.js). Prints one line when it listens:
//   mediaserver-rs listening on http://127.0.0.1:8080
// With a token (--token, or better MEDIASERVER_TOKEN: a flag shows in `ps`), every request must
// carry `Authorization: Bearer <token>`. Without one it refuses a --host that is not loopback,
// unless --insecure (then it warns once on stderr before that line).
// With --redis-url the server is one node of a cluster (see the README's Cluster section): run one
// per machine against the same Redis, each with its own --node-id, behind any load balancer.
// SIGINT / SIGTERM: closes everything and exits 0.

const { Command, Option, InvalidArgumentError } = require('commander')
const { version } = require('../package.json')

function integer (min, max) {
  return (value) => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`)
    }
    return Number(value)
  }
}

const program = new Command()
program
  .name('mediaserver-rs')
  .description('A WebRTC SFU: the media-server REST API over HTTP')
  .version(version)

program
  .command('serve')
  .description('serve the media-server REST API over HTTP')
  .addOption(new Option('--host <address>', 'address the HTTP server listens on').env('HOST').default('127.0.0.1'))
  .addOption(new Option('--port <port>', 'TCP port of the HTTP server (0: any free port)').env('PORT').default(8080).argParser(integer(0, 65535)))
  .addOption(new Option('--announced-ip <ip>', 'address written into ICE candidates instead of the bound one (1:1 NAT)').env('ANNOUNCED_IP'))
  .addOption(new Option('--listen-ip <ip>', 'address media connections bind (default: every interface)'))
  .addOption(new Option('--port-min <port>', 'lowest UDP port for media connections (with --port-max)').argParser(integer(1, 65535)))
  .addOption(new Option('--port-max <port>', 'highest UDP port for media connections (with --port-min)').argParser(integer(1, 65535)))
  .addOption(new Option('--udp-port <port>', 'single-port mode: every media connection on this one UDP port').argParser(integer(0, 65535)).conflicts(['portMin', 'portMax']))
  .addOption(new Option('--enable-tcp', 'also offer ICE-TCP candidates, for clients whose UDP is blocked'))
  .addOption(new Option('--max-rooms <n>', 'refuse rooms past this many (RESOURCE_EXHAUSTED)').argParser(integer(0, 2 ** 31)))
  .addOption(new Option('--max-users-per-room <n>', 'refuse users past this many in a room').argParser(integer(0, 2 ** 31)))
  .addOption(new Option('--max-connections <n>', 'refuse connections past this many, upstream and downstream').argParser(integer(0, 2 ** 31)))
  .addOption(new Option('--offer-timeout-ms <ms>', 'close a downstream whose offer is not answered in time (default 30000)').argParser(integer(1, 2 ** 31)))
  .addOption(new Option('--log-level <filter>', 'log filter in RUST_LOG syntax (default: MEDIASERVER_LOG, else warn,rtc=error,webrtc=error)'))
  .addOption(new Option('--token <secret>', 'require "Authorization: Bearer <secret>" on every request (prefer the env variable: a flag shows in ps)').env('MEDIASERVER_TOKEN'))
  .addOption(new Option('--insecure', 'allow a --host that is not loopback without a token (something in front authenticates requests)'))
  .addOption(new Option('--redis-url <url>', 'join the cluster coordinated through this Redis (redis://host:port)').env('MEDIASERVER_REDIS_URL'))
  .addOption(new Option('--node-id <id>', "this node's id in the cluster (default: a random one); needs --redis-url").env('MEDIASERVER_NODE_ID'))
  .action(async (opts, command) => {
    if ((opts.portMin === undefined) !== (opts.portMax === undefined)) {
      command.error('error: --port-min and --port-max go together')
    }
    if (opts.portMin !== undefined && opts.portMin > opts.portMax) {
      command.error('error: --port-min is greater than --port-max')
    }
    if (opts.nodeId !== undefined && !opts.redisUrl) {
      command.error('error: --node-id needs --redis-url')
    }
    if (opts.token === '') {
      command.error(`error: ${command.getOptionValueSource('token') === 'env' ? 'MEDIASERVER_TOKEN' : '--token'} is empty`)
    }
    const options = { host: opts.host, port: opts.port }
    if (opts.token !== undefined) options.token = opts.token
    if (opts.insecure) options.insecure = true
    if (opts.listenIp !== undefined) options.listenIp = opts.listenIp
    if (opts.announcedIp !== undefined && opts.announcedIp !== '') options.announcedIp = opts.announcedIp
    if (opts.portMin !== undefined) options.portRange = { min: opts.portMin, max: opts.portMax }
    if (opts.udpPort !== undefined) options.udpPort = opts.udpPort
    if (opts.enableTcp) options.enableTcp = true
    if (opts.maxRooms !== undefined) options.maxRooms = opts.maxRooms
    if (opts.maxUsersPerRoom !== undefined) options.maxUsersPerRoom = opts.maxUsersPerRoom
    if (opts.maxConnections !== undefined) options.maxConnections = opts.maxConnections
    if (opts.offerTimeoutMs !== undefined) options.offerTimeoutMs = opts.offerTimeoutMs
    if (opts.logLevel !== undefined) options.logLevel = opts.logLevel
    if (opts.redisUrl) {
      options.cluster = { redisUrl: opts.redisUrl }
      if (opts.nodeId !== undefined) options.cluster.nodeId = opts.nodeId
    }

    const { serve, isLoopbackHost } = require('../serve.js')
    let server
    try {
      server = await serve(options)
    } catch (err) {
      console.error(`mediaserver-rs: cannot start: ${err.code ? `${err.code}: ` : ''}${err.message}`)
      process.exit(1)
    }
    if (options.token === undefined && !isLoopbackHost(options.host)) {
      console.error(`mediaserver-rs: warning: --insecure: no token on ${options.host}, every request that reaches it is served`)
    }
    if (options.cluster) console.error(`mediaserver-rs: cluster node ${(await server.media.stats()).nodeId}`)
    console.error(`mediaserver-rs listening on ${server.url}`)

    let stopping = false
    const stop = async (signal) => {
      if (stopping) {
        console.error(`mediaserver-rs: ${signal} again, exiting without waiting`)
        process.exit(1)
      }
      stopping = true
      try {
        await server.close()
        process.exit(0)
      } catch (err) {
        console.error(`mediaserver-rs: closing: ${err.message}`)
        process.exit(1)
      }
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })

program.parseAsync(process.argv)
