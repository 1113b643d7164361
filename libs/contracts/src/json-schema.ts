import { z } from "zod";
import { DeadLetter } from "./dead-letter.js";
import { JobEnvelope, StreamChunk } from "./envelope.js";
import { JobEvent, JobSubmission } from "./job-events.js";
import { JobRecord } from "./job-record.js";
import { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorBody } from "./openai.js";

/** Every schema that crosses a wire, by the name its JSON Schema file takes. */
export const WireSchemas = {
  "job-envelope": JobEnvelope,
  "job-record": JobRecord,
  "job-submission": JobSubmission,
  "job-event": JobEvent,
  "dead-letter": DeadLetter,
  "chat-completion-request": ChatCompletionRequest,
  "chat-completion": ChatCompletion,
  "chat-completion-chunk": ChatCompletionChunk,
  "stream-chunk": StreamChunk,
  "error-body": ErrorBody,
} as const satisfies Record<string, z.ZodType>;
export type WireSchemaName = keyof typeof WireSchemas;

/**
 * JSON Schema (draft 2020-12) generated from the zod schema of the same name, so non-TypeScript
 * producers and consumers validate against exactly what the mesh validates.
 */
export function jsonSchemaOf(name: WireSchemaName): Record<string, unknown> {
  // Inputs are what producers may write (defaults optional); that is what a validator should accept.
  const schema = z.toJSONSchema(WireSchemas[name], { io: "input", unrepresentable: "any" });
  return { $id: `https://handoff.dev/schemas/v1/${name}.schema.json`, ...schema };
}
