/**
 * Plots of the benchmarks: a small SVG writer (hand-written SVG text, no packages) with
 * the chart kinds the benchmarks need, and the CLI that draws docs/benchmarks/*.svg
 * again from results files without running a benchmark.
 *
 * Chart kinds (each returns the SVG text; `writeChart` writes it with its summary):
 *   barChart    grouped bars: one group per category (a tree, a strategy), one bar per
 *               series (msc and its baselines), medians with optional min/max whiskers
 *   lineChart   values against a parameter (N nodes, container count, image size, a
 *               generation), one line per series, markers, optional whiskers
 *   ratioChart  ratios against a target line: bars that meet the target in one colour,
 *               the others in another, the target drawn and named
 * Every chart has a title, axis labels with units, a legend, and a footnote with the
 * machine line and the date of the run. The SVG is plain (no scripts, no external fonts,
 * a white background), so it reads the same in a browser and on GitHub.
 *
 * CLI: node benchmarks/plot.ts [RESULTS.json ...] [--out DIR]
 *   without files: the newest benchmarks/results/NAME-*.json of every benchmark that has
 *   charts (for failover, the newest file holding each part); a docs/benchmarks/*.json
 *   summary is also accepted (it holds the chart it was drawn from).
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { writeFileAtomic } from '../src/util/atomic-file.ts'
import { ROOT, RESULTS_DIR, type MachineInfo } from './lib.ts'

export const DOCS_DIR = path.join(ROOT, 'docs', 'benchmarks')

// ---------------------------------------------------------------------------
// pure parts: escaping, scales, ticks, numbers

/**
 * Text for SVG content and attribute values: the five XML specials as entities, and the
 * characters XML 1.0 does not allow at all (C0 controls but tab and newlines, lone
 * surrogates, U+FFFE/U+FFFF) dropped, since an entity cannot carry them either.
 */
export function escapeXml (text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;')
}

/** Maps [d0, d1] linearly onto [r0, r1] (a degenerate domain maps to the middle of the range). */
export function linearScale (domain: [number, number], range: [number, number]): (v: number) => number {
  const [d0, d1] = domain
  const [r0, r1] = range
  if (d1 === d0) return () => (r0 + r1) / 2
  return (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0)
}

/** A "nice" step (1, 2 or 5 times a power of ten) giving about `count` intervals over `span`. */
export function niceStep (span: number, count = 5, minStep = 0): number {
  if (!(span > 0) || !Number.isFinite(span)) return Math.max(1, minStep)
  const raw = span / Math.max(1, count)
  const p = 10 ** Math.floor(Math.log10(raw))
  const f = raw / p
  return Math.max(minStep, (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p)
}

/**
 * Ticks for an axis showing [min, max]: multiples of a nice step (at least `minStep`: 1
 * for a count of nodes), from the last one at or below min to the first one at or above
 * max (so the data never sits outside the axis).
 */
export function niceTicks (min: number, max: number, count = 5, minStep = 0): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1]
  if (min > max) [min, max] = [max, min]
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) / 2
    return niceTicks(min - pad, max + pad, count, minStep)
  }
  const step = niceStep(max - min, count, minStep)
  const first = Math.floor(min / step + 1e-9)
  const last = Math.ceil(max / step - 1e-9)
  const decimals = decimalsOf(step)
  const ticks: number[] = []
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toFixed(decimals)))
  return ticks
}

/** Decimals needed to print multiples of `step` exactly (0.25 -> 2, 5 -> 0). */
function decimalsOf (step: number): number {
  for (let d = 0; d < 10; d++) if (Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) < 1e-6) return d
  return 10
}

/** A tick label: as many decimals as the step needs, thousands grouped (1,500; 0.25). */
export function formatTick (v: number, step: number): string {
  const d = decimalsOf(step)
  return v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })
}

/** A value label: 3 significant figures below 100, whole numbers above (0.77, 12.3, 3,494). */
export function formatValue (v: number): string {
  if (!Number.isFinite(v)) return '-'
  const a = Math.abs(v)
  const d = a >= 100 ? 0 : a >= 10 ? 1 : 2
  return v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })
}

/** The machine a run was made on, in one line (the footnote of every chart). */
export function machineLine (m: MachineInfo): string {
  const load = m.loadEnd == null ? `${m.loadStart[0]}` : `${m.loadStart[0]} -> ${m.loadEnd[0]}`
  return `${m.hostname}: ${m.cpus} x ${m.cpuModel}, ${m.memTotalGiB} GiB, ${m.kernel}, Node ${m.node}, load ${load}`
}

/** "2026-11-30 17:38 UTC" from an ISO date. */
export function runDate (iso: string): string {
  return iso.length >= 16 ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : iso
}

// ---------------------------------------------------------------------------
// chart specifications (plain data: they are also what docs/benchmarks/NAME.json keeps)

/** One bar or point: the median, and optionally the spread (min/max) of its samples. */
export interface Value {
  value: number
  min?: number
  max?: number
  label?: string
}

export interface Line {
  value: number
  label: string
}

interface Common {
  title: string
  subtitle?: string
  machine: MachineInfo
  /** Footnote lines after the machine line (what the whiskers are, the results file). */
  notes?: string[]
}

export interface BarSpec extends Common {
  kind: 'bar'
  /** The y axis, with its unit: "downtime, ms". */
  yLabel: string
  groups: string[]
  /** values[i] belongs to groups[i]; a null leaves no gap (the group's other bars close up). */
  series: Array<{ name: string; values: Array<Value | null>; color?: string }>
  /** Dashed horizontal lines (a baseline at 1, a target). */
  lines?: Line[]
}

export interface LineSpec extends Common {
  kind: 'line'
  xLabel: string
  yLabel: string
  series: Array<{ name: string; points: Array<Value & { x: number }>; color?: string }>
  lines?: Line[]
  /** Start the y axis at 0 (default true: costs and sizes). */
  yFromZero?: boolean
}

export interface RatioSpec extends Common {
  kind: 'ratio'
  /** The y axis: "measured / target" or "msc / baseline". */
  yLabel: string
  bars: Array<Value & { name: string }>
  target: Line & { better: 'below' | 'above' }
}

export type ChartSpec = BarSpec | LineSpec | RatioSpec

// ---------------------------------------------------------------------------
// drawing

/** Okabe-Ito: distinguishable with the common colour-vision deficiencies. */
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#999999', '#F0E442']
const MEETS = '#009E73'
const MISSES = '#D55E00'
const WIDTH = 760
const PLOT_HEIGHT = 280
const LEFT = 78
const RIGHT = 24
const FONT = 12
const CHAR = 0.56 // average glyph width of a sans-serif font, in ems (for layout only)

function textWidth (s: string, size = FONT): number {
  return s.length * size * CHAR
}

/** Splits `s` at spaces into lines of at most `width` px (a word longer than that stays whole). */
export function wrapText (s: string, width: number, size = FONT): string[] {
  const lines: string[] = []
  let cur = ''
  for (const word of s.split(/\s+/).filter((w) => w !== '')) {
    const next = cur === '' ? word : `${cur} ${word}`
    if (cur !== '' && textWidth(next, size) > width) {
      lines.push(cur)
      cur = word
    } else {
      cur = next
    }
  }
  if (cur !== '') lines.push(cur)
  return lines.length === 0 ? [''] : lines
}

function n (x: number): string {
  return String(Math.round(x * 10) / 10)
}

interface Attrs {
  [k: string]: string | number | undefined
}

function attrs (a: Attrs): string {
  return Object.entries(a).filter(([, v]) => v !== undefined).map(([k, v]) => ` ${k}="${typeof v === 'number' ? n(v) : escapeXml(v!)}"`).join('')
}

function text (x: number, y: number, s: string, a: Attrs = {}): string {
  return `<text${attrs({ x, y, ...a })}>${escapeXml(s)}</text>`
}

/** A value label over the data: a white halo keeps it readable where it crosses a line. */
function valueLabel (x: number, y: number, s: string, a: Attrs = {}): string {
  return text(x, y, s, { 'font-size': 11, fill: '#222', stroke: '#ffffff', 'stroke-width': 3, 'paint-order': 'stroke', 'stroke-linejoin': 'round', ...a })
}

interface LegendItem {
  name: string
  color: string
  dashed?: boolean
  series?: number
}

/** Line patterns and marker shapes per series, so lines that coincide stay told apart. */
const DASHES = [undefined, '7 4', '2 3', '10 3 2 3']

function marker (series: number, cx: number, cy: number, color: string, title?: string): string {
  const t = title == null ? '' : `<title>${escapeXml(title)}</title>`
  const a = { fill: color, stroke: '#ffffff', 'stroke-width': 1 }
  switch (series % 4) {
    case 1:
      return `<rect${attrs({ x: cx - 4, y: cy - 4, width: 8, height: 8, ...a })}>${t}</rect>`
    case 2:
      return `<path${attrs({ d: `M${n(cx)} ${n(cy - 5)}L${n(cx + 5)} ${n(cy + 4)}H${n(cx - 5)}Z`, ...a })}>${t}</path>`
    case 3:
      return `<path${attrs({ d: `M${n(cx)} ${n(cy - 5)}L${n(cx + 5)} ${n(cy)}L${n(cx)} ${n(cy + 5)}L${n(cx - 5)} ${n(cy)}Z`, ...a })}>${t}</path>`
    default:
      return `<circle${attrs({ cx, cy, r: 4.5, ...a })}>${t}</circle>`
  }
}

/** The legend as rows of swatches and names, wrapped to the width; returns the SVG and its height. */
function legend (items: LegendItem[], top: number): { svg: string; height: number } {
  if (items.length === 0) return { svg: '', height: 0 }
  const parts: string[] = []
  let x = LEFT
  let y = top
  for (const it of items) {
    const w = 18 + textWidth(it.name) + 18
    if (x + w > WIDTH - RIGHT && x > LEFT) {
      x = LEFT
      y += 18
    }
    if (it.series != null) {
      parts.push(`<line${attrs({ x1: x - 3, y1: y + 6, x2: x + 15, y2: y + 6, stroke: it.color, 'stroke-width': 2, 'stroke-dasharray': DASHES[it.series % DASHES.length] })}/>`)
      parts.push(marker(it.series, x + 6, y + 6, it.color))
    } else {
      parts.push(it.dashed === true
        ? `<line${attrs({ x1: x, y1: y + 6, x2: x + 12, y2: y + 6, stroke: it.color, 'stroke-width': 2, 'stroke-dasharray': '4 3' })}/>`
        : `<rect${attrs({ x, y: y + 1, width: 12, height: 10, fill: it.color })}/>`)
    }
    const gap = it.series != null ? 21 : 17
    parts.push(text(x + gap, y + 10, it.name))
    x += w + gap - 17
  }
  return { svg: parts.join('\n'), height: y - top + 18 }
}

interface Frame {
  /** Top of the plot area, after title, subtitle and legend. */
  plotTop: number
  header: string
}

function header (spec: Common, items: LegendItem[]): Frame {
  const parts = [text(LEFT, 24, spec.title, { 'font-size': 16, 'font-weight': 'bold' })]
  let y = 24
  for (const line of spec.subtitle == null ? [] : wrapText(spec.subtitle, WIDTH - LEFT - RIGHT)) {
    y += 17
    parts.push(text(LEFT, y, line, { fill: '#444' }))
  }
  const lg = legend(items, y + 10)
  parts.push(lg.svg)
  return { plotTop: y + 10 + lg.height + 14, header: parts.join('\n') }
}

/** Footnote lines: the machine line, the date of the run, the notes; returns the SVG and its height. */
function footer (spec: Common, top: number): { svg: string; height: number } {
  const lines = [
    ...wrapText(`${machineLine(spec.machine)}; run ${runDate(spec.machine.date)}`, WIDTH - 2 * 12, 11),
    ...(spec.notes ?? []).flatMap((nt) => wrapText(nt, WIDTH - 2 * 12, 11))
  ]
  const svg = lines.map((l, i) => text(12, top + 14 + i * 14, l, { 'font-size': 11, fill: '#555' })).join('\n')
  return { svg, height: lines.length * 14 + 8 }
}

function svgDocument (spec: Common, height: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg"${attrs({ width: WIDTH, height, viewBox: `0 0 ${WIDTH} ${n(height)}`, 'font-family': 'DejaVu Sans, Helvetica, Arial, sans-serif', 'font-size': FONT })}>`,
    `<title>${escapeXml(spec.title)}</title>`,
    `<rect${attrs({ x: 0, y: 0, width: WIDTH, height, fill: '#ffffff' })}/>`,
    ...body,
    '</svg>',
    ''
  ].join('\n')
}

/** Horizontal grid lines, tick labels and the rotated y label for ticks over [top, bottom]. */
function yAxis (ticks: number[], y: (v: number) => number, label: string, top: number, bottom: number): string {
  const step = ticks.length > 1 ? ticks[1]! - ticks[0]! : 1
  const parts = ticks.map((t) =>
    [
      `<line${attrs({ x1: LEFT, y1: y(t), x2: WIDTH - RIGHT, y2: y(t), stroke: t === 0 ? '#888' : '#e3e3e3', 'stroke-width': 1 })}/>`,
      text(LEFT - 6, y(t) + 4, formatTick(t, step), { 'text-anchor': 'end', fill: '#333' })
    ].join('\n')
  )
  const mid = (top + bottom) / 2
  parts.push(text(18, mid, label, { transform: `rotate(-90 18 ${n(mid)})`, 'text-anchor': 'middle', fill: '#222' }))
  return parts.join('\n')
}

/** Dashed reference lines across the plot (named in the legend). */
function refLines (lines: Line[], y: (v: number) => number): string {
  return lines.map((l) => `<line${attrs({ x1: LEFT, y1: y(l.value), x2: WIDTH - RIGHT, y2: y(l.value), stroke: '#333', 'stroke-width': 1.5, 'stroke-dasharray': '6 4' })}><title>${escapeXml(l.label)}</title></line>`).join('\n')
}

function whisker (cx: number, lo: number, hi: number, y: (v: number) => number): string {
  return `<path${attrs({ d: `M${n(cx)} ${n(y(lo))}V${n(y(hi))}M${n(cx - 4)} ${n(y(lo))}H${n(cx + 4)}M${n(cx - 4)} ${n(y(hi))}H${n(cx + 4)}`, stroke: '#222', 'stroke-width': 1.2, fill: 'none' })}/>`
}

/** The y domain of bars: from 0 (or the lowest value, if negative) to the highest value, whisker or line. */
function barTicks (values: Value[], lines: Line[]): number[] {
  const all = [...values.flatMap((v) => [v.value, v.min ?? v.value, v.max ?? v.value]), ...lines.map((l) => l.value)].filter(Number.isFinite)
  const hi = Math.max(0, ...all)
  const lo = Math.min(0, ...all)
  // A little room above the highest bar for its label.
  return niceTicks(lo, hi === lo ? 1 : hi + (hi - lo) * 0.08, 5)
}

interface Bar {
  group: number
  value: Value
  color: string
}

/** Bars in groups along x: the shared drawing of barChart and ratioChart. */
function drawBars (spec: Common & { yLabel: string }, groups: string[], bars: Bar[], lines: Line[], items: LegendItem[]): string {
  const frame = header(spec, items)
  const top = frame.plotTop
  const bottom = top + PLOT_HEIGHT
  const ticks = barTicks(bars.map((b) => b.value), lines)
  const y = linearScale([ticks[0]!, ticks[ticks.length - 1]!], [bottom, top])
  const groupWidth = (WIDTH - LEFT - RIGHT) / Math.max(1, groups.length)
  const body: string[] = [frame.header, yAxis(ticks, y, spec.yLabel, top, bottom)]
  // Drawn last, over bars, whiskers and lines.
  const labels: string[] = []
  let labelLines = 1
  groups.forEach((g, gi) => {
    const inGroup = bars.filter((b) => b.group === gi)
    const slot = Math.min(64, (groupWidth * 0.8) / Math.max(1, inGroup.length))
    const x0 = LEFT + gi * groupWidth + (groupWidth - slot * inGroup.length) / 2
    inGroup.forEach((b, i) => {
      const x = x0 + i * slot + slot * 0.08
      const w = slot * 0.84
      const v = b.value
      body.push(`<rect${attrs({ x, y: Math.min(y(0), y(v.value)), width: w, height: Math.max(0.5, Math.abs(y(0) - y(v.value))), fill: b.color })}><title>${escapeXml(`${g}: ${formatValue(v.value)}`)}</title></rect>`)
      const hasSpread = v.min != null && v.max != null && Number.isFinite(v.min) && Number.isFinite(v.max)
      if (hasSpread) body.push(whisker(x + w / 2, v.min!, v.max!, y))
      const top0 = Math.min(y(0), y(v.value), hasSpread ? y(v.max!) : Infinity)
      labels.push(valueLabel(x + w / 2, top0 - 5, v.label ?? formatValue(v.value), { 'text-anchor': 'middle' }))
    })
    const label = wrapText(g, groupWidth - 8)
    labelLines = Math.max(labelLines, label.length)
    for (const [li, l] of label.entries()) body.push(text(LEFT + gi * groupWidth + groupWidth / 2, bottom + 18 + li * 15, l, { 'text-anchor': 'middle', fill: '#222' }))
  })
  body.push(refLines(lines, y), ...labels)
  const foot = footer(spec, bottom + 14 + labelLines * 15)
  body.push(foot.svg)
  return svgDocument(spec, bottom + 14 + labelLines * 15 + foot.height, body)
}

/** Grouped bars: per group, one bar per series that has a value there; whiskers from min/max. */
export function barChart (spec: Omit<BarSpec, 'kind'>): string {
  const colors = spec.series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]!)
  const bars: Bar[] = spec.groups.flatMap((_, gi) =>
    spec.series.flatMap((s, si) => {
      const v = s.values[gi]
      return v == null || !Number.isFinite(v.value) ? [] : [{ group: gi, value: v, color: colors[si]! }]
    })
  )
  const items: LegendItem[] = [
    ...spec.series.map((s, i) => ({ name: s.name, color: colors[i]! })),
    ...(spec.lines ?? []).map((l) => ({ name: l.label, color: '#333', dashed: true }))
  ]
  return drawBars(spec, spec.groups, bars, spec.lines ?? [], items)
}

/** Ratio bars against a target: meeting bars green, missing ones orange-red; the target dashed. */
export function ratioChart (spec: Omit<RatioSpec, 'kind'>): string {
  const meets = (v: number): boolean => spec.target.better === 'below' ? v <= spec.target.value : v >= spec.target.value
  const bars: Bar[] = spec.bars.map((b, i) => ({ group: i, value: b, color: meets(b.value) ? MEETS : MISSES }))
  const items: LegendItem[] = [
    { name: `meets the target (${spec.target.better === 'below' ? '<=' : '>='} ${spec.target.value})`, color: MEETS },
    { name: 'misses it', color: MISSES },
    { name: spec.target.label, color: '#333', dashed: true }
  ]
  return drawBars(spec, spec.bars.map((b) => b.name), bars, [spec.target], items)
}

/** Lines of values against a numeric parameter, markers at the points, whiskers from min/max. */
export function lineChart (spec: Omit<LineSpec, 'kind'>): string {
  const colors = spec.series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]!)
  const items: LegendItem[] = [
    ...spec.series.map((s, i) => ({ name: s.name, color: colors[i]!, series: i })),
    ...(spec.lines ?? []).map((l) => ({ name: l.label, color: '#333', dashed: true }))
  ]
  const frame = header(spec, items)
  const top = frame.plotTop
  const bottom = top + PLOT_HEIGHT
  const points = spec.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.value))
  const ys = [...points.flatMap((p) => [p.value, p.min ?? p.value, p.max ?? p.value]), ...(spec.lines ?? []).map((l) => l.value)].filter(Number.isFinite)
  const yLo = spec.yFromZero === false ? Math.min(...ys) : Math.min(0, ...ys)
  const yHi = Math.max(...ys)
  const yTicks = niceTicks(yLo, yHi + (yHi - yLo) * 0.05, 5)
  const xs = points.map((p) => p.x)
  // Whole-number parameters (nodes, containers, generations) get whole-number ticks.
  const xTicks = niceTicks(Math.min(...xs), Math.max(...xs), 6, xs.every(Number.isInteger) ? 1 : 0)
  const plotLeft = LEFT + 16
  const plotRight = WIDTH - RIGHT - 16
  const x = linearScale([xTicks[0]!, xTicks[xTicks.length - 1]!], [plotLeft, plotRight])
  const y = linearScale([yTicks[0]!, yTicks[yTicks.length - 1]!], [bottom, top])
  const xStep = xTicks.length > 1 ? xTicks[1]! - xTicks[0]! : 1
  const body: string[] = [frame.header, yAxis(yTicks, y, spec.yLabel, top, bottom)]
  for (const t of xTicks) {
    body.push(`<line${attrs({ x1: x(t), y1: bottom, x2: x(t), y2: bottom + 5, stroke: '#888' })}/>`)
    body.push(text(x(t), bottom + 19, formatTick(t, xStep), { 'text-anchor': 'middle', fill: '#333' }))
  }
  body.push(text((LEFT + WIDTH - RIGHT) / 2, bottom + 38, spec.xLabel, { 'text-anchor': 'middle', fill: '#222' }))
  body.push(refLines(spec.lines ?? [], y))
  const labels: string[] = []
  spec.series.forEach((s, si) => {
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.value)).sort((a, b) => a.x - b.x)
    if (pts.length > 1) body.push(`<polyline${attrs({ points: pts.map((p) => `${n(x(p.x))},${n(y(p.value))}`).join(' '), fill: 'none', stroke: colors[si], 'stroke-width': 2, 'stroke-dasharray': DASHES[si % DASHES.length] })}/>`)
    for (const p of pts) {
      if (p.min != null && p.max != null && Number.isFinite(p.min) && Number.isFinite(p.max)) body.push(whisker(x(p.x), p.min, p.max, y))
      body.push(marker(si, x(p.x), y(p.value), colors[si]!, `${s.name} at ${formatValue(p.x)}: ${p.label ?? formatValue(p.value)}`))
      if (p.label != null) labels.push(valueLabel(x(p.x) + 6, y(p.value) - 7, p.label))
    }
  })
  body.push(...labels)
  const foot = footer(spec, bottom + 48)
  body.push(foot.svg)
  return svgDocument(spec, bottom + 48 + foot.height, body)
}

/** The SVG of any chart spec (what a docs/benchmarks/NAME.json holds). */
export function renderChart (spec: ChartSpec): string {
  switch (spec.kind) {
    case 'bar':
      return barChart(spec)
    case 'line':
      return lineChart(spec)
    case 'ratio':
      return ratioChart(spec)
  }
}

// ---------------------------------------------------------------------------
// files

/** A chart as drawn from one run: its file name (no extension), spec, and the figures the docs quote. */
export interface Chart {
  name: string
  spec: ChartSpec
  /** Medians and ratios of the run (small: no samples), kept beside the SVG. */
  figures: unknown
}

/**
 * Writes DIR/NAME.svg and DIR/NAME.json (the spec, the figures and the results file they
 * came from), each atomically; returns the SVG's path.
 */
export async function writeChart (chart: Chart, source: string, dir = DOCS_DIR): Promise<string> {
  await fs.mkdir(dir, { recursive: true })
  const svg = path.join(dir, `${chart.name}.svg`)
  const summary = { chart: chart.name, source: path.basename(source), figures: chart.figures, spec: chart.spec }
  await writeFileAtomic(svg, renderChart(chart.spec), { mode: 0o644 })
  await writeFileAtomic(path.join(dir, `${chart.name}.json`), JSON.stringify(summary, null, 2) + '\n', { mode: 0o644 })
  return svg
}

/** The benchmark a results file belongs to: its `benchmark` field, or the name before the timestamp. */
export function benchmarkOf (file: string, data: { benchmark?: unknown }): string {
  if (typeof data.benchmark === 'string') return data.benchmark
  return path.basename(file).replace(/-\d{8}T\d{6}Z\.json$/, '')
}

/**
 * Draws the charts of one results file into `dir` (what a benchmark calls at the end of
 * its run); returns the SVGs written (none for a benchmark without charts).
 */
export async function plotResultsFile (file: string, dir = DOCS_DIR): Promise<string[]> {
  const { chartsFor } = await import('./plot-charts.ts')
  const data = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>
  if (typeof data.chart === 'string' && data.spec != null) {
    // A docs summary: draw its chart again as it is.
    return [await writeChart({ name: data.chart, spec: data.spec as ChartSpec, figures: data.figures }, String(data.source), dir)]
  }
  const out: string[] = []
  for (const chart of chartsFor(benchmarkOf(file, data), data, path.basename(file))) out.push(await writeChart(chart, file, dir))
  return out
}

/** Prints where a benchmark's plots went; a failure to plot does not fail the benchmark. */
export async function plotAfterRun (file: string): Promise<void> {
  try {
    const svgs = await plotResultsFile(file)
    process.stdout.write(svgs.map((s) => `plot:    ${path.relative(process.cwd(), s)}\n`).join(''))
  } catch (err) {
    process.stderr.write(`plotting ${file} failed: ${(err as Error).stack ?? String(err)}\n`)
  }
}

/** The results files the CLI draws by default: per chart, the newest file that has what it needs. */
async function newestResults (): Promise<Array<{ file: string; only: string[] }>> {
  const { CHARTED, chartNames } = await import('./plot-charts.ts')
  const names = (await fs.readdir(RESULTS_DIR).catch(() => [] as string[])).filter((f) => f.endsWith('.json')).sort().reverse()
  const picks = new Map<string, string[]>()
  for (const bench of CHARTED) {
    const wanted = new Set<string>()
    for (const f of names.filter((x) => benchmarkOf(x, {}) === bench)) {
      const data = JSON.parse(await fs.readFile(path.join(RESULTS_DIR, f), 'utf8')) as Record<string, unknown>
      for (const c of chartNames(bench, data)) {
        if (wanted.has(c)) continue
        wanted.add(c)
        picks.set(f, [...(picks.get(f) ?? []), c])
      }
    }
  }
  return [...picks].map(([f, only]) => ({ file: path.join(RESULTS_DIR, f), only }))
}

async function cli (argv: string[]): Promise<void> {
  let dir = DOCS_DIR
  const files: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node benchmarks/plot.ts [RESULTS.json ...] [--out DIR]\n' +
        '  default: the newest benchmarks/results/NAME-*.json of each benchmark with charts\n')
      return
    }
    if (a === '--out') dir = path.resolve(argv[++i] ?? '')
    else if (a.startsWith('--out=')) dir = path.resolve(a.slice(6))
    else if (a.startsWith('-')) throw new Error(`unknown flag ${a}`)
    else files.push(path.resolve(a))
  }
  if (files.length > 0) {
    for (const f of files) {
      const svgs = await plotResultsFile(f, dir)
      if (svgs.length === 0) process.stdout.write(`${path.basename(f)}: no charts for this benchmark\n`)
      for (const svg of svgs) process.stdout.write(`${path.relative(process.cwd(), svg)}  (from ${path.basename(f)})\n`)
    }
    return
  }
  const { chartsFor } = await import('./plot-charts.ts')
  const picks = await newestResults()
  if (picks.length === 0) throw new Error(`no results in ${RESULTS_DIR}: run a benchmark first, or name a file`)
  for (const { file, only } of picks) {
    const data = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>
    for (const chart of chartsFor(benchmarkOf(file, data), data, path.basename(file)).filter((c) => only.includes(c.name))) {
      const svg = await writeChart(chart, file, dir)
      process.stdout.write(`${path.relative(process.cwd(), svg)}  (from ${path.basename(file)})\n`)
    }
  }
}

if (import.meta.main) {
  try {
    await cli(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`plot: ${(err as Error).message}\n`)
    process.exitCode = 1
  }
}
