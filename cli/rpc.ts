/**
 * JSON-RPC 2.0 as the daemon's control socket speaks it: one request or
 * response per line (newline-delimited JSON, each line at most
 * {@linkcode MAX_LINE_BYTES}), the standard error codes and the daemon's
 * own application codes.
 *
 * @example An error a method throws and the response it becomes
 * ```ts
 * import { errorResponse, RpcError, RpcErrorCode } from "./rpc.ts";
 *
 * const e = new RpcError(RpcErrorCode.DEVICE_NOT_FOUND, "no device named x; see dev show");
 * console.log(JSON.stringify(errorResponse(1, e)));
 * ```
 *
 * @module
 */

/** The longest request line the daemon reads, in bytes (newline excluded). */
export const MAX_LINE_BYTES = 65536;

/** The most requests one batch (a JSON array) may hold. */
export const MAX_BATCH = 64;

/**
 * JSON-RPC error codes: the standard ones (-32700 to -32603) and the
 * daemon's application codes (-32000 and below), documented in
 * `docs/daemon.md`.
 */
export const RpcErrorCode = {
  /** The line is not JSON, or longer than {@linkcode MAX_LINE_BYTES}. */
  PARSE_ERROR: -32700,
  /** Not a JSON-RPC 2.0 request object. */
  INVALID_REQUEST: -32600,
  /** No method of that name. */
  METHOD_NOT_FOUND: -32601,
  /** Missing, extra or wrongly typed parameters, or values out of range. */
  INVALID_PARAMS: -32602,
  /** A fault in the daemon itself. */
  INTERNAL_ERROR: -32603,
  /** No device of that name. */
  DEVICE_NOT_FOUND: -32000,
  /** A device of that name already exists. */
  DEVICE_EXISTS: -32001,
  /** No driver of that name is loaded. */
  DRIVER_NOT_FOUND: -32002,
  /** The socket path is in use or cannot be bound or reached. */
  SOCKET_UNAVAILABLE: -32003,
  /** The driver refused to create the device (its probe failed). */
  DRIVER_REFUSED: -32004,
  /** A driver module could not be loaded (missing file, not a driver, name taken). */
  DRIVER_LOAD_FAILED: -32005,
  /** A driver module was built for a contract version this daemon does not serve. */
  CONTRACT_MISMATCH: -32006,
  /** The device cannot do what was asked (a driver without counter reset). */
  NOT_SUPPORTED: -32007,
} as const;

/** One of the codes of {@linkcode RpcErrorCode}. */
export type RpcErrorCodeValue = typeof RpcErrorCode[keyof typeof RpcErrorCode];

/** An error a method raises; the response carries its code and message. */
export class RpcError extends Error {
  /** The JSON-RPC error code. */
  readonly code: number;
  /** Optional machine-readable details (`error.data`). */
  readonly data?: unknown;

  /**
   * An error to answer with.
   *
   * @param code A code of {@linkcode RpcErrorCode}.
   * @param message What went wrong and what to do next.
   * @param data Optional details.
   */
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.data = data;
  }
}

/** A request id: a string, a number or null. */
export type RpcId = string | number | null;

/** A JSON-RPC 2.0 request. Without `id` it is a notification (no response). */
export interface RpcRequest {
  /** Always `"2.0"`. */
  jsonrpc: "2.0";
  /** The method name. */
  method: string;
  /** Named parameters (the daemon takes no positional ones). */
  params?: Record<string, unknown>;
  /** The id echoed in the response; absent for a notification. */
  id?: RpcId;
}

/** A successful response. */
export interface RpcSuccess {
  /** Always `"2.0"`. */
  jsonrpc: "2.0";
  /** The method's result. */
  result: unknown;
  /** The request's id. */
  id: RpcId;
}

/** An error response. */
export interface RpcFailure {
  /** Always `"2.0"`. */
  jsonrpc: "2.0";
  /** The error. */
  error: { code: number; message: string; data?: unknown };
  /** The request's id, or null when it could not be read. */
  id: RpcId;
}

/** A response of either kind. */
export type RpcResponse = RpcSuccess | RpcFailure;

/** The error response for `e` (an {@linkcode RpcError}, or any other error as internal). */
export function errorResponse(id: RpcId, e: unknown): RpcFailure {
  if (e instanceof RpcError) {
    const error: RpcFailure["error"] = { code: e.code, message: e.message };
    if (e.data !== undefined) error.data = e.data;
    return { jsonrpc: "2.0", error, id };
  }
  return {
    jsonrpc: "2.0",
    error: {
      code: RpcErrorCode.INTERNAL_ERROR,
      message: `internal error: ${e instanceof Error ? e.message : String(e)}; ` +
        `the daemon's log has details`,
    },
    id,
  };
}

/** A method: named parameters in, a JSON-able result out (or a thrown {@linkcode RpcError}). */
export type RpcMethod = (params: Record<string, unknown>) => unknown | Promise<unknown>;

function validId(id: unknown): id is RpcId {
  return id === null || typeof id === "string" || (typeof id === "number" && isFinite(id));
}

/**
 * Handle one parsed request object with `methods`; resolves with its
 * response, or `null` for a notification.
 */
export async function dispatch(
  methods: Readonly<Record<string, RpcMethod>>,
  request: unknown,
): Promise<RpcResponse | null> {
  if (typeof request !== "object" || request === null || Array.isArray(request)) {
    return errorResponse(
      null,
      new RpcError(RpcErrorCode.INVALID_REQUEST, "a request is a JSON object"),
    );
  }
  const r = request as Record<string, unknown>;
  const hasId = "id" in r;
  const id = hasId && validId(r.id) ? r.id : null;
  if (r.jsonrpc !== "2.0" || typeof r.method !== "string" || (hasId && !validId(r.id))) {
    return errorResponse(
      id,
      new RpcError(
        RpcErrorCode.INVALID_REQUEST,
        'a request needs "jsonrpc": "2.0", a string "method" and an id that is a string, ' +
          "a number or null",
      ),
    );
  }
  const params = r.params ?? {};
  if (typeof params !== "object" || params === null || Array.isArray(params)) {
    return errorResponse(
      id,
      new RpcError(RpcErrorCode.INVALID_PARAMS, "params must be an object of named parameters"),
    );
  }
  const method = Object.hasOwn(methods, r.method) ? methods[r.method] : undefined;
  let response: RpcResponse;
  if (!method) {
    response = errorResponse(
      id,
      new RpcError(
        RpcErrorCode.METHOD_NOT_FOUND,
        `no method "${String(r.method).slice(0, 64)}"; methods: ${Object.keys(methods).join(", ")}`,
      ),
    );
  } else {
    try {
      response = {
        jsonrpc: "2.0",
        result: (await method(params as Record<string, unknown>)) ?? null,
        id,
      };
    } catch (e) {
      response = errorResponse(id, e);
    }
  }
  return hasId ? response : null;
}

/**
 * Handle one line of input: a request, or a batch (a JSON array of at most
 * {@linkcode MAX_BATCH} requests). Resolves with the line to send back
 * (without newline), or `null` when nothing is due (notifications only).
 */
export async function handleLine(
  methods: Readonly<Record<string, RpcMethod>>,
  line: string,
): Promise<string | null> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (e) {
    return JSON.stringify(errorResponse(
      null,
      new RpcError(
        RpcErrorCode.PARSE_ERROR,
        `not JSON (${(e as Error).message}); send one JSON-RPC request per line`,
      ),
    ));
  }
  if (Array.isArray(parsed)) {
    if (parsed.length === 0 || parsed.length > MAX_BATCH) {
      return JSON.stringify(errorResponse(
        null,
        new RpcError(
          RpcErrorCode.INVALID_REQUEST,
          `a batch holds 1 to ${MAX_BATCH} requests, this one ${parsed.length}`,
        ),
      ));
    }
    const out: RpcResponse[] = [];
    for (const r of parsed) {
      const response = await dispatch(methods, r);
      if (response) out.push(response);
    }
    return out.length ? JSON.stringify(out) : null;
  }
  const response = await dispatch(methods, parsed);
  return response ? JSON.stringify(response) : null;
}

/**
 * Split a byte stream into lines of at most `maxBytes` bytes each. A longer
 * line yields `{ tooLong: true }` once and ends the stream: the reader cannot
 * tell where the next request starts.
 */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number = MAX_LINE_BYTES,
): AsyncGenerator<{ line: string } | { tooLong: true }> {
  const decoder = new TextDecoder();
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let start = 0;
      for (;;) {
        const nl = value.indexOf(0x0a, start);
        const end = nl < 0 ? value.length : nl;
        pendingBytes += end - start;
        if (pendingBytes > maxBytes) {
          yield { tooLong: true };
          return;
        }
        pending.push(value.subarray(start, end));
        if (nl < 0) break;
        const whole = concat(pending);
        pending = [];
        pendingBytes = 0;
        const line = decoder.decode(whole).trim();
        if (line) yield { line };
        start = nl + 1;
      }
      // Copy what is kept: the reader may reuse its chunk.
      if (pending.length) pending = [concat(pending)];
    }
  } finally {
    reader.releaseLock();
  }
}

/** One copy of `parts`, back to back. */
function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
