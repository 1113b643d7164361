import type { HandoffConfig } from "@handoff/config";
import type { JobEnvelope } from "@handoff/contracts";
import { planStep, remainingBudget, stageAfter } from "@handoff/contracts";
import {
  createStageService,
  loadMeshSigner,
  type MeshService,
  meshLimits,
  type NatsSource,
  openResponseCaches,
  type StageContext,
} from "@handoff/mesh";
import { callCacheOf, compactHandoff, estimateInputTokens, ModelRouter } from "@handoff/providers";
import type { Toolbox, ToolPolicy } from "@handoff/tools";
import { trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { MeshTools } from "./mesh-tools.js";
import { runToolLoop, TOOL_LOOP_INSTRUCTION } from "./tool-loop.js";

/**
 * The client's messages within the mid tier's handoff budget (`limits.handoff_tokens.mid`), the
 * loop's instruction and the client's tools counted in; the mesh's own tools and the loop's turns
 * come on top. Puts a `compaction` enrichment on the envelope (and a summary call's usage) and
 * `handoff.compaction.*` on the span when it compacted anything; without a budget, the messages
 * as they are.
 */
async function leanMidMessages(
  router: ModelRouter,
  config: HandoffConfig,
  envelope: JobEnvelope,
  signal: AbortSignal,
) {
  const { input } = envelope;
  const budget = config.limits.handoff_tokens.mid;
  if (budget === undefined) return input.messages;
  const base = estimateInputTokens([]);
  const reserve =
    estimateInputTokens([{ role: "system", content: TOOL_LOOP_INSTRUCTION }]) -
    base +
    (estimateInputTokens([], input.tools) - base);
  const options = { budget, reserve, tier: "mid" as const };
  const lightBudget = config.limits.handoff_tokens.light;
  const compacted = await compactHandoff(input.messages, config.limits.handoff_compaction, {
    ...options,
    router,
    ...(lightBudget !== undefined ? { lightBudget: lightBudget } : {}),
    call: {
      stage: "tool-executor",
      signal,
      budgetUsd: remainingBudget(envelope),
      cache: callCacheOf(envelope),
    },
  });
  if (compacted.usage) envelope.usage.push(compacted.usage);
  const { report } = compacted;
  if (report.strategy === "none") return input.messages;
  envelope.enrichments.push({
    kind: "compaction",
    stage: "tool-executor",
    tier: "mid",
    ...report,
    tool_outputs_cut: 0,
  });
  trace.getActiveSpan()?.setAttributes({
    "handoff.compaction.strategy": report.strategy,
    "handoff.compaction.budget_tokens": report.budget_tokens,
    "handoff.compaction.tokens_before": report.tokens_before,
    "handoff.compaction.tokens_after": report.tokens_after,
    "handoff.compaction.turns_dropped": report.turns_dropped,
    "handoff.compaction.turns_summarised": report.turns_summarised,
    ...(report.fallback ? { "handoff.compaction.fallback": report.fallback } : {}),
  });
  return compacted.messages;
}

export interface ToolExecutorDeps {
  /** The NATS connection, or a function that opens one (retried at start: see `createStageService`). */
  nc: NatsSource;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  concurrency: number;
  router?: ModelRouter;
  /** The tools, when a test brings its own; by default the mesh's (see `MeshTools`). */
  toolbox?: Toolbox;
}

/**
 * Which tools a job may use on a tier: those the tier allows (`tools.allow.<tier>`) and, for a
 * job that came with an API key, those the key allows (`gateway.api_keys[].tools`). A job whose
 * owner is no API key (a tenant of the NATS door) has the tier's list alone: who may publish for
 * a tenant is the NATS server's permissions' business.
 */
export function toolPolicy(
  config: HandoffConfig,
  envelope: Pick<JobEnvelope, "owner">,
  tier: "light" | "mid" = "mid",
): ToolPolicy {
  const policy: ToolPolicy = { tier, tierAllows: config.tools.allow[tier] };
  const key = config.gateway.api_keys.find((k) => k.name === envelope.owner);
  return key ? { ...policy, key: key.name, keyAllows: key.tools } : policy;
}

/**
 * The tool-executor's handler: run the tool loop with the mid-tier model. It answers the job, or,
 * when the route continues to the heavy-reasoner or the loop ran out of steps, hands its tool
 * results and draft up as enrichments.
 */
export function toolExecutorHandler(router: ModelRouter, toolbox: Toolbox, config: HandoffConfig) {
  const maxSteps = config.limits.max_tool_steps;
  return async (envelope: JobEnvelope, ctx: StageContext): Promise<JobEnvelope> => {
    const { input } = envelope;
    const messages = await leanMidMessages(router, config, envelope, ctx.signal);
    const outcome = await runToolLoop({
      router,
      toolbox,
      policy: (tier) => toolPolicy(config, envelope, tier),
      deadline: Date.parse(envelope.budget.deadline),
      messages,
      clientTools: input.tools,
      ...(input.tool_choice ? { toolChoice: input.tool_choice } : {}),
      params: input.params,
      maxSteps,
      signal: ctx.signal,
      // Each call's spend lands on the envelope as it is made, so a loop that fails half-way
      // still accounts for what it spent.
      budget: () => remainingBudget(envelope),
      onUsage: (usage) => envelope.usage.push(usage),
      // Stream only when this stage answers; handing up to heavy, its draft is not the answer.
      onEvent: stageAfter(envelope, "tool-executor") === undefined ? ctx.relay : undefined,
      cache: callCacheOf(envelope),
    });
    envelope.enrichments.push({
      kind: "tool_results",
      stage: "tool-executor",
      runs: outcome.runs,
      steps: outcome.steps,
    });
    const span = trace.getActiveSpan();
    span?.setAttributes({
      "handoff.tool.steps": outcome.steps,
      "handoff.tool.runs": outcome.runs.length,
    });

    const { message, finishReason, model } = outcome.last;
    const provider = outcome.usage.at(-1)?.provider ?? "unknown";
    if (outcome.kind === "client_tools") {
      envelope.result = {
        message,
        finish_reason: "tool_calls",
        stage: "tool-executor",
        provider,
        model,
      };
      return envelope;
    }

    const escalate =
      outcome.kind === "exhausted"
        ? `the tool loop reached its limit of ${maxSteps} steps`
        : stageAfter(envelope, "tool-executor") === "heavy-reasoner"
          ? "the route sends this job to the heavy tier"
          : undefined;
    if (escalate) {
      if (stageAfter(envelope, "tool-executor") !== "heavy-reasoner") {
        envelope.plan.splice(planStep(envelope, "tool-executor") + 1, 0, "heavy-reasoner");
      }
      envelope.enrichments.push({
        kind: "draft",
        stage: "tool-executor",
        content: message.content ?? "",
        reason: escalate,
      });
      span?.setAttribute("handoff.escalation", escalate);
      ctx.logger.info({ reason: escalate }, "handing up to heavy-reasoner");
      return envelope;
    }
    envelope.result = {
      message,
      finish_reason: finishReason,
      stage: "tool-executor",
      provider,
      model,
      // The answering turn's, when the client asked for them (`params.logprobs`).
      ...(outcome.last.choiceLogprobs ? { logprobs: outcome.last.choiceLogprobs } : {}),
    };
    return envelope;
  };
}

export function createToolExecutorService(deps: ToolExecutorDeps): MeshService {
  const router = deps.router ?? new ModelRouter(deps.config);
  // The mesh's tools are found once NATS answers, before the first job is taken.
  const tools = deps.toolbox
    ? undefined
    : new MeshTools({ config: deps.config, logger: deps.logger, version: deps.version });
  const toolbox = deps.toolbox ?? (tools as MeshTools).toolbox;
  const source = deps.nc;
  const nc: NatsSource = async () => {
    const connection = typeof source === "function" ? await source() : source;
    await tools?.start(connection);
    return connection;
  };
  const service = createStageService({
    nc,
    stage: "tool-executor",
    version: deps.version,
    description: "Runs the mid-tier model with a tool loop; answers or hands up to heavy",
    handler: toolExecutorHandler(router, toolbox, deps.config),
    logger: deps.logger,
    limits: meshLimits(deps.config),
    signer: loadMeshSigner(deps.config.mesh),
    concurrency: deps.concurrency,
    // The tool loop's mid tier, and the light one a budget makes it fall to.
    prepare: async (nc) =>
      router.useCaches(
        await openResponseCaches(nc, deps.config, ["mid", "light"], { logger: deps.logger }),
      ),
  });
  return {
    get id() {
      return service.id;
    },
    start: () => service.start(),
    async stop() {
      await service.stop();
      await tools?.stop();
    },
    ready: () => service.ready(),
  };
}
