import { type Deployment, deploymentId } from "@handoff/config";
import { HandoffError } from "@handoff/contracts";
import { httpFailure, providerError, retryAfterMs } from "../errors.js";
import { fetchPost, type HttpPost, type HttpReply, headerRecord, undiciPost } from "../http.js";
import { replayAsStream } from "../replay.js";
import { SseLimitError, SseParser } from "../sse.js";
import type { CallOptions, ChatModel, ChatRequest, ChatResult, ChatStreamEvent } from "../types.js";
import { resultOfCompletion, StreamAssembler } from "./assembler.js";
import {
  type Dialect,
  dialectOf,
  errorBodyMessage,
  toWireRequest,
  vendorError,
  vendorErrorFailure,
  WireCompletion,
} from "./wire.js";

/** Where the adapter sends requests when a deployment names no `base_url`. */
export const OPENAI_BASE_URL = "https://api.openai.com/v1";

/** Runtime dependencies of the adapter, replaceable for tests. */
export interface OpenAICompatibleOptions {
  /** Where `api_key_env` is looked up; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  /**
   * A `fetch` to send requests with instead of the adapters' own HTTP client (undici's `request`,
   * see `../http.ts`): tests and proxies substitute their own.
   */
  fetch?: typeof fetch;
}

/**
 * A model behind the OpenAI Chat Completions API: OpenAI itself, Azure OpenAI, and the servers that
 * copy its wire format (Ollama, vLLM, llama.cpp, LM Studio, Groq, Together, ...). One adapter
 * serves them all; the deployment says where and how:
 *
 * - URL: `base_url` (default `https://api.openai.com/v1`) plus `/chat/completions`. A query in
 *   `base_url` is kept, which is how Azure's `api-version` travels:
 *   `https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT?api-version=2024-10-21`.
 *   Azure's newer v1 API needs no version: `https://RESOURCE.openai.azure.com/openai/v1`.
 * - Key: read from the environment variable `api_key_env` names, at construction; a missing or
 *   empty variable is a configuration error. It goes in Azure's `api-key` header when the host is
 *   an Azure OpenAI or AI Foundry resource (`*.openai.azure.com`, `*.cognitiveservices.azure.com`,
 *   `*.services.ai.azure.com`), and in `Authorization: Bearer` everywhere else. Without
 *   `api_key_env` no credential is sent (Ollama and other local servers).
 * - `headers` are sent with every request (organization or project ids, gateway routing). A
 *   literal `Authorization` or `api-key` there is sent as written, but not together with
 *   `api_key_env`: a deployment names one credential, so that is a configuration error.
 *
 * Failures are classified provider errors (see `providerError`); an abort of the caller's signal
 * is not a failure of the provider and propagates as the signal's reason. Timeouts, retries and
 * fallbacks are the caller's business.
 */
export class OpenAICompatibleModel implements ChatModel {
  readonly provider = "openai-compatible" as const;
  readonly simulated = false;
  readonly model: string;
  /** The chat-completions endpoint this deployment posts to. */
  readonly url: string;
  /** The deployment's id in logs and errors, e.g. `openai-compatible:gpt-4o-mini`. */
  readonly deployment: string;
  readonly #dialect: Dialect;
  /** Every request's headers, but `accept`. */
  readonly #headers: Readonly<Record<string, string>>;
  readonly #post: HttpPost;

  constructor(deployment: Deployment, options: OpenAICompatibleOptions = {}) {
    this.model = deployment.model;
    this.deployment = deploymentId(deployment);
    this.#post = options.fetch ? fetchPost(options.fetch) : undiciPost;
    const env = options.env ?? process.env;

    let endpoint: URL;
    try {
      endpoint = new URL(deployment.base_url ?? OPENAI_BASE_URL);
    } catch {
      throw this.#config(`base_url "${deployment.base_url}" is not a URL`);
    }
    endpoint.pathname = `${endpoint.pathname.replace(/\/+$/, "")}/chat/completions`;
    this.url = endpoint.toString();
    this.#dialect = dialectOf(endpoint);

    const headers = new Headers();
    try {
      for (const [name, value] of Object.entries(deployment.headers ?? {})) {
        headers.set(name, value);
      }
    } catch (error) {
      throw this.#config(`headers are invalid: ${(error as Error).message}`);
    }
    const variable = deployment.api_key_env;
    if (variable !== undefined) {
      if (headers.has("authorization") || headers.has("api-key")) {
        throw this.#config(
          `names both api_key_env (${variable}) and a literal authorization or api-key header; keep one`,
        );
      }
      const key = env[variable]?.trim();
      if (!key) {
        throw this.#config(`the environment variable ${variable} (api_key_env) is not set`);
      }
      if (this.#dialect === "azure") headers.set("api-key", key);
      else headers.set("authorization", `Bearer ${key}`);
    }
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    this.#headers = headerRecord(headers);
  }

  /** One non-streamed completion. */
  async chat(request: ChatRequest, options: CallOptions = {}): Promise<ChatResult> {
    const response = await this.#send(request, false, options.signal);
    return this.#readCompletion(response, request, options.signal);
  }

  /**
   * A streamed completion: text and tool-call deltas as they arrive, then `done` with the whole
   * result. A failure mid-stream is thrown after the deltas that arrived before it.
   */
  async *stream(request: ChatRequest, options: CallOptions = {}): AsyncIterable<ChatStreamEvent> {
    const signal = options.signal;
    const response = await this.#send(request, true, signal);

    // A server that ignores `stream: true` answers with one JSON completion: replay it as events.
    const type = response.headers.get("content-type") ?? "";
    if (type.includes("application/json")) {
      yield* replayAsStream(await this.#readCompletion(response, request, signal));
      return;
    }
    const assembler = new StreamAssembler(this.deployment, request, this.model);
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const chunks = response.body[Symbol.asyncIterator]();
    try {
      while (!assembler.done) {
        let read: IteratorResult<Uint8Array>;
        try {
          read = await chunks.next();
        } catch (error) {
          if (signal?.aborted) throw signal.reason;
          throw this.#malformed(
            `the stream broke off after ${assembler.chunks} chunks: ${describe(error)}`,
            error,
          );
        }
        let events: ReturnType<SseParser["push"]>;
        try {
          events = read.done
            ? [...parser.push(decoder.decode()), ...parser.end()]
            : parser.push(decoder.decode(read.value, { stream: true }));
        } catch (error) {
          if (error instanceof SseLimitError) throw this.#malformed(error.message, error);
          throw error;
        }
        for (const event of events) {
          for (const out of assembler.accept(event)) yield out;
          if (assembler.done) break;
        }
        if (read.done) break;
      }
    } finally {
      // Releases the connection after [DONE], on an error, and when the consumer stops early.
      chunks.return?.()?.catch(() => {});
      response.discard();
    }
    yield { type: "done", result: assembler.finish() };
  }

  /** POSTs the request; resolves with a 2xx response, or throws the classified failure. */
  async #send(request: ChatRequest, stream: boolean, signal?: AbortSignal): Promise<HttpReply> {
    signal?.throwIfAborted();
    const body = toWireRequest(request, { model: this.model, dialect: this.#dialect, stream });
    const headers =
      this.#headers.accept === undefined
        ? { ...this.#headers, accept: stream ? "text/event-stream" : "application/json" }
        : this.#headers;

    let response: HttpReply;
    try {
      response = await this.#post(this.url, { headers, body: JSON.stringify(body), signal });
    } catch (error) {
      throw this.#transportError(error, signal);
    }
    if (response.ok) return response;

    let text = "";
    try {
      text = await response.text();
    } catch {
      if (signal?.aborted) throw signal.reason;
      // The status alone still classifies the failure.
    }
    const status = response.status;
    const wait = retryAfterMs(response.headers);
    const vendor = errorBodyMessage(text);
    throw providerError(`${this.deployment}: HTTP ${status}${vendor ? `: ${vendor}` : ""}`, {
      failure: httpFailure(status, text),
      deployment: this.deployment,
      status,
      ...(wait === undefined ? {} : { retryAfterMs: wait }),
    });
  }

  async #readCompletion(
    response: HttpReply,
    request: ChatRequest,
    signal: AbortSignal | undefined,
  ): Promise<ChatResult> {
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw this.#transportError(error, signal);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw this.#malformed(`the response body is not JSON (${text.length} characters)`);
    }
    // Some servers and proxies answer 200 with an error object instead of a completion.
    const reported = vendorError(json);
    if (reported && !(json as { choices?: unknown }).choices) {
      throw providerError(
        `${this.deployment}: the response reported an error: ${reported.message ?? "(no message)"}`,
        { failure: vendorErrorFailure(reported), deployment: this.deployment },
      );
    }
    const parsed = WireCompletion.safeParse(json);
    if (!parsed.success) {
      const where = parsed.error.issues
        .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
        .join("; ");
      throw this.#malformed(`the response has an unexpected shape: ${where}`);
    }
    return resultOfCompletion(parsed.data, request, this.model);
  }

  /**
   * A failure to talk to the server at all. The caller's abort is rethrown as it is (its reason),
   * because only the caller knows whether it meant a timeout, a cancellation or a shutdown.
   */
  #transportError(error: unknown, signal: AbortSignal | undefined): unknown {
    if (signal?.aborted) return signal.reason;
    return providerError(
      `${this.deployment}: could not reach ${this.url}: ${describe(error)}`,
      { failure: "network", deployment: this.deployment },
      error,
    );
  }

  #malformed(what: string, cause?: unknown): HandoffError {
    return providerError(
      `${this.deployment}: malformed response: ${what}`,
      { failure: "malformed", deployment: this.deployment },
      cause,
    );
  }

  #config(problem: string): HandoffError {
    return new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `deployment ${this.deployment} (openai-compatible): ${problem}`,
    );
  }
}

/** An error's message with its cause, where undici keeps the useful part (`ECONNREFUSED`). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (cause instanceof Error && cause.message && cause.message !== error.message) {
    return `${error.message} (${cause.message})`;
  }
  const code = (cause as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? `${error.message} (${code})` : error.message;
}
