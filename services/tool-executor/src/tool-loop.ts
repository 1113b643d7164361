import type {
  ChatParams,
  Message,
  ToolCall,
  ToolChoice,
  ToolDefinition,
  ToolRun,
  Usage,
} from "@handoff/contracts";
import type { ChatResult, ModelRouter, TierCallContext } from "@handoff/providers";
import type { Toolbox, ToolPolicy } from "@handoff/tools";

export interface ToolLoopInput {
  router: ModelRouter;
  /** The mesh's tools (NATS services, MCP servers), behind the guard rails. */
  toolbox: Toolbox;
  /**
   * Which of them this request may use on a tier: the loop offers the mid tier's, and checks each
   * call against the tier of the model that made it (light, when the budget made it fall back).
   */
  policy: (tier: "light" | "mid") => ToolPolicy;
  messages: readonly Message[];
  /** Tools the client defined: calls to them go back to the client, unrun. */
  clientTools: readonly ToolDefinition[];
  toolChoice?: ToolChoice;
  params?: ChatParams;
  maxSteps: number;
  /** What the job may still spend, given the usage of this loop so far; undefined: no budget. */
  budget?: (pending: readonly Usage[]) => number | undefined;
  /** Called with each model call's usage as soon as the call returns. */
  onUsage?: (usage: Usage) => void;
  /** Relays the model's text to a streaming client; see `StageContext.relay`. */
  onEvent?: TierCallContext["onEvent"];
  /**
   * The job's part in the response cache (`callCacheOf`): each turn is looked up and stored as
   * its own call, keyed by the messages so far (tool results included).
   */
  cache?: TierCallContext["cache"];
  signal: AbortSignal;
  /** Epoch milliseconds: the job's deadline, which bounds every tool call. */
  deadline?: number;
}

export type ToolLoopOutcome =
  /** The model answered. */
  | { kind: "answer"; last: ChatResult; usage: Usage[]; runs: ToolRun[]; steps: number }
  /** The model called a client-defined tool: the client runs it and continues the chat. */
  | { kind: "client_tools"; last: ChatResult; usage: Usage[]; runs: ToolRun[]; steps: number }
  /** The step limit came before an answer. */
  | { kind: "exhausted"; last: ChatResult; usage: Usage[]; runs: ToolRun[]; steps: number };

/**
 * The loop's instruction to the model. It goes after the client's messages, not in front: the
 * client's conversation stays the prompt's prefix, byte for byte, as the other tiers' calls send
 * it, so a provider's prompt cache of it serves this stage too; the loop's turns (tool calls and
 * results) then extend the same prefix turn by turn.
 */
export const TOOL_LOOP_INSTRUCTION =
  "You are the tool-using tier of a model mesh answering the conversation above. Use the tools " +
  "when they give a more exact answer than you can (arithmetic, the current time, data only a " +
  "tool holds); then answer briefly, citing the tool results.";

/**
 * The tool loop: ask the mid-tier model, run the tools it calls, feed the results back, until it
 * answers or the step limit is reached. The mesh's tools (the toolbox: tool services on NATS,
 * MCP servers) run here, each call an `execute_tool` span; a call to a client-defined tool ends
 * the loop and goes back to the client, as OpenAI does.
 */
export async function runToolLoop(input: ToolLoopInput): Promise<ToolLoopOutcome> {
  const mesh = input.toolbox.offer(input.policy("mid"));
  const clientNames = new Set(input.clientTools.map((t) => t.function.name));
  const tools = [...mesh.filter((t) => !clientNames.has(t.function.name)), ...input.clientTools];
  // The client's forced choice is the client's to satisfy: `required`, or one of its own tools
  // named, wants a call to one of its tools, and a built-in call (the calculator) would satisfy
  // the provider's rule but not the client. The forced turn offers the client's tools alone.
  const choice = input.toolChoice;
  const forcedForClient =
    clientNames.size > 0 &&
    (choice === "required" ||
      (typeof choice === "object" && clientNames.has(choice.function.name)));
  const messages: Message[] = [
    ...input.messages,
    { role: "system", content: TOOL_LOOP_INSTRUCTION },
  ];
  const usage: Usage[] = [];
  const runs: ToolRun[] = [];

  for (let step = 1; ; step++) {
    // A turn's text reaches a streaming client only once the turn ends without calling a tool:
    // the text of a turn that calls tools is not part of the answer.
    const turn: Parameters<NonNullable<ToolLoopInput["onEvent"]>>[] = [];
    const forced = input.toolChoice !== undefined && step === 1;
    const call = await input.router.chat(
      "mid",
      {
        messages,
        tools: forced && forcedForClient ? input.clientTools : tools,
        // A forced tool choice applies to the first turn only, or the model could never answer.
        ...(forced ? { toolChoice: input.toolChoice } : {}),
        ...(input.params ? { params: input.params } : {}),
      },
      {
        stage: "tool-executor",
        signal: input.signal,
        budgetUsd: input.budget?.(usage),
        // Over budget, a light model may still finish the loop.
        degradeTo: ["light"],
        onEvent: input.onEvent ? (...event) => turn.push(event) : undefined,
        cache: input.cache,
      },
    );
    usage.push(call.usage);
    input.onUsage?.(call.usage);
    const last = call.result;
    const calls = last.message.tool_calls ?? [];
    if (calls.length === 0) {
      for (const event of turn) input.onEvent?.(...event);
      return { kind: "answer", last, usage, runs, steps: step };
    }

    const forClient = calls.filter((c) => clientNames.has(c.function.name));
    if (forClient.length > 0) {
      // Calls of mesh tools in the same turn are dropped: the client cannot run them, and the model
      // will ask again once the client's results come back.
      const message = { ...last.message, tool_calls: forClient };
      return { kind: "client_tools", last: { ...last, message }, usage, runs, steps: step };
    }

    messages.push(last.message);
    for (const toolCall of calls) {
      const run = await executeTool(input, toolCall, call.usage.tier === "light" ? "light" : "mid");
      runs.push(run);
      messages.push({ role: "tool", tool_call_id: toolCall.id, content: run.output });
    }
    if (step >= input.maxSteps) return { kind: "exhausted", last, usage, runs, steps: step };
  }
}

/** Runs one call through the toolbox (which makes its `execute_tool` span) and records it. */
async function executeTool(
  input: ToolLoopInput,
  call: ToolCall,
  tier: "light" | "mid",
): Promise<ToolRun> {
  const started = performance.now();
  const outcome = await input.toolbox.execute(
    call,
    { signal: input.signal, ...(input.deadline !== undefined ? { deadline: input.deadline } : {}) },
    input.policy(tier),
  );
  return {
    id: call.id,
    name: call.function.name,
    arguments: call.function.arguments,
    output: outcome.output,
    ...(outcome.error ? { error: outcome.error.message, error_type: outcome.error.type } : {}),
    latency_ms: Math.round(performance.now() - started),
  };
}
