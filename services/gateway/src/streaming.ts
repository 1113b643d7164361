import {
  type ChatCompletionChunk,
  type ChatCompletionRequest,
  completionFromRecord,
  HandoffError,
  type JobRecord,
  type JobResult,
  type StreamChunk,
} from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import type { FastifyRequest } from "fastify";
import { errorBody, jobFailure, toHandoffError } from "./errors.js";
import type { SseStream } from "./sse.js";
import type { Submission } from "./submission.js";

/** What a streamed job's answer is written as: one wire format's events (OpenAI's, Anthropic's). */
export interface AnswerWriter {
  /** A piece of the answer's text, as the answering stage relayed it, from `model`. */
  text(delta: string, model: string): void;
  /**
   * The job answered. `rest` is the end of its text the relay did not carry (all of it when the
   * answering tier did not stream): the text written is then exactly the stored answer. The
   * writer sends what closes its stream; the stream is ended after it.
   */
  answer(record: JobRecord & { result: JobResult }, rest: string): void;
  /** The job failed, or its streamed text cannot stand; the stream is ended after it. */
  error(error: HandoffError): void;
}

/**
 * Runs a streamed job on an open stream: the answering stage's tokens are passed to `writer` as
 * they arrive, then the job's record decides how the stream ends (`answer` or `error`), and the
 * stream is ended. The text passed on is only ever a prefix of the stored answer, then the rest of
 * it: chunks out of order or from a redelivery are dropped, and an answer that differs from what
 * was already streamed is an error, never a mix of two answers.
 */
export async function relayStreamedJob(
  request: FastifyRequest,
  sse: SseStream,
  { envelope, timeoutMs }: Pick<Submission, "envelope" | "timeoutMs">,
  jobs: JobClient,
  traceId: string,
  writer: AnswerWriter,
): Promise<void> {
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
    streamed += piece.delta;
    writer.text(piece.delta, piece.model);
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
    writer.error(failed ?? jobFailure(record, timeoutMs, envelope.id));
    sse.end();
    return;
  }

  const content = record.result.message.content ?? "";
  if (!content.startsWith(streamed)) {
    // A redelivered stage answered again, differently, after part of the first answer was sent:
    // the client gets an error, never a mix of two answers. The stored one stands.
    request.log.warn({ job_id: envelope.id }, "streamed text differs from the final answer");
    writer.error(
      new HandoffError(
        "HANDOFF_ERR_UNAVAILABLE",
        `the streamed text of job ${envelope.id} differs from its final answer (the answering stage ran again); GET /v1/jobs/${envelope.id} has the answer`,
      ),
    );
    sse.end();
    return;
  }
  // Whatever the relay did not carry (a tier that answered without streaming).
  writer.answer({ ...record, result: record.result }, content.slice(streamed.length));
  sse.end();
}

/** The job a streamed answer belongs to: its id, when it was created, and its trace. */
export interface StreamedJob {
  id: string;
  createdAt: string;
  traceId: string;
}

/**
 * `stream: true`: OpenAI's server-sent `chat.completion.chunk` events, from whichever tier
 * answers. Writes the first chunk (the assistant's role) at once; tokens the answering stage
 * relays are then passed on as they arrive, and the job's record closes the stream with what
 * tokens cannot carry (client tool calls, the finish reason, usage when
 * `stream_options.include_usage` asks, and the `handoff` report), then `data: [DONE]`. A failed
 * job ends the stream with an `error` event in OpenAI's shape. A replayed job's answer is written
 * whole, in one content chunk.
 */
export function chatCompletionChunks(
  sse: SseStream,
  job: StreamedJob,
  body: ChatCompletionRequest,
): AnswerWriter {
  const { traceId } = job;
  const base = {
    id: `chatcmpl-${job.id}`,
    object: "chat.completion.chunk" as const,
    created: Math.floor(Date.parse(job.createdAt) / 1000),
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

  return {
    text(delta, from) {
      model = from;
      sse.send(chunk({ content: delta }));
    },
    error(error) {
      sse.send(errorBody(error, { job_id: job.id, ...(traceId ? { trace_id: traceId } : {}) }));
    },
    answer(record, rest) {
      const { result } = record;
      model = result.model;
      if (rest.length > 0) sse.send(chunk({ content: rest }));
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
        sse.send({
          ...base,
          model,
          choices: [],
          usage: completion.usage,
          handoff: completion.handoff,
        });
      } else {
        sse.send({ ...last, handoff: completion.handoff });
      }
      sse.done();
    },
  };
}
