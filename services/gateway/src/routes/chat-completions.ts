import {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  completionFromRecord,
} from "@handoff/contracts";
import type { FastifyInstance } from "fastify";
import { type Dialect, type DoorDeps, doorRoute } from "../door.js";
import { openAiError } from "../errors.js";
import { chatCompletionChunks } from "../streaming.js";
import { parseSubmission } from "../submission.js";

/** OpenAI's chat completions: the mesh's own shape, read as it is. */
const chatCompletions: Dialect<ChatCompletionRequest> = {
  route: "POST /v1/chat/completions",
  parse(request, config) {
    const submission = parseSubmission(request, config);
    return { body: submission.body, submission };
  },
  answer: (record, traceId) => completionFromRecord(record, traceId),
  failure: openAiError,
  stream: chatCompletionChunks,
};

/** `POST /v1/chat/completions`: OpenAI's request in, OpenAI's answer (or stream) out, plus `handoff`. */
export function registerChatCompletions(app: FastifyInstance, deps: DoorDeps): void {
  app.post(
    "/v1/chat/completions",
    doorRoute(deps, chatCompletions, {
      operationId: "createChatCompletion",
      summary: "Create a chat completion",
      description:
        "OpenAI's chat-completions request; the mesh classifies it and answers from the cheapest tier that can. The answer carries a `handoff` object: route, per-hop usage, cost, trace id. With `stream: true` the answer is OpenAI's server-sent `chat.completion.chunk` events, ending in `data: [DONE]` (or an error event in `ErrorBody`'s shape). With an `Idempotency-Key` an earlier identical request holds, nothing is run again: the answer is that request's job's, waited for up to this request's timeout, with `Idempotent-Replayed: true`; streamed, it comes whole in one content chunk once the job ends.",
      body: ChatCompletionRequest,
      answer: {
        description: "The completion, or with `stream: true` its chunks as server-sent events.",
        json: ChatCompletion,
        events: "`data: <ChatCompletionChunk JSON>` events, then `data: [DONE]`.",
        event: ChatCompletionChunk,
      },
    }),
  );
}
