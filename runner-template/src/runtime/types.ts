// The contract between the runner and the tool handlers rendered from a spec.
// A handler is `async (args, ctx) => result`; see README.md in runner-template.
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";

export type { CallToolResult };

/** Arguments of a tool call, already validated against the tool's input schema. */
// `any` on purpose: handler bodies are written against the JSON Schema, not TypeScript types.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ToolArgs = Record<string, any>;

/** `fetch` restricted to the spec's allowed hosts (https only); never carries the caller's token. */
export type ToolFetch = (input: string | URL, init?: RequestInit) => Promise<Response>;

/** Structured log line on stdout, tagged with the tool's name. */
export type ToolLog = (message: string, fields?: Record<string, unknown>) => void;

export interface ToolContext {
  /** The spec's credentials, read from the environment; reading a missing one throws. */
  readonly credentials: Readonly<Record<string, string>>;
  readonly fetch: ToolFetch;
  readonly log: ToolLog;
  /** Aborted when the call times out or the client goes away. */
  readonly signal: AbortSignal;
}

/** A string, any JSON value, or a full MCP CallToolResult. */
export type ToolHandler = (args: ToolArgs, ctx: ToolContext) => Promise<unknown>;

export interface ToolAnnotations {
  readOnlyHint?: boolean;
  destructiveHint?: boolean;
  idempotentHint?: boolean;
  openWorldHint?: boolean;
}

export interface ToolDefinition {
  name: string;
  title?: string;
  description: string;
  inputSchema: Record<string, unknown>;
  annotations: ToolAnnotations;
  /** Scopes the caller's token needs for this tool, besides the base scope. */
  scopes: readonly string[];
  handler: ToolHandler;
}

export interface CredentialDefinition {
  key: string;
  required: boolean;
}

export interface ServerDefinition {
  name: string;
  description: string;
  version: string;
  allowedHosts: readonly string[];
  credentials: readonly CredentialDefinition[];
}

/** The declarative HTTP call of an `http` handler. */
export interface HttpCallDefinition {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  url: string;
  query: Readonly<Record<string, string>>;
  headers: Readonly<Record<string, string>>;
  bodyArgs: readonly string[];
  bodyFromArgs: boolean;
}
