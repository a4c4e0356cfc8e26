// Tool calls: argument validation against the spec's JSON Schema, the handler
// context, timeouts, and turning whatever a handler returns into a CallToolResult.
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { createToolFetch } from "./fetch.js";
import { log } from "./log.js";
import type { CallToolResult, ServerDefinition, ToolContext, ToolDefinition } from "./types.js";

// ajv-formats is CommonJS; its default export arrives under `.default` in some loaders.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv2020) => Ajv2020;

export class PreparedTool {
  private readonly validateArgs: ValidateFunction | undefined;
  private readonly schemaError: string | undefined;

  constructor(
    readonly def: ToolDefinition,
    ajv: Ajv2020,
  ) {
    // The spec validator accepts draft-07 and 2020-12 schemas; both compile under
    // the 2020-12 vocabulary once the dialect marker is dropped.
    const { $schema: _dialect, ...schema } = def.inputSchema;
    try {
      this.validateArgs = ajv.compile(schema);
    } catch (err) {
      // One odd schema must not keep the other tools from being served.
      this.schemaError = err instanceof Error ? err.message : String(err);
      log("error", "input schema does not compile", { tool: def.name, error: this.schemaError });
    }
  }

  /** An error message for the model to act on, or undefined when the arguments are valid. */
  invalidArguments(args: unknown): string | undefined {
    if (!this.validateArgs) return `the tool's input schema cannot be used: ${this.schemaError}`;
    if (this.validateArgs(args)) return undefined;
    const errs = (this.validateArgs.errors ?? []) as ErrorObject[];
    return errs
      .slice(0, 10)
      .map((e) => `${e.instancePath || "(arguments)"} ${e.message ?? "is invalid"}`)
      .join("; ");
  }
}

export function prepareTools(defs: readonly ToolDefinition[]): Map<string, PreparedTool> {
  // ajv's warnings (e.g. an unknown format) go to the JSON log, not to stderr.
  const logger = {
    log: (...a: unknown[]) => log("debug", "ajv", { detail: a.map(String).join(" ") }),
    warn: (...a: unknown[]) => log("warn", "ajv", { detail: a.map(String).join(" ") }),
    error: (...a: unknown[]) => log("error", "ajv", { detail: a.map(String).join(" ") }),
  };
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false, logger });
  addFormats(ajv);
  return new Map(defs.map((d) => [d.name, new PreparedTool(d, ajv)]));
}

/** Credentials from the environment; reading one that is not configured explains itself. */
export function loadCredentials(server: ServerDefinition, env: NodeJS.ProcessEnv): Readonly<Record<string, string>> {
  const values: Record<string, string> = {};
  for (const c of server.credentials) {
    const v = env[c.key];
    if (v !== undefined && v !== "") values[c.key] = v;
    else if (c.required) log("warn", "credential not configured", { credential: c.key });
  }
  const declared = new Set(server.credentials.map((c) => c.key));
  return new Proxy(Object.freeze(values), {
    get(target, prop) {
      if (typeof prop !== "string") return undefined;
      if (prop in target) return target[prop];
      if (!declared.has(prop)) throw new Error(`credential ${prop} is not declared in this server's spec`);
      throw new Error(`credential ${prop} is not configured for this server`);
    },
  });
}

function isCallToolResult(v: unknown): v is CallToolResult {
  return (
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    Array.isArray((v as { content?: unknown }).content) &&
    (v as { content: unknown[] }).content.every((c) => typeof c === "object" && c !== null && "type" in c)
  );
}

export function toCallToolResult(value: unknown): CallToolResult {
  if (isCallToolResult(value)) return value;
  if (value === undefined) return { content: [] };
  if (typeof value === "string") return { content: [{ type: "text", text: value }] };
  const text = JSON.stringify(value, null, 2) ?? String(value);
  // Objects also go out as structured content, for clients that read it.
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    return { content: [{ type: "text", text }], structuredContent: value as Record<string, unknown> };
  }
  return { content: [{ type: "text", text }] };
}

export function errorResult(message: string): CallToolResult {
  return { isError: true, content: [{ type: "text", text: message }] };
}

export class ToolRunner {
  private readonly fetch;

  constructor(
    server: ServerDefinition,
    private readonly credentials: Readonly<Record<string, string>>,
    private readonly timeoutMs: number,
  ) {
    this.fetch = createToolFetch(server.allowedHosts);
  }

  async call(tool: PreparedTool, args: Record<string, unknown>, outer: AbortSignal | undefined): Promise<CallToolResult> {
    const invalid = tool.invalidArguments(args);
    if (invalid) return errorResult(`Invalid arguments for ${tool.def.name}: ${invalid}`);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = outer ? AbortSignal.any([outer, timeout]) : timeout;
    const name = tool.def.name;
    const ctx: ToolContext = {
      credentials: this.credentials,
      fetch: this.fetch,
      log: (message, fields = {}) => log("info", message, { ...fields, tool: name }),
      signal,
    };
    const started = Date.now();
    try {
      const aborted = new Promise<never>((_, reject) => {
        const onAbort = () =>
          reject(new Error(timeout.aborted ? `${name} timed out after ${this.timeoutMs} ms` : "call cancelled"));
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      });
      const value = await Promise.race([tool.def.handler(args, ctx), aborted]);
      log("info", "tool call", { tool: name, ok: true, ms: Date.now() - started });
      return toCallToolResult(value);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log("warn", "tool call", { tool: name, ok: false, ms: Date.now() - started, error: message });
      return errorResult(message || `${name} failed`);
    }
  }
}
