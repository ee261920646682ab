// Run by nat.test.mjs inside a private network namespace (only loopback) whose nftables map
// 127.0.0.2 to 127.0.0.1, as a 1:1 NAT maps a public address to a private one. The server binds
// 127.0.0.1 and announces 127.0.0.2, so clients can reach it only through the mapping.
// Prints the result as JSON.
import { execFileSync } from 'node:child_process'
import { Client, createServer, closeEverything, candidateLines, startCall } from './helpers.mjs'

const nft = (...args) => execFileSync('nft', args)
nft('add', 'table', 'ip', 'nat')
nft('add', 'chain', 'ip', 'nat', 'out', '{ type nat hook output priority -100; }')
nft('add', 'rule', 'ip', 'nat', 'out', 'ip', 'daddr', '127.0.0.2', 'dnat', 'to', '127.0.0.1')
// And nothing of the server's leaves un-mapped: a packet from its ports that is not part of a
// flow a client opened through the mapping is dropped, so no direct (peer-reflexive) path can
// stand in for the announced one.
nft('add', 'table', 'ip', 'nonat')
nft('add', 'chain', 'ip', 'nonat', 'out', '{ type filter hook output priority 0; }')
nft('add', 'rule', 'ip', 'nonat', 'out', 'ip', 'saddr', '127.0.0.1', 'udp', 'sport', '44000-44099', 'ct', 'status', 'and', 'dnat', '==', '0', 'drop')

let result
const server = createServer({ min: 44000, max: 44099 }, { announcedIp: '127.0.0.2' })
const A = new Client(server, 'nat', 'A')
const B = new Client(server, 'nat', 'B')
try {
  const res = await startCall(server, 'nat', A, B)
  const addresses = [res.answer, res.outbound[0].offer].flatMap((d) => candidateLines(d.sdp).map((c) => c.split(' ')[4]))
  const video = await B.waitDecoding('A', { above: 10 })
  const audio = await B.waitAudio('A')
  const remote = async (pc) => {
    const report = await pc.getStats()
    const pair = [...report.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded')
    const candidate = pair && report.get(pair.remoteCandidateId)
    return candidate?.address || candidate?.ip
  }
  result = { addresses: [...new Set(addresses)], framesDecoded: video.video.framesDecoded, audioPackets: audio.audio.packetsReceived, upstreamRemote: await remote(A.upstream), downstreamRemote: await remote(B.downstreams.get('A')) }
} catch (err) {
  result = { error: err.message }
}
console.log(`NAT-RESULT ${JSON.stringify(result)}`)
await closeEverything()
process.exit(0)
