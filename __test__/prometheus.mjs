// A strict reader of the Prometheus text exposition format (version 0.0.4), for the tests: it
// accepts only what metrics() is meant to write (counters and gauges), and throws on anything
// a Prometheus server would reject or that breaks the conventions:
//   - every line is `# HELP name text`, `# TYPE name counter|gauge`, or a sample
//     `name{label="value",…} value` (labels optional, values escaped as the format says);
//   - every family has its HELP, then its TYPE, before its samples, which carry its name;
//   - no family and no series (name and labels) appears twice;
//   - counters, and only they, end in `_total`;
//   - the text ends with a line feed.

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*'
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*'
const LABEL_VALUE = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"'
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL}=${LABEL_VALUE})(?:,${LABEL}=${LABEL_VALUE})*)?\\})? (\\S+)$`)
const HELP = new RegExp(`^# HELP (${NAME}) (.*)$`)
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge)$`)

function unescape (value) {
  return value.slice(1, -1).replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c))
}

function number (text, line) {
  if (text === 'NaN') return NaN
  if (text === '+Inf') return Infinity
  if (text === '-Inf') return -Infinity
  if (!/^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(text)) throw new Error(`not a sample value: ${line}`)
  return Number(text)
}

/**
 * Parses `text`. Returns a Map of family name to `{ help, type, samples: [{ labels, value }] }`,
 * and a `get(name, labels)` helper that finds one sample's value (undefined when absent).
 */
export function parseMetrics (text) {
  if (typeof text !== 'string' || !text.endsWith('\n')) throw new Error('the text must end with a line feed')
  const families = new Map()
  const series = new Set()
  let current = null // the family whose samples may follow
  let pendingHelp = null // a family whose HELP was read and whose TYPE must come next
  for (const line of text.slice(0, -1).split('\n')) {
    let m
    if ((m = HELP.exec(line))) {
      if (families.has(m[1])) throw new Error(`family ${m[1]} appears twice`)
      if (pendingHelp) throw new Error(`HELP ${pendingHelp} has no TYPE`)
      families.set(m[1], { help: m[2], type: null, samples: [] })
      pendingHelp = m[1]
      current = null
    } else if ((m = TYPE.exec(line))) {
      if (pendingHelp !== m[1]) throw new Error(`TYPE ${m[1]} does not follow its HELP: ${line}`)
      if (m[1].endsWith('_total') !== (m[2] === 'counter')) throw new Error(`counters, and only they, end in _total: ${line}`)
      families.get(m[1]).type = m[2]
      pendingHelp = null
      current = m[1]
    } else if ((m = SAMPLE.exec(line))) {
      if (current === null) throw new Error(`a sample outside a family (no HELP and TYPE before it): ${line}`)
      if (m[1] !== current) throw new Error(`sample ${m[1]} in family ${current}: ${line}`)
      const labels = {}
      for (const [, key, value] of (m[2] ?? '').matchAll(new RegExp(`(${LABEL})=(${LABEL_VALUE})`, 'g'))) {
        if (key in labels) throw new Error(`label ${key} twice: ${line}`)
        labels[key] = unescape(value)
      }
      const id = `${m[1]}${JSON.stringify(Object.entries(labels).sort())}`
      if (series.has(id)) throw new Error(`series twice: ${line}`)
      series.add(id)
      families.get(current).samples.push({ labels, value: number(m[3], line) })
    } else {
      throw new Error(`not a line of the text format: ${JSON.stringify(line)}`)
    }
  }
  if (pendingHelp) throw new Error(`HELP ${pendingHelp} has no TYPE`)
  for (const [name, family] of families) {
    if (family.samples.length === 0) throw new Error(`family ${name} has no sample`)
  }
  const get = (name, labels = {}) => families.get(name)?.samples.find((s) =>
    Object.keys(s.labels).length === Object.keys(labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
  return { families, get }
}
