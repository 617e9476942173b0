/** Plain-text rendering of a DoctorReport for `msc doctor` (the --json form prints the report as is). */
import type { DoctorReport, DoctorStatus } from './checks.ts'

const COLORS: Record<DoctorStatus, string> = { ok: '\x1b[32m', warn: '\x1b[33m', fail: '\x1b[31m' }
const RESET = '\x1b[0m'

/** Values come from tool output: keep each row on one line so the columns stay aligned. */
function oneLine (s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim()
}

/**
 * CHECK / STATUS / VALUE table, a "-> fix:" line under every row that is not ok,
 * then the usable strategies. `color` should be false unless stdout is a TTY.
 * No trailing newline (meant for console.log).
 */
export function renderDoctorTable (report: DoctorReport, color: boolean): string {
  const rows = report.checks.map(c => ({ ...c, value: oneLine(c.value) }))
  const idWidth = Math.max('CHECK'.length, ...rows.map(r => r.id.length))
  const statusWidth = Math.max('STATUS'.length, ...rows.map(r => r.status.length))
  // Pad before colouring: escape codes have no width on screen but count in .length.
  const paint = (status: DoctorStatus, text: string): string => color ? `${COLORS[status]}${text}${RESET}` : text
  const lines = [`${'CHECK'.padEnd(idWidth)}  ${'STATUS'.padEnd(statusWidth)}  VALUE`]
  for (const r of rows) {
    lines.push(`${r.id.padEnd(idWidth)}  ${paint(r.status, r.status.padEnd(statusWidth))}  ${r.value}`.trimEnd())
    if (r.status !== 'ok' && r.fix) lines.push(`  -> fix: ${oneLine(r.fix)}`)
  }
  lines.push('')
  lines.push(`usable strategies: ${report.strategies.length > 0 ? report.strategies.join(', ') : 'none'}`)
  return lines.join('\n')
}
