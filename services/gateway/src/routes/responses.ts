import type { FastifyInstance } from "fastify";
import { type Dialect, type DoorDeps, doorRoute } from "../door.js";
import { openAiError } from "../errors.js";
import { resolveModel } from "../mapping.js";
import {
  chatRequestFrom,
  failedResponse,
  parseResponsesRequest,
  pendingResponse,
  ResponseEvents,
  ResponseObject,
  ResponseStreamEvent,
  ResponsesRequest,
  responseFromRecord,
} from "../responses.js";
import { submissionFor } from "../submission.js";

/**
 * OpenAI's Responses API: the request read into the chat-completions request the mesh runs (with
 * the same validation of limits, deadline, budget, owner and `Idempotency-Key`), the job answered
 * as OpenAI's `response` object or its typed event stream, plus the `handoff` report.
 */
const responses: Dialect<ResponsesRequest> = {
  route: "POST /v1/responses",
  parse(request, config) {
    const body = parseResponsesRequest(request.body);
    // As on the chat route: an unknown model is a 404 naming it, an alias the model it names.
    const model = resolveModel(body.model, config);
    const submission = submissionFor(request, config, chatRequestFrom(body));
    submission.envelope.input.model = model;
    return { body, submission };
  },
  answer: (record, traceId, body) => responseFromRecord(record, traceId, body),
  failure: openAiError,
  stream(sse, job, body) {
    // A response's events, each written as a server-sent event named by its type.
    const events = new ResponseEvents(
      job.id,
      pendingResponse(job.id, job.createdAt, body),
      (event) => sse.send(event, event.type),
    );
    events.start();
    return {
      text: (delta) => events.text(delta),
      answer: (record) => events.answer(responseFromRecord(record, job.traceId, body)),
      error: (error) => events.fail(failedResponse(job.id, job.createdAt, body, error)),
    };
  },
};

/** `POST /v1/responses`: OpenAI's Responses request in, its `response` (or events) out. */
export function registerResponses(app: FastifyInstance, deps: DoorDeps): void {
  app.post(
    "/v1/responses",
    doorRoute(deps, responses, {
      operationId: "createResponse",
      summary: "Create a response (OpenAI's Responses API)",
      description:
        "OpenAI's Responses request, run as the same job a chat completion is: `model`, `input` (a string, or `message` items of role user, system, developer or assistant with text content, `function_call` and `function_call_output` items), `instructions` (sent as a system message), function `tools`, `tool_choice`, `parallel_tool_calls`, `temperature`, `top_p`, `max_output_tokens`, `text.format` (`text`, `json_object`, `json_schema`), `stream`, `metadata`, `user`, `safety_identifier`, `prompt_cache_key`. The answer is OpenAI's `response` object plus the `handoff` report; `usage` sums every model call of the job. The gateway keeps no conversation state: `store: true` is accepted without effect (nothing is stored to retrieve), and `previous_response_id`, `conversation` and `item_reference` input items are a 400 naming the field; send the whole conversation in `input` (with the AI SDK, `providerOptions.openai.store: false`). Any other field or value the mesh cannot honour (built-in tools, image, file or audio inputs, `reasoning`, `background`, `include`, log-probabilities, `truncation: auto`) is a 400 `HANDOFF_ERR_UNSUPPORTED` naming it. With `stream: true` the answer is OpenAI's typed events, each `event: <type>` with `data` carrying `type` and `sequence_number`: `response.created`, `response.in_progress`, the message's `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`s as the answering tier streams, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, each function call's `response.output_item.added`, `response.function_call_arguments.delta` and `.done`, `response.output_item.done`, then `response.completed` (`response.incomplete` when cut at `max_output_tokens`) with the whole response; a job that fails after the stream opened ends it with `response.failed`. An `Idempotency-Key` is honoured as on chat completions.",
      body: ResponsesRequest,
      answer: {
        description: "The response, or with `stream: true` its typed server-sent events.",
        json: ResponseObject,
        events:
          "`event: <type>` and `data: <ResponseStreamEvent JSON>` events, from `response.created` to `response.completed`.",
        event: ResponseStreamEvent,
      },
    }),
  );
}
