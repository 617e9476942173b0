import fs from 'node:fs/promises'
import path from 'node:path'

// Lines CRIU prints on every run on these hosts that mean nothing (see host notes).
const HARMLESS = [/RLIMIT_NOFILE/, /Hardware breakpoints/]

/**
 * The lines of a CRIU log that explain a failure: every `Error (...)` line that is not
 * known noise, plus the final verdict line, at most `max` of them (the last ones).
 */
export async function criuErrorLines (workDir: string, logName: string, max = 12): Promise<string[]> {
  let text: string
  try {
    text = await fs.readFile(path.join(workDir, logName), 'utf8')
  } catch {
    return []
  }
  const lines = text.split('\n').filter((l) => (/Error \(|FAILED|failed/.test(l)) && !HARMLESS.some((re) => re.test(l)))
  return lines.slice(-max).map((l) => l.trim())
}

/** runc's own error message from its stderr or its --log json output. */
export function runcMessage (stderr: string): string {
  const msgs: string[] = []
  for (const line of stderr.split('\n')) {
    const t = line.trim()
    if (t === '') continue
    if (t.startsWith('{')) {
      try {
        const j = JSON.parse(t) as { level?: string; msg?: string }
        if (j.level === 'error' || j.level === 'fatal') msgs.push((j.msg ?? t).replace(/\s*\n\s*/g, '; '))
      } catch {
        msgs.push(t)
      }
      continue
    }
    const m = /msg="((?:[^"\\]|\\.)*)"/.exec(t)
    if (m != null) {
      if (/level=(error|fatal)/.test(t)) msgs.push(m[1]!.replace(/\\n/g, '; ').replace(/\\"/g, '"'))
    } else msgs.push(t)
  }
  return msgs.join('; ') || stderr.trim()
}
