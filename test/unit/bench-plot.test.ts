/**
 * The benchmarks' SVG writer (benchmarks/plot.ts): escaping, scales, ticks, and charts that
 * are well-formed XML whatever text goes into them, drawn again the same from the summary
 * kept in docs/benchmarks/.
 */
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {
  barChart,
  escapeXml,
  formatTick,
  formatValue,
  lineChart,
  linearScale,
  machineLine,
  niceTicks,
  plotResultsFile,
  ratioChart,
  renderChart,
  wrapText,
  type ChartSpec
} from '../../benchmarks/plot.ts'
import type { MachineInfo } from '../../benchmarks/lib.ts'

const dirs: string[] = []
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true })
})

/**
 * A small XML well-formedness check: one root element, every tag closed in order,
 * attributes quoted and unique, only the five named entities or character references,
 * no `<` or `&` loose in text or attribute values, no comments or processing
 * instructions (the writer emits none). Returns the problem, or null.
 */
function xmlProblem (xml: string): string | null {
  const stack: string[] = []
  let roots = 0
  let i = 0
  const name = /^[A-Za-z_][\w.:-]*/
  const badText = (s: string): string | null => {
    if (s.includes('<')) return 'a < in text'
    const amp = s.match(/&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/)
    return amp == null ? null : `a loose & at ...${s.slice(Math.max(0, amp.index! - 10), amp.index! + 10)}`
  }
  while (i < xml.length) {
    const lt = xml.indexOf('<', i)
    const chunk = lt < 0 ? xml.slice(i) : xml.slice(i, lt)
    if (stack.length === 0 && chunk.trim() !== '') return `text outside the root: ${chunk.trim().slice(0, 20)}`
    const t = badText(chunk)
    if (t != null) return t
    if (lt < 0) break
    const gt = xml.indexOf('>', lt)
    if (gt < 0) return 'an unterminated tag'
    const tag = xml.slice(lt + 1, gt)
    if (tag.startsWith('/')) {
      const n = tag.slice(1).trim()
      if (stack.pop() !== n) return `</${n}> closes nothing open`
    } else {
      const selfClosing = tag.endsWith('/')
      const body = selfClosing ? tag.slice(0, -1) : tag
      const m = name.exec(body)
      if (m == null) return `a bad tag name in <${tag.slice(0, 20)}`
      let rest = body.slice(m[0].length)
      const seen = new Set<string>()
      while (rest.trim() !== '') {
        const a = /^\s+([A-Za-z_][\w.:-]*)="([^"]*)"/.exec(rest)
        if (a == null) return `a bad attribute in <${m[0]}${rest.slice(0, 30)}`
        if (seen.has(a[1]!)) return `attribute ${a[1]} twice`
        seen.add(a[1]!)
        const bad = badText(a[2]!)
        if (bad != null) return `${bad} in attribute ${a[1]}`
        rest = rest.slice(a[0].length)
      }
      if (stack.length === 0) roots++
      if (roots > 1) return 'more than one root element'
      if (!selfClosing) stack.push(m[0])
    }
    i = gt + 1
  }
  if (stack.length > 0) return `unclosed <${stack.join('><')}>`
  return roots === 1 ? null : 'no root element'
}

const machine: MachineInfo = {
  date: '2026-11-30T17:38:40.893Z',
  hostname: 'vm',
  kernel: 'Linux 6.18.44',
  cpus: 2,
  cpuModel: 'AMD EPYC',
  memTotalGiB: 23.5,
  node: 'v24.22.3',
  loadStart: [2.1, 2.48, 2.92],
  loadEnd: [2.27, 2.37, 2.68]
}
const nasty = 'a <script>alert("x")</script> & \'b\' \u0007 ]]> &amp;'

describe('the well-formedness check itself', () => {
  test('accepts well-formed XML and names what is wrong with the rest', () => {
    assert.equal(xmlProblem('<svg a="1"><g><text x="2">a &amp; b &#38;</text></g><rect/></svg>'), null)
    assert.match(xmlProblem('<svg><g></svg>') ?? '', /closes nothing/)
    assert.match(xmlProblem('<svg><text>a < b</text></svg>') ?? '', /bad tag name/)
    assert.match(xmlProblem('<svg><text>a & b</text></svg>') ?? '', /loose &/)
    assert.match(xmlProblem('<svg a="1" a="2"/>') ?? '', /twice/)
    assert.match(xmlProblem('<svg a=1/>') ?? '', /bad attribute/)
    assert.match(xmlProblem('<svg/><svg/>') ?? '', /more than one root/)
    assert.match(xmlProblem('<svg><g>') ?? '', /unclosed/)
  })
})

describe('escapeXml', () => {
  test('escapes the five specials and drops what XML 1.0 cannot hold', () => {
    assert.equal(escapeXml('<a href="x">&\'</a>'), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;')
    assert.equal(escapeXml('bell\u0007 nul\u0000 tab\t nl\n'), 'bell nul tab\t nl\n')
    assert.equal(escapeXml('lone \ud800 surrogate \udc00'), 'lone  surrogate ')
    assert.equal(escapeXml('emoji \u{1F680} stays, 2 x 10^6 µs'), 'emoji \u{1F680} stays, 2 x 10^6 µs')
    assert.equal(escapeXml('&amp;'), '&amp;amp;', 'text that looks escaped is escaped again (it is text)')
  })
})

describe('scales and ticks', () => {
  test('linearScale maps the domain onto the range, also inverted (the y axis)', () => {
    const y = linearScale([0, 100], [300, 50])
    assert.equal(y(0), 300)
    assert.equal(y(100), 50)
    assert.equal(y(50), 175)
    assert.equal(linearScale([5, 5], [0, 10])(5), 5, 'a degenerate domain maps to the middle')
  })

  test('niceTicks: steps of 1, 2 or 5 x 10^k that cover the data', () => {
    const cases: Array<[number, number]> = [[0, 4921], [0, 1.08], [0.12, 0.97], [-3, 17], [0, 256], [1, 3], [113, 258], [0, 0.0042]]
    for (const [lo, hi] of cases) {
      const t = niceTicks(lo, hi)
      assert.ok(t[0]! <= lo && t[t.length - 1]! >= hi, `[${t}] covers [${lo}, ${hi}]`)
      assert.ok(t.length >= 3 && t.length <= 12, `[${t}] has a readable number of ticks`)
      const step = t[1]! - t[0]!
      const mant = step / 10 ** Math.floor(Math.log10(step))
      assert.ok([1, 2, 5].some((m) => Math.abs(mant - m) < 1e-9), `step ${step} of [${t}] is 1, 2 or 5 x 10^k`)
      for (let i = 1; i < t.length; i++) assert.ok(Math.abs(t[i]! - t[i - 1]! - step) < step * 1e-9, `[${t}] evenly spaced`)
    }
    assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1])
    assert.deepEqual(niceTicks(0, 0.3, 6), [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], 'no floating-point dust (0.15000000000000002)')
    assert.deepEqual(niceTicks(1, 3, 6, 1), [1, 2, 3], 'a whole-number parameter gets whole-number ticks')
    assert.deepEqual(niceTicks(5, 1), niceTicks(1, 5), 'min and max in either order')
    const flat = niceTicks(7, 7)
    assert.ok(flat[0]! < 7 && flat[flat.length - 1]! > 7, 'one value still gets an axis around it')
    assert.deepEqual(niceTicks(Number.NaN, 3), [0, 1])
  })

  test('tick and value labels', () => {
    assert.equal(formatTick(1500, 500), '1,500')
    assert.equal(formatTick(0.25, 0.05), '0.25')
    assert.equal(formatTick(1, 0.5), '1.0')
    assert.equal(formatValue(3494), '3,494')
    assert.equal(formatValue(12.34), '12.3')
    assert.equal(formatValue(0.7712), '0.77')
    assert.equal(formatValue(Number.NaN), '-')
  })

  test('wrapText keeps lines within the width and every word', () => {
    const s = 'redis with 100,000 keys, two hosts (network namespaces on a bridge), one msc node each'
    const lines = wrapText(s, 200)
    assert.ok(lines.length > 1)
    assert.equal(lines.join(' '), s)
    assert.deepEqual(wrapText('averyveryverylongword', 10), ['averyveryverylongword'])
  })

  test('the machine line says what the run ran on', () => {
    assert.equal(machineLine(machine), 'vm: 2 x AMD EPYC, 23.5 GiB, Linux 6.18.44, Node v24.22.3, load 2.1 -> 2.27')
  })
})

describe('charts', () => {
  const charts: Record<string, string> = {
    bar: barChart({
      title: nasty,
      subtitle: nasty,
      machine,
      yLabel: 'downtime, ms',
      groups: ['raw runc', nasty, 'post-copy'],
      series: [
        { name: 'baseline', values: [{ value: 1574, min: 1239, max: 1800 }, null, null] },
        { name: nasty, values: [null, { value: 3242, min: 2778, max: 3650, label: nasty }, { value: 2907 }] }
      ],
      lines: [{ value: 2000, label: nasty }],
      notes: [nasty]
    }),
    line: lineChart({
      title: 'cost against nodes',
      machine,
      xLabel: 'nodes',
      yLabel: 'RSS, MiB',
      series: [{ name: nasty, points: [{ x: 2, value: 40, min: 38, max: 44 }, { x: 8, value: 90, label: nasty }, { x: 4, value: 60 }] }]
    }),
    ratio: ratioChart({
      title: 'overhead',
      machine,
      yLabel: 'on / off',
      bars: [{ name: 'meets', value: 0.97 }, { name: 'misses', value: 0.86, min: 0.75, max: 0.93 }],
      target: { value: 0.95, label: 'target: at least 0.95', better: 'above' }
    })
  }

  for (const [kind, svg] of Object.entries(charts)) {
    test(`${kind}: well-formed plain SVG with the machine footnote, and the text escaped`, () => {
      assert.equal(xmlProblem(svg), null)
      assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
      assert.doesNotMatch(svg, /<script|javascript:|@import|url\(|href=/i, 'no scripts, no external fonts or links')
      assert.ok(svg.includes('vm: 2 x AMD EPYC, 23.5 GiB') && svg.includes('run 2026-11-30 17:38 UTC'), 'machine line and date of the run')
      assert.ok(!svg.includes('\u0007'))
    })
  }

  test('every text given is in the SVG, escaped', () => {
    const esc = 'a &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &apos;b&apos;'
    assert.ok(charts.bar!.includes(esc))
    assert.ok(charts.bar!.includes('downtime, ms') && charts.bar!.includes('raw runc') && charts.bar!.includes('baseline'))
    assert.ok(charts.line!.includes('>nodes<') && charts.line!.includes('>RSS, MiB<'))
  })

  test('bars: one rectangle per value given, none for a null; one whisker per min/max', () => {
    const bars = charts.bar!.match(/<rect [^>]*fill="(#0072B2|#E69F00)"/g) ?? []
    // Legend swatches (2) + bars (3).
    assert.equal(bars.length, 5)
    assert.equal((charts.bar!.match(/<path /g) ?? []).length, 2)
  })

  test('ratio bars are coloured by whether they meet the target', () => {
    const fills = [...charts.ratio!.matchAll(/<rect [^>]*fill="(#[0-9A-F]{6})"><title>([^<]*)</g)].map((m) => [m[2], m[1]])
    assert.deepEqual(fills, [['meets: 0.97', '#009E73'], ['misses: 0.86', '#D55E00']])
  })

  test('the line chart puts its points in x order', () => {
    const pts = /<polyline points="([^"]+)"/.exec(charts.line!)![1]!.split(' ').map((p) => Number(p.split(',')[0]))
    assert.deepEqual(pts, [...pts].sort((a, b) => a - b))
    assert.equal(pts.length, 3)
  })
})

describe('plotResultsFile', () => {
  test('draws a benchmark results file into SVG + summary, and the summary draws the same SVG again', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-plot-'))
    dirs.push(dir)
    const results = path.join(dir, 'migration-20261130T120000Z.json')
    const hop = (strategy: string, downtimeMs: number, totalMs: number): Record<string, unknown> => ({ strategy, downtimeMs, totalMs })
    await fs.writeFile(results, JSON.stringify({
      benchmark: 'migration',
      machine,
      options: { keys: 100000, runs: 1 },
      ratios: [{ strategy: 'stop-copy', 'downtime / raw runc ck+rs': 2.06 }],
      local: [{ method: 'raw-runc', checkpointMs: 900, restoreMs: 670, totalMs: 1574, imageMB: 9.7 }, { method: 'msc-local', checkpointMs: 1048, restoreMs: 1361, totalMs: 2409, imageMB: 9.7 }],
      migrations: [{ strategy: 'stop-copy', samples: 2, downtimeMs: 3242, downtimeMinMs: 2778, downtimeMaxMs: 3650, totalMs: 5189, MB: 9.7, phasesMs: { transfer: 1378 } }],
      samples: { local: [{ method: 'raw-runc', totalMs: 1574 }, { method: 'msc-local', totalMs: 2409 }], hops: [hop('stop-copy', 2778, 5000), hop('stop-copy', 3650, 5300)] }
    }))
    const out = path.join(dir, 'docs')
    const svgs = await plotResultsFile(results, out)
    assert.deepEqual(svgs.map((s) => path.basename(s)), ['migration.svg', 'migration-ratio.svg'])
    const first = await fs.readFile(path.join(out, 'migration.svg'), 'utf8')
    assert.equal(xmlProblem(first), null)
    assert.ok(first.includes('3,242') && first.includes('1,574'), 'the medians are on the bars')
    const summary = JSON.parse(await fs.readFile(path.join(out, 'migration.json'), 'utf8')) as { source: string; figures: { ratios: unknown }; spec: ChartSpec }
    assert.equal(summary.source, 'migration-20261130T120000Z.json')
    assert.deepEqual(summary.figures.ratios, [{ strategy: 'stop-copy', 'downtime / raw runc ck+rs': 2.06 }])
    assert.ok(!JSON.stringify(summary).includes('"hops"'), 'the samples stay in the results file')
    assert.equal(renderChart(summary.spec), first)
    await fs.rm(path.join(out, 'migration.svg'))
    await plotResultsFile(path.join(out, 'migration.json'), out)
    assert.equal(await fs.readFile(path.join(out, 'migration.svg'), 'utf8'), first, 'drawn again from the docs summary alone')
    assert.deepEqual((await fs.readdir(out)).sort(), ['migration-ratio.json', 'migration-ratio.svg', 'migration.json', 'migration.svg'], 'no temp files left')
  })
})
