/**
 * What each benchmark's plots show: from one results file (benchmarks/results/NAME-*.json)
 * to chart specs (drawn by plot.ts) and the small figures kept beside them in
 * docs/benchmarks/. One function per benchmark; a results file that lacks a part (a
 * failover run with `--parts bytes`) gives only the charts of the parts it has.
 */
import path from 'node:path'
import type { MachineInfo } from './lib.ts'
import type { Chart, Value } from './plot.ts'
import { ROOT, median } from './lib.ts'

/** The benchmarks that have charts (shim-memory and membership-scale draw their own). */
export const CHARTED = ['cli-startup', 'image-transfer', 'migration', 'failover', 'downtime', 'client-downtime']

const BASELINE_GREY = '#999999'

/** A results file as JSON.parse gives it; each benchmark's function reads it as its own shape. */
type Results = Record<string, unknown>

interface Run {
  machine: MachineInfo
  options: Record<string, number | string | boolean>
}

interface CliStartupResults extends Run {
  msc?: string
  results: Array<{ case: string; 'median ms': number; 'p90 ms': number; 'x node -e 0': number }>
}

interface ImageTransferResults extends Run {
  trees: Array<{ name: string; describe: string; bytes: number }>
  summary: Array<{ tree: string; method: string; MBps: number; MBpsMin: number; MBpsMax: number; receiverRssReadyMiB: number; receiverRssPeakMiB: number }>
  samples: Array<{ tree: string; method: string; receiverRssPeakMiB: number }>
  ratios: unknown
}

interface MigrationResults extends Run {
  local: Array<{ method: string; checkpointMs: number; restoreMs: number; totalMs: number; imageMB: number }>
  migrations: Array<{ strategy: string; downtimeMs: number; downtimeMinMs: number; downtimeMaxMs: number; totalMs: number; MB: number; phasesMs: Record<string, number> }>
  samples: { local: Array<{ method: string; totalMs: number }>; hops: Array<{ strategy: string; downtimeMs: number; totalMs: number }> }
  ratios: unknown
}

interface DowntimeResults extends Run {
  targets: { stopCopy: number; defaultAt256: number }
  summary: Array<{
    memoryMiB: number
    /** Absent in runs from before --dirty: those beacons left their memory alone. */
    dirtyPagesPerTick?: number
    dirtyMiBps?: number
    method: string
    samples: number
    observerGapMs: number
    observerGapMinMs: number
    observerGapMaxMs: number
    mscDowntimeMs: number | null
    mscOverObserver: number | null
    totalMs: number
    MB: number
    phasesMs: Record<string, number>
  }>
  samples: Array<{ memoryMiB: number; method: string; observerGapMs: number }>
  ratios: Array<{ memoryMiB: number; strategy: string; 'observer gap / runc by hand': number; 'msc downtimeMs / observer gap': number | null }>
}

interface ClientDowntimeResults extends Run {
  summary: Array<{ strategy: string; mode: string; clientGapMs: number; clientGapMinMs: number; clientGapMaxMs: number; mscDowntimeMs: number | null }>
  ratios: Array<{ strategy: string; 'client gap lan / host': number }>
}

interface FailoverResults extends Run {
  rto?: {
    leaseMs: number
    dumpIntervalS: number
    counterMs: number
    summary: { trials: number; rtoMs: number; rtoTargetMs: number; rpoMs: number; rpoTargetMs: number }
    samples: Array<{ rtoMs: number; rtoTargetMs: number; rpoMs: number; rpoTargetMs: number }>
  }
  overhead?: {
    keys: number
    clients: number
    benchSeconds: number
    rounds: number
    replicationStalledUnderLoad: boolean
    summary: { offRps: number; onRps: number; ratio: number; setRatio: number; getRatio: number; ackedDuringOn: number }
    samples: Array<{ round: number; mode: 'on' | 'off'; rps: number; setRps: number; getRps: number }>
  }
  bytes?: {
    keys: number
    dumpIntervalS: number
    spreadWorked: boolean
    bytesPerRound: number | null
    imageBytes: number | null
    fullWireBytes: number | null
    freezeMs: number
    intervalMs: number
    generations: Array<{ generation: number; wireBytes: number; imageBytes: number; freezeMs: number; full: boolean; phase: string; time: string }>
    phases: Array<{ mode: string; seconds: number; writes: number; acked: number; dumps: number; dumpFailed: number; generationFailed: number }>
  }
}

const r2 = (x: number): number => Math.round(x * 100) / 100
const ms = (x: number): string => `${Math.round(x).toLocaleString('en-US')} ms`
const spread = (xs: number[]): { min: number; max: number } => ({ min: Math.min(...xs), max: Math.max(...xs) })
const source = (file: string): string => `results: benchmarks/results/${file}`

/** The charts of one results file of benchmark `bench` (empty for a benchmark without charts). */
export function chartsFor (bench: string, data: Results, file: string): Chart[] {
  switch (bench) {
    case 'cli-startup':
      return cliStartup(data as unknown as CliStartupResults, file)
    case 'image-transfer':
      return imageTransfer(data as unknown as ImageTransferResults, file)
    case 'migration':
      return migration(data as unknown as MigrationResults, file)
    case 'failover':
      return failover(data as unknown as FailoverResults, file)
    case 'downtime':
      return downtime(data as unknown as DowntimeResults, file)
    case 'client-downtime':
      return clientDowntime(data as unknown as ClientDowntimeResults, file)
    default:
      return []
  }
}

/** The names of the charts a results file can give (the CLI picks, per chart, the newest file that gives it). */
export function chartNames (bench: string, data: Results): string[] {
  try {
    return chartsFor(bench, data, '').map((c) => c.name)
  } catch {
    return [] // an older or partial results file the charts cannot read
  }
}

function cliStartup (d: CliStartupResults, file: string): Chart[] {
  const rows = d.results
  const base = rows.find((r) => r.case === 'node -e 0')
  if (base == null) return []
  const msc = typeof d.msc === 'string' && d.msc.startsWith(ROOT + path.sep) ? path.relative(ROOT, d.msc) : d.msc
  return [{
    name: 'cli-startup',
    spec: {
      kind: 'ratio',
      title: 'msc CLI start-up against `node -e 0`',
      subtitle: `Median wall time of each command (a fresh process through bin/msc, as a shell runs it) / median of \`node -e 0\` (${ms(base['median ms'])}) in the same run, ${d.options.runs} rounds. Labels: ratio and median.`,
      machine: d.machine,
      yLabel: 'median / median of node -e 0',
      bars: rows.filter((r) => r !== base).map((r) => ({ name: `msc ${r.case}`, value: r['x node -e 0'], label: `${r['x node -e 0']}x, ${ms(r['median ms'])}` })),
      target: { value: 2, label: 'target: below 2x node -e 0', better: 'below' },
      notes: [`msc measured: ${String(msc)}; ${source(file)}`]
    },
    figures: { baselineMedianMs: base['median ms'], rounds: d.options.runs, msc, cases: rows }
  }]
}

function imageTransfer (d: ImageTransferResults, file: string): Chart[] {
  const { trees, summary, samples } = d
  const methods = [...new Set(summary.map((s) => s.method))]
  const baseMethod = methods.includes('raw-tcp') ? 'raw-tcp' : methods[0]!
  const get = (t: string, m: string): typeof summary[number] | undefined => summary.find((s) => s.tree === t && s.method === m)
  const color = (m: string, i: number): string | undefined => m === baseMethod ? BASELINE_GREY : ['#E69F00', '#0072B2', '#009E73'][i % 3]
  const goodput = methods.map((m, i) => ({
    name: m,
    color: color(m, i),
    values: trees.map((t): Value | null => {
      const s = get(t.name, m)
      const b = get(t.name, baseMethod)?.MBps
      if (s == null || b == null || b === 0) return null
      return { value: r2(s.MBps / b), min: r2(s.MBpsMin / b), max: r2(s.MBpsMax / b), label: String(s.MBps) }
    })
  }))
  const rss = methods.map((m, i) => ({
    name: m,
    color: color(m, i),
    values: trees.map((t): Value | null => {
      const s = get(t.name, m)
      if (s == null) return null
      const peaks = samples.filter((x) => x.tree === t.name && x.method === m).map((x) => x.receiverRssPeakMiB)
      return { value: s.receiverRssPeakMiB, ...(peaks.length > 0 ? spread(peaks) : {}), label: String(Math.round(s.receiverRssPeakMiB)) }
    })
  }))
  const rounds = `medians of ${d.options.runs} rounds; whiskers: slowest and fastest round`
  const ready = trees.map((t) => `${t.describe}: ${methods.map((m) => `${m} ${get(t.name, m)?.receiverRssReadyMiB ?? '-'}`).join(', ')}`).join('; ')
  return [{
    name: 'image-transfer',
    spec: {
      kind: 'bar',
      title: 'Image transfer goodput over 127.0.0.1, relative to raw TCP',
      subtitle: `The same tree sent ${
        methods.length === 4 ? 'four' : methods.length
      } ways in one run, interleaved: msc's /msc/image/1.0.0 (framing, SHA-256, commit) over libp2p (msc) and over msc's sealed data channel (msc-sealed: TCP + AES-256-GCM), one bare libp2p stream (tcp + noise + yamux), a plain TCP socket. Labels: MB/s (10^6 bytes).`,
      machine: d.machine,
      yLabel: `goodput / ${baseMethod} goodput`,
      groups: trees.map((t) => t.describe),
      series: goodput,
      lines: [{ value: 1, label: `${baseMethod} = 1` }],
      notes: [`${rounds} (over the ${baseMethod} median); ${source(file)}`]
    },
    figures: { ratios: d.ratios, summary: d.summary, trees }
  }, {
    name: 'image-transfer-rss',
    spec: {
      kind: 'bar',
      title: 'Image transfer: peak RSS of the receiving process',
      subtitle: `A fresh receiver process per transfer, so its peak (getrusage maxrss) belongs to that transfer alone. Labels: MiB. At rest before the data (MiB): ${ready}.`,
      machine: d.machine,
      yLabel: 'receiver peak RSS, MiB',
      groups: trees.map((t) => t.describe),
      series: rss,
      notes: [`medians of ${d.options.runs} rounds; whiskers: lowest and highest round; ${source(file)}`]
    },
    figures: { ratios: d.ratios, summary: d.summary, trees }
  }]
}

function migration (d: MigrationResults, file: string): Chart[] {
  const { local, migrations: hops } = d
  const { local: localSamples, hops: hopSamples } = d.samples
  const bases = local.filter((l) => l.method !== 'msc-local-cli')
  const baseName: Record<string, string> = { 'raw-runc': 'runc by hand: checkpoint + restore', 'msc-local': 'msc node: checkpoint + restore' }
  const groups = [...bases.map((b) => baseName[b.method] ?? b.method), ...hops.map((h) => `${h.strategy} migration`)]
  const localValue = (m: string, median: number): Value => ({ value: median, ...spread(localSamples.filter((s) => s.method === m).map((s) => s.totalMs)) })
  const nb = bases.length
  const series = [
    { name: 'local checkpoint + restore (down throughout)', color: BASELINE_GREY, values: [...bases.map((b) => localValue(b.method, b.totalMs)), ...hops.map(() => null)] },
    { name: 'migration downtime (freeze to running on the target)', color: '#0072B2', values: [...bases.map(() => null), ...hops.map((h): Value => ({ value: h.downtimeMs, min: h.downtimeMinMs, max: h.downtimeMaxMs }))] },
    { name: 'migration total time', color: '#56B4E9', values: [...bases.map(() => null), ...hops.map((h): Value => ({ value: h.totalMs, ...spread(hopSamples.filter((s) => s.strategy === h.strategy).map((s) => s.totalMs)) }))] }
  ]
  const base = (m: string): number | undefined => local.find((l) => l.method === m)?.totalMs
  const ratioSeries = bases.map((b, i) => {
    const bm = base(b.method)!
    return {
      name: `downtime / ${baseName[b.method] ?? b.method}`,
      color: i === 0 ? '#0072B2' : '#CC79A7',
      values: hops.map((h): Value => ({ value: r2(h.downtimeMs / bm), min: r2(h.downtimeMinMs / bm), max: r2(h.downtimeMaxMs / bm) }))
    }
  })
  const what = `redis with ${Number(d.options.keys).toLocaleString('en-US')} keys, two hosts (network namespaces on a bridge), one msc node each; ${d.options.runs} rounds, ${d.options.runs} x 2 hops per strategy`
  const figures = { keys: d.options.keys, ratios: d.ratios, local, migrations: hops }
  return [{
    name: 'migration',
    spec: {
      kind: 'bar',
      title: 'Live migration downtime against a local checkpoint + restore',
      subtitle: `${what}. Migrations as reported by the source node. Labels: ms.`,
      machine: d.machine,
      yLabel: 'time, ms',
      groups,
      series,
      notes: [`medians; whiskers: min-max of the samples; ${source(file)}`]
    },
    figures
  }, ...(nb === 0
    ? []
    : [{
      name: 'migration-ratio',
      spec: {
        kind: 'bar' as const,
        title: 'Migration downtime as a ratio of a local checkpoint + restore',
        subtitle: `${what}. Below 1: the migration is down for less time than checkpointing and restoring on the same host.`,
        machine: d.machine,
        yLabel: 'downtime / local ck+rs (medians)',
        groups: hops.map((h) => h.strategy),
        series: ratioSeries,
        lines: [{ value: 1, label: 'as long as the baseline' }],
        notes: [`whiskers: shortest and longest downtime over the baseline's median; ${source(file)}`]
      },
      figures
    }])]
}

function failover (d: FailoverResults, file: string): Chart[] {
  const charts: Chart[] = []
  const machine = d.machine
  if (d.rto != null) {
    const s = d.rto.summary
    const samples = d.rto.samples
    const rto = samples.map((x) => x.rtoMs / x.rtoTargetMs)
    const rpo = samples.map((x) => x.rpoMs / x.rpoTargetMs)
    charts.push({
      name: 'failover-rto',
      spec: {
        kind: 'ratio',
        title: 'Failover: recovery time and data loss against their targets',
        subtitle:
          `A counter printing every ${d.rto.counterMs} ms, --replicas 1, 3 nodes, lease ${d.rto.leaseMs / 1000} s, DUMP_INTERVAL ${d.rto.dumpIntervalS} s; the owner's host power-cut at a random point of an interval, ${s.trials} trials. ` +
          `RTO target = lease + restore + 1 s (median ${ms(s.rtoTargetMs)}); RPO target = effective interval + one round (median ${ms(s.rpoTargetMs)}).`,
        machine,
        yLabel: 'measured / target (median)',
        bars: [
          { name: 'RTO (kill to first output elsewhere)', value: r2(median(rto)), ...spread(rto.map(r2)), label: `${r2(median(rto))}, ${ms(s.rtoMs)}` },
          { name: 'RPO (output lost, 100 ms ticks)', value: r2(median(rpo)), ...spread(rpo.map(r2)), label: `${r2(median(rpo))}, ${ms(s.rpoMs)}` }
        ],
        target: { value: 1, label: 'target: measured = target', better: 'below' },
        notes: [`medians of the per-trial ratios; whiskers: min-max over the trials; ${source(file)}`]
      },
      figures: { leaseMs: d.rto.leaseMs, dumpIntervalS: d.rto.dumpIntervalS, summary: s }
    })
  }
  if (d.overhead != null) {
    const o = d.overhead
    const samples = o.samples
    const rounds = [...new Set(samples.map((x) => x.round))]
    const perRound = (k: 'rps' | 'setRps' | 'getRps'): number[] =>
      rounds.flatMap((r) => {
        const on = samples.find((x) => x.round === r && x.mode === 'on')
        const off = samples.find((x) => x.round === r && x.mode === 'off')
        return on == null || off == null ? [] : [r2(on[k] / off[k])]
      })
    const bar = (name: string, k: 'rps' | 'setRps' | 'getRps', value: number): Value & { name: string } => ({ name, value, ...spread(perRound(k)) })
    const stalled = o.replicationStalledUnderLoad === true ? ' REPLICATION STALLED UNDER LOAD: no generation was acknowledged during the ON runs.' : ''
    charts.push({
      name: 'failover-overhead',
      spec: {
        kind: 'ratio',
        title: 'Replication overhead: redis throughput with replication on / off',
        subtitle: `redis with ${Number(o.keys).toLocaleString('en-US')} keys, redis-benchmark -t set,get (${o.clients} clients) for ~${o.benchSeconds} s a run, --replicas 1 (on) or 0 (off), alternating, ${o.rounds} rounds; ` +
          `off ${Number(o.summary.offRps).toLocaleString('en-US')} req/s, on ${Number(o.summary.onRps).toLocaleString('en-US')} req/s; ${o.summary.ackedDuringOn} generations acknowledged during the ON runs.${stalled}`,
        machine,
        yLabel: 'requests/s on / off (medians)',
        bars: [bar('SET and GET', 'rps', o.summary.ratio), bar('SET', 'setRps', o.summary.setRatio), bar('GET', 'getRps', o.summary.getRatio)],
        target: { value: 0.95, label: 'target: at least 0.95', better: 'above' },
        notes: [`ratio of the medians; whiskers: min-max of the per-round on/off ratios; ${source(file)}`]
      },
      figures: { keys: o.keys, clients: o.clients, benchSeconds: o.benchSeconds, rounds: o.rounds, summary: o.summary, replicationStalledUnderLoad: o.replicationStalledUnderLoad }
    })
  }
  if (d.bytes != null) {
    const b = d.bytes
    const gens = b.generations
    const MB = (x: number): number => Math.round(x / 1e4) / 100
    const roundOverImage = b.bytesPerRound == null || b.imageBytes == null ? null : r2(b.bytesPerRound / b.imageBytes)
    const roundOverFull = b.bytesPerRound == null || b.fullWireBytes == null ? null : r2(b.bytesPerRound / b.fullWireBytes)
    const perRound = b.bytesPerRound == null ? 'No round after the full generation' : `Last round ${MB(b.bytesPerRound)} MB = ${roundOverImage} of its image, ${roundOverFull} of the full generation`
    charts.push({
      name: 'failover-bytes',
      spec: {
        kind: 'line',
        title: 'Replication: bytes sent per round against the image size',
        subtitle: `redis with ${Number(b.keys).toLocaleString('en-US')} keys, --replicas 1, DUMP_INTERVAL ${b.dumpIntervalS} s; generation 1 is the full one (no load), then 1% of the keys written per interval` +
          `${b.spreadWorked === true ? '' : ' (spread load stalled replication: later rounds with the writes of one interval in one burst)'}. ${perRound}; freeze ${ms(b.freezeMs)}.`,
        machine,
        xLabel: 'generation (acknowledged by the standby)',
        yLabel: 'MB (10^6 bytes)',
        series: [
          { name: 'sent to the standby (wire)', color: '#0072B2', points: gens.map((g) => ({ x: g.generation, value: MB(g.wireBytes), label: g.full ? `${MB(g.wireBytes)} (full)` : String(MB(g.wireBytes)) })) },
          { name: 'checkpoint image size', color: BASELINE_GREY, points: gens.map((g) => ({ x: g.generation, value: MB(g.imageBytes), label: String(MB(g.imageBytes)) })) }
        ],
        notes: [`generations missing from the x axis were not acknowledged (dump or round failed); ${source(file)}`]
      },
      figures: {
        keys: b.keys,
        dumpIntervalS: b.dumpIntervalS,
        spreadWorked: b.spreadWorked,
        bytesPerRound: b.bytesPerRound,
        imageBytes: b.imageBytes,
        fullWireBytes: b.fullWireBytes,
        roundOverImage,
        roundOverFull,
        freezeMs: b.freezeMs,
        intervalMs: b.intervalMs,
        generations: gens,
        phases: b.phases.map((p) => ({ mode: p.mode, seconds: p.seconds, writes: p.writes, acked: p.acked, dumps: p.dumps, dumpFailed: p.dumpFailed, generationFailed: p.generationFailed }))
      }
    })
  }
  return charts
}

/** The downtime benchmark's baseline method (benchmarks/downtime.ts). */
const BY_HAND = 'runc by hand'

function downtime (d: DowntimeResults, file: string): Chart[] {
  const { targets } = d
  // The charts against memory are of the idle beacon; the dirty rates get a chart of their own.
  const summary = d.summary.filter((s) => (s.dirtyPagesPerTick ?? 0) === 0)
  const sizes = [...new Set(summary.map((s) => s.memoryMiB))].sort((a, b) => a - b)
  const strategies = [...new Set(summary.map((s) => s.method))].filter((m) => m !== BY_HAND)
  const get = (m: number, method: string): typeof summary[number] | undefined => summary.find((s) => s.memoryMiB === m && s.method === method)
  const color = (method: string, i: number): string => method === BY_HAND ? BASELINE_GREY : ['#0072B2', '#E69F00', '#009E73'][i % 3]!
  const what = `A beacon (N MiB of seeded memory, a datagram every ${
    String(d.options.intervalMs ?? 5)
  } ms) seen by an observer on a third host; msc migrates it n1 -> n2 and back, runc by hand checkpoints it, copies the images (cp -a) and restores it on the other host. ${d.options.runs} rounds x 2 hops per method, interleaved`
  const figures = { targets, ratios: d.ratios, summary }
  const gapLine = {
    name: 'downtime',
    spec: {
      kind: 'line' as const,
      title: 'Migration downtime seen from outside, against runc by hand',
      subtitle: `${what}. Downtime: the longest gap between two datagrams at the observer. Labels: ms.`,
      machine: d.machine,
      xLabel: 'beacon memory, MiB',
      yLabel: 'observer gap, ms',
      series: [BY_HAND, ...strategies].map((method, i) => ({
        name: method === BY_HAND ? 'runc by hand (checkpoint, cp -a, restore)' : `msc ${method}`,
        color: color(method, i - 1),
        points: sizes.flatMap((m) => {
          const s = get(m, method)
          return s == null ? [] : [{ x: m, value: s.observerGapMs, min: s.observerGapMinMs, max: s.observerGapMaxMs, label: String(Math.round(s.observerGapMs)) }]
        })
      })),
      notes: [`medians; whiskers: min-max of the hops; ${source(file)}`]
    },
    figures
  }
  const ratioBars = {
    name: 'downtime-ratio',
    spec: {
      kind: 'bar' as const,
      title: 'Downtime seen from outside as a ratio of runc by hand',
      subtitle: `${what}. Observer gap of msc / observer gap of runc by hand, per memory size; the issue's targets dashed.`,
      machine: d.machine,
      yLabel: 'observer gap / runc by hand (medians)',
      groups: sizes.map((m) => `${m} MiB`),
      series: strategies.map((st, i) => ({
        name: `msc ${st}`,
        color: color(st, i),
        values: sizes.map((m): Value | null => {
          const s = get(m, st)
          const b = get(m, BY_HAND)?.observerGapMs
          if (s == null || b == null || b === 0) return null
          return { value: r2(s.observerGapMs / b), min: r2(s.observerGapMinMs / b), max: r2(s.observerGapMaxMs / b) }
        })
      })),
      // No line at 1: it would sit on top of the stop-copy target, and both are dashed alike.
      lines: [
        { value: targets.stopCopy, label: `target, stop-copy: <= ${targets.stopCopy} (upper line)` },
        { value: targets.defaultAt256, label: `target, default strategy (post-copy) at 256 MiB: <= ${targets.defaultAt256} (lower line)` }
      ],
      notes: [`whiskers: shortest and longest hop over the runc-by-hand median; ${source(file)}`]
    },
    figures
  }
  const at = sizes.includes(256) ? 256 : sizes.at(-1)!
  // In the order they run: the strategy with the most phases first (post-copy adds lazy-pages before commit).
  const phaseLists = strategies.map((st) => Object.keys(get(at, st)?.phasesMs ?? {})).sort((a, b) => b.length - a.length)
  const phases = [...new Set(phaseLists.flat())]
  const phaseBars = {
    name: 'downtime-phases',
    spec: {
      kind: 'bar' as const,
      title: `Migration phases at ${at} MiB, per strategy`,
      subtitle: `Median time of each phase as the source node reports it (bars side by side, in the order they run), beside the whole migration and the observer's gap. Labels: ms.`,
      machine: d.machine,
      yLabel: 'median time, ms',
      groups: strategies.map((st) => `msc ${st}`),
      series: [
        ...phases.map((p, i) => ({ name: p, color: PHASE_COLORS[i % PHASE_COLORS.length], values: strategies.map((st): Value | null => phaseValue(get(at, st)?.phasesMs[p])) })),
        { name: 'total (whole migration)', color: '#333333', values: strategies.map((st): Value | null => phaseValue(get(at, st)?.totalMs)) },
        { name: 'observer gap', color: '#000000', values: strategies.map((st): Value | null => phaseValue(get(at, st)?.observerGapMs)) }
      ],
      notes: [`medians over the hops; ${source(file)}`]
    },
    figures: { memoryMiB: at, phasesMs: Object.fromEntries(strategies.map((st) => [st, get(at, st)?.phasesMs ?? {}])) }
  }
  const totalLine = {
    name: 'downtime-total',
    spec: {
      kind: 'line' as const,
      title: 'Whole migration time against memory, per strategy',
      subtitle: `${what}. From the request until the source released the container (msc), or checkpoint + copy + restore (runc by hand); post-copy's includes fetching every lazy page. Labels: ms.`,
      machine: d.machine,
      xLabel: 'beacon memory, MiB',
      yLabel: 'whole migration, ms',
      series: [BY_HAND, ...strategies].map((method, i) => ({
        name: method === BY_HAND ? 'runc by hand (checkpoint, cp -a, restore)' : `msc ${method}`,
        color: color(method, i - 1),
        points: sizes.flatMap((m) => {
          const s = get(m, method)
          return s == null ? [] : [{ x: m, value: s.totalMs, label: String(Math.round(s.totalMs)) }]
        })
      })),
      notes: [`medians; ${source(file)}`]
    },
    figures: { total: Object.fromEntries([BY_HAND, ...strategies].map((m) => [m, sizes.map((x) => ({ memoryMiB: x, totalMs: get(x, m)?.totalMs ?? null }))])) }
  }
  const bytesBars = {
    name: 'downtime-bytes',
    spec: {
      kind: 'bar' as const,
      title: 'Bytes on the wire per migration',
      subtitle: `${what}. msc: what the source sent (trees, pages streamed while dumping, lazy pages over the page link); runc by hand: the size of the images it copied. Labels: MB.`,
      machine: d.machine,
      yLabel: 'MB sent (medians)',
      groups: sizes.map((m) => `${m} MiB`),
      series: [BY_HAND, ...strategies].map((method, i) => ({
        name: method === BY_HAND ? 'runc by hand (image size)' : `msc ${method}`,
        color: color(method, i - 1),
        values: sizes.map((m): Value | null => phaseValue(get(m, method)?.MB))
      })),
      notes: [`${source(file)}`]
    },
    figures: { MB: Object.fromEntries([BY_HAND, ...strategies].map((m) => [m, sizes.map((x) => ({ memoryMiB: x, MB: get(x, m)?.MB ?? null }))])) }
  }
  return [gapLine, ratioBars, phaseBars, totalLine, bytesBars, ...dirtyChart(d, what, color, file)]
}

/** Observer gap against the beacon's dirty rate at the largest memory run with more than one rate. */
function dirtyChart (d: DowntimeResults, what: string, color: (method: string, i: number) => string, file: string): Chart[] {
  const sizes = [...new Set(d.summary.map((s) => s.memoryMiB))].sort((a, b) => a - b)
  const at = sizes.filter((m) => new Set(d.summary.filter((s) => s.memoryMiB === m).map((s) => s.dirtyPagesPerTick ?? 0)).size > 1).at(-1)
  if (at == null) return []
  const rows = d.summary.filter((s) => s.memoryMiB === at)
  const methods = [...new Set(rows.map((s) => s.method))]
  const strategies = methods.filter((m) => m !== BY_HAND)
  return [{
    name: 'downtime-dirty',
    spec: {
      kind: 'line' as const,
      title: `Downtime seen from outside against the dirty rate, ${at} MiB`,
      subtitle: `${what}. The beacon rewrites pages with their own content between datagrams (a dirty rate that keeps its checksum). Labels: ms.`,
      machine: d.machine,
      xLabel: 'dirty rate, MiB/s',
      yLabel: 'observer gap, ms',
      series: methods.map((method) => ({
        name: method === BY_HAND ? 'runc by hand (checkpoint, cp -a, restore)' : `msc ${method}`,
        color: color(method, strategies.indexOf(method)),
        points: rows.filter((s) => s.method === method).map((s) => ({ x: s.dirtyMiBps ?? 0, value: s.observerGapMs, min: s.observerGapMinMs, max: s.observerGapMaxMs, label: String(Math.round(s.observerGapMs)) }))
          .sort((a, b) => a.x - b.x)
      })),
      notes: [`medians; whiskers: min-max of the hops; ${source(file)}`]
    },
    figures: { memoryMiB: at, rows: rows.map((s) => ({ method: s.method, dirtyMiBps: s.dirtyMiBps ?? 0, observerGapMs: s.observerGapMs, totalMs: s.totalMs })) }
  }]
}

const PHASE_COLORS = ['#56B4E9', '#E69F00', '#009E73', '#F0E442', '#0072B2', '#D55E00', '#CC79A7', '#999999']

function phaseValue (v: number | undefined): Value | null {
  return v == null ? null : { value: v, label: String(Math.round(v)) }
}

/** What a redis client with one connection saw, with the address moving (lan) and without (host). */
function clientDowntime (d: ClientDowntimeResults, file: string): Chart[] {
  const strategies = [...new Set(d.summary.map((s) => s.strategy))]
  const get = (mode: string, st: string) => d.summary.find((s) => s.mode === mode && s.strategy === st)
  const gap = (mode: string) =>
    strategies.map((st): Value | null => {
      const s = get(mode, st)
      return s == null ? null : { value: s.clientGapMs, min: s.clientGapMinMs, max: s.clientGapMaxMs, label: String(Math.round(s.clientGapMs)) }
    })
  const msc = (mode: string) => strategies.map((st): Value | null => phaseValue(get(mode, st)?.mscDowntimeMs ?? undefined))
  return [{
    name: 'client-downtime',
    spec: {
      kind: 'bar' as const,
      title: 'A migrated redis as its client sees it: own LAN address against the host network',
      subtitle: `A client on a third host sends PING every 5 ms on one connection to a redis with ${
        String(d.options.keys)
      } keys, migrated n1 -> n2 and back. lan: --network lan --ip, the connection survives; host: the connection is reset and the client reconnects to the new node. Labels: ms.`,
      machine: d.machine,
      yLabel: 'longest gap between answers, ms (medians)',
      groups: strategies,
      series: [
        { name: 'lan: client gap (same connection)', color: '#0072B2', values: gap('lan') },
        { name: 'host: client gap (reconnect included)', color: '#E69F00', values: gap('host') },
        { name: 'lan: msc downtimeMs', color: '#56B4E9', values: msc('lan') },
        { name: 'host: msc downtimeMs', color: '#F0E442', values: msc('host') }
      ],
      notes: [`whiskers: min-max of the hops; ${source(file)}`]
    },
    figures: { summary: d.summary, ratios: d.ratios }
  }]
}
