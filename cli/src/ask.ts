import type { ChatCompletion, ErrorBody, Usage } from "@handoff/contracts";

export interface AskOptions {
  url: string;
  question: string;
  model?: string;
  timeoutMs?: number;
}

export type AskOutcome =
  | { ok: true; status: number; completion: ChatCompletion }
  | { ok: false; status: number; error: ErrorBody["error"] };

/** Sends one question through the gateway's OpenAI-compatible endpoint. */
export async function ask(options: AskOptions): Promise<AskOutcome> {
  const res = await fetch(new URL("/v1/chat/completions", options.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: options.model ?? "handoff",
      messages: [{ role: "user", content: options.question }],
      ...(options.timeoutMs ? { handoff: { timeout_ms: options.timeoutMs } } : {}),
    }),
  });
  const body: unknown = await res.json();
  if (res.ok) return { ok: true, status: res.status, completion: body as ChatCompletion };
  return { ok: false, status: res.status, error: (body as ErrorBody).error };
}

const usd = (value: number) => `$${value.toFixed(value < 0.01 ? 7 : 4)}`;

function table(rows: string[][]): string[] {
  const widths =
    rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? "").length))) ?? [];
  return rows.map((r) =>
    r
      .map((cell, col) => cell.padEnd(widths[col] ?? 0))
      .join("  ")
      .trimEnd(),
  );
}

/** The answer, the route, the cost of each hop and the trace id, for a terminal. */
export function formatCompletion(completion: ChatCompletion): string {
  const { handoff } = completion;
  const choice = completion.choices[0];
  const answer =
    choice?.message.content ??
    (choice?.message.tool_calls ?? [])
      .map((c) => `(calls ${c.function.name} ${c.function.arguments})`)
      .join("\n");
  const d = handoff.decision;
  const scored =
    d?.score !== undefined && d.threshold !== undefined
      ? `, score ${d.score.toFixed(2)} vs threshold ${d.threshold.toFixed(2)}`
      : "";
  const decision = d
    ? `${d.decision} by ${d.strategy}${scored}, confidence ${d.confidence.toFixed(2)}: ${d.reason}`
    : "";
  const hops = table([
    ["stage", "tier", "provider", "model", "tokens in", "out", "cost", "latency"],
    ...handoff.usage.map((u: Usage) => [
      u.stage,
      u.tier,
      u.provider,
      u.model,
      String(u.input_tokens),
      String(u.output_tokens),
      usd(u.cost_usd),
      `${u.latency_ms} ms`,
    ]),
  ]);
  return [
    answer,
    "",
    `route:   ${handoff.route.join(" -> ")}${decision ? `  (${decision})` : ""}`,
    ...(handoff.escalation
      ? [
          `escalated: the ${handoff.escalation.stage}'s answer did not stand (${handoff.escalation.reason})`,
        ]
      : []),
    "cost per hop:",
    ...hops.map((line) => `  ${line}`),
    `total:   ${usd(handoff.cost_usd)}${handoff.simulated ? "  (simulated models: configure real providers for real answers)" : ""}`,
    `trace:   ${handoff.trace_id}`,
    `job:     ${handoff.job_id}`,
  ].join("\n");
}

export function formatError(status: number, error: ErrorBody["error"]): string {
  const lines = [`error ${status} ${error.code ?? error.type}: ${error.message}`];
  for (const issue of error.issues ?? []) lines.push(`  at ${issue.path}: ${issue.message}`);
  if (error.job_id) lines.push(`job:     ${error.job_id}`);
  if (error.trace_id) lines.push(`trace:   ${error.trace_id}`);
  return lines.join("\n");
}
