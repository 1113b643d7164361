import {
  HandoffError,
  JobId,
  jsonSchemaOf,
  type WireSchemaName,
  WireSchemas,
} from "@handoff/contracts";
import type { FastifyInstance } from "fastify";
import type { JobClient } from "../job-client.js";
import { inRequestSpan } from "../tracing.js";

/** `GET /v1/jobs/:id` (the stored job record) and `GET /v1/schemas/:name` (wire JSON Schemas). */
export function registerJobs(app: FastifyInstance, jobs: JobClient): void {
  app.get<{ Params: { id: string } }>("/v1/jobs/:id", (request) =>
    inRequestSpan(request, async () => {
      const id = JobId.safeParse(request.params.id);
      if (!id.success) throw HandoffError.validation("job id", id.error);
      const record = await jobs.store.get(id.data);
      if (!record) throw new HandoffError("HANDOFF_ERR_NOT_FOUND", `no job with id ${id.data}`);
      return record;
    }),
  );

  app.get<{ Params: { name: string } }>("/v1/schemas/:name", async (request) => {
    const name = request.params.name.replace(/\.(schema\.)?json$/, "");
    if (!Object.hasOwn(WireSchemas, name)) {
      throw new HandoffError(
        "HANDOFF_ERR_NOT_FOUND",
        `no schema named ${name}; known: ${Object.keys(WireSchemas).join(", ")}`,
      );
    }
    return jsonSchemaOf(name as WireSchemaName);
  });
}
