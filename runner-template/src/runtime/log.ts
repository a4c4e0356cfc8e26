// Structured logs: one JSON object per line on stdout, so the platform can
// parse container logs. Never log tokens, credentials or request bodies.

export type Level = "debug" | "info" | "warn" | "error";

export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  const line: Record<string, unknown> = { ts: new Date().toISOString(), level, msg };
  for (const [k, v] of Object.entries(fields)) {
    if (k !== "ts" && k !== "level" && k !== "msg") line[k] = v instanceof Error ? v.message : v;
  }
  let text: string;
  try {
    text = JSON.stringify(line);
  } catch {
    // Circular or BigInt fields from handler code must not crash the server.
    text = JSON.stringify({ ts: line.ts, level, msg, note: "fields were not serialisable" });
  }
  process.stdout.write(text + "\n");
}
