import {
  type ChatCompletionChunk,
  HandoffError,
  type JobRecord,
  type StreamChunk,
} from "@handoff/contracts";
import type { FastifyReply, FastifyRequest } from "fastify";
import { errorBody, jobFailure, toHandoffError } from "./errors.js";
import type { JobClient } from "./job-client.js";
import { completionFromRecord } from "./mapping.js";
import { openSse } from "./sse.js";
import type { Submission } from "./submission.js";

/**
 * `stream: true`: OpenAI's server-sent `chat.completion.chunk` events, from whichever tier
 * answers. Tokens the answering stage relays over NATS are passed on as they arrive; the job's
 * record then closes the stream with what tokens cannot carry (client tool calls, the finish
 * reason, usage when `stream_options.include_usage` asks, and the `handoff` report), then
 * `data: [DONE]`. A failed job ends the stream with an `error` event in OpenAI's shape.
 */
export async function streamCompletion(
  request: FastifyRequest,
  reply: FastifyReply,
  { envelope, body, timeoutMs }: Submission,
  jobs: JobClient,
  traceId: string,
): Promise<void> {
  const sse = openSse(reply, {
    "x-handoff-job-id": envelope.id,
    ...(traceId ? { "x-handoff-trace-id": traceId } : {}),
  });
  const base = {
    id: `chatcmpl-${envelope.id}`,
    object: "chat.completion.chunk" as const,
    created: Math.floor(Date.parse(envelope.created_at) / 1000),
  };
  let model = body.model;
  const chunk = (
    delta: ChatCompletionChunk["choices"][number]["delta"],
    finish: ChatCompletionChunk["choices"][number]["finish_reason"] = null,
  ): ChatCompletionChunk => ({
    ...base,
    model,
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  });
  sse.send(chunk({ role: "assistant", content: "" }));

  // Text as it was streamed, from the first delivery that streamed any: a redelivered stage
  // starts its answer again, and the client must not read it twice.
  let streamed = "";
  let delivery: number | undefined;
  let expected = 0;
  const onChunk = (piece: StreamChunk) => {
    delivery ??= piece.delivery;
    if (piece.delivery !== delivery || piece.seq !== expected) {
      request.log.warn(
        { seq: piece.seq, expected, delivery: piece.delivery },
        "stream chunk out of order",
      );
      if (piece.delivery !== delivery) return;
    }
    expected = piece.seq + 1;
    model = piece.model;
    streamed += piece.delta;
    sse.send(chunk({ content: piece.delta }));
  };

  let record: JobRecord | undefined;
  let failed: HandoffError | undefined;
  try {
    record = await jobs.run(envelope, traceId || undefined, { onChunk, signal: sse.signal });
  } catch (error) {
    // E.g. the job could not be queued: say why, not that the deadline passed.
    failed = toHandoffError(error);
    request.log.error({ err: error }, "streamed job failed");
  }
  if (sse.closed) return; // the client left; the job goes on and its record will say how it ended

  if (!record || record.status === "failed" || !record.result) {
    const error = failed ?? jobFailure(record, timeoutMs, envelope.id);
    sse.send(errorBody(error, { job_id: envelope.id, ...(traceId ? { trace_id: traceId } : {}) }));
    sse.end();
    return;
  }

  const { result } = record;
  model = result.model;
  const content = result.message.content ?? "";
  if (!content.startsWith(streamed)) {
    // A redelivered stage answered again, differently, after part of the first answer was sent:
    // the client gets an error, never a mix of two answers. The stored one stands.
    request.log.warn({ job_id: envelope.id }, "streamed text differs from the final answer");
    const error = new HandoffError(
      "HANDOFF_ERR_UNAVAILABLE",
      `the streamed text of job ${envelope.id} differs from its final answer (the answering stage ran again); GET /v1/jobs/${envelope.id} has the answer`,
    );
    sse.send(errorBody(error, { job_id: envelope.id, ...(traceId ? { trace_id: traceId } : {}) }));
    sse.end();
    return;
  }
  // Whatever the relay did not carry (a tier that answered without streaming).
  if (content.length > streamed.length)
    sse.send(chunk({ content: content.slice(streamed.length) }));
  if (result.message.tool_calls?.length) {
    sse.send(
      chunk({
        tool_calls: result.message.tool_calls.map((call, index) => ({
          index,
          id: call.id,
          type: "function" as const,
          function: { name: call.function.name, arguments: call.function.arguments },
        })),
      }),
    );
  }
  const completion = completionFromRecord(record, traceId);
  const last = chunk({}, result.finish_reason);
  if (body.stream_options?.include_usage) {
    sse.send(last);
    sse.send({ ...base, model, choices: [], usage: completion.usage, handoff: completion.handoff });
  } else {
    sse.send({ ...last, handoff: completion.handoff });
  }
  sse.done();
  sse.end();
}
