import type { FastifyInstance, preSerializationAsyncHookHandler } from "fastify";
import {
  AnthropicErrorBody,
  AnthropicMessage,
  AnthropicMessagesRequest,
  AnthropicStreamEvent,
  anthropicError,
  anthropicErrorFromOpenAi,
  MessageEvents,
  messageFromRecord,
  parseMessagesRequest,
  toChatRequest,
} from "../anthropic.js";
import { type Dialect, type DoorDeps, doorRoute } from "../door.js";
import { errorHandler } from "../errors.js";
import { submissionFor } from "../submission.js";

/**
 * Anthropic's Messages API: the request read into the chat-completions shape and submitted exactly
 * as `POST /v1/chat/completions` submits it (the same deadline, budget, owner, payload and
 * `Idempotency-Key` rules, and the same streaming relay), the job answered as Anthropic's `message`
 * or its events, errors in Anthropic's shape.
 */
const messages: Dialect<AnthropicMessagesRequest> = {
  route: "POST /v1/messages",
  api: "anthropic",
  parse(request, config) {
    const body = parseMessagesRequest(request.body);
    return { body, submission: submissionFor(request, config, toChatRequest(body)) };
  },
  answer: (record, traceId) => messageFromRecord(record, traceId),
  failure: anthropicError,
  stream: (sse, job) =>
    new MessageEvents((event) => sse.send(event, event.type), {
      jobId: job.id,
      traceId: job.traceId,
    }),
};

/** An error the app's hooks answer rather than throw (the start-up gate's 503), in Anthropic's shape. */
const anthropicErrors: preSerializationAsyncHookHandler = async (_request, reply, payload) =>
  anthropicErrorFromOpenAi(payload, reply.statusCode) ?? payload;

/**
 * `POST /v1/messages`: Anthropic's Messages request in, Anthropic's `message` (or its events) out,
 * plus `handoff`. Its error handler is the app's, answering in Anthropic's shape; it also answers
 * what the hooks before the handler throw, so a missing or wrong key is an `authentication_error`.
 */
export function registerMessages(app: FastifyInstance, deps: DoorDeps): void {
  app.post("/v1/messages", {
    ...doorRoute(deps, messages, {
      operationId: "createMessage",
      summary: "Create a message (Anthropic's Messages API)",
      description:
        "Anthropic's Messages request (`model`, `max_tokens`, `system`, `messages` of text, `tool_use` and `tool_result` blocks, client `tools`, `tool_choice`, `temperature`, `top_p`, `stop_sequences`, `stream`, `metadata`), run as the same job a chat completion is, answered as Anthropic's `message` plus the `handoff` report. Any other field (`thinking`, `top_k`, image or document blocks, server tools, `cache_control`, ...) is a 400 naming it. The key may come as `x-api-key`, as Anthropic's SDKs send it. With `stream: true` the answer is Anthropic's named events: `message_start`, `content_block_start`, `content_block_delta` (`text_delta`, `input_json_delta`), `content_block_stop`, `message_delta` (stop reason, usage, `handoff`), `message_stop`; a failure is an `error` event. Errors, 401 and 429 included, are in Anthropic's shape (`AnthropicErrorBody`), Handoff's code in `error.details.error_code`. `stop_reason` is never `stop_sequence`: the mesh does not record which stop sequence ended an answer, and reports `end_turn`.",
      body: AnthropicMessagesRequest,
      answer: {
        description: "The message, or with `stream: true` its server-sent events.",
        json: AnthropicMessage,
        events:
          "`event: <type>` and `data: <AnthropicStreamEvent JSON>` events, from `message_start` to `message_stop`.",
        event: AnthropicStreamEvent,
      },
      errorBody: AnthropicErrorBody,
    }),
    errorHandler: errorHandler(deps.config.limits.max_body_bytes, anthropicError),
    preSerialization: anthropicErrors,
  });
}
