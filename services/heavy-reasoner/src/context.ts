import type { JobEnvelope, Message } from "@handoff/contracts";

/**
 * What the earlier hops learned, as a system message for the heavy model: the route and why, the
 * tools that ran and what they returned, and any draft a lower tier handed up. One finding a line,
 * each starting with "- ", so a model (and a person reading the trace) can scan it.
 *
 * It goes after the client's messages (see `heavyMessages`), which is why it speaks of "the
 * conversation above": it changes with every job, and anything in front of the conversation
 * would change the prompt prefix that providers cache.
 */
export function contextMessage(envelope: JobEnvelope): Message | undefined {
  const lines: string[] = [];
  if (envelope.route) {
    const { decision, strategy, confidence, reason } = envelope.route;
    lines.push(
      `- Routed ${decision} by ${strategy} (confidence ${confidence.toFixed(2)}): ${reason}`,
    );
  }
  for (const enrichment of envelope.enrichments) {
    switch (enrichment.kind) {
      case "tool_results":
        for (const run of enrichment.runs) {
          lines.push(
            run.error
              ? `- Tool ${run.name}(${run.arguments}) failed: ${run.error}`
              : `- Tool ${run.name}(${run.arguments}) returned: ${run.output}`,
          );
        }
        break;
      case "draft":
        if (enrichment.content.trim()) {
          lines.push(
            `- Draft from the ${enrichment.stage} (${enrichment.reason}): ${oneLine(enrichment.content)}`,
          );
        }
        break;
      case "classification":
      case "compaction":
        break;
    }
  }
  if (lines.length === 0) return undefined;
  return {
    role: "system",
    content: [
      "You are the heavy reasoning tier of a model mesh answering the conversation above. " +
        "Earlier stages of the mesh (not the user) handed you this context; use what is correct, " +
        "verify what matters, and give a complete, careful answer to the last user message.",
      ...lines,
    ].join("\n"),
  };
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 600 ? `${flat.slice(0, 599)}…` : flat;
}

/**
 * The messages the heavy model gets: the client's, unchanged and first, then the context from the
 * earlier hops. A provider's prompt cache keys on the prompt's prefix, so the client's
 * conversation (its system prompt, its history) stays byte-for-byte the prefix of every job that
 * shares it, and its cache keeps hitting; the per-job context only ever comes after it.
 */
export function heavyMessages(envelope: JobEnvelope): Message[] {
  const context = contextMessage(envelope);
  return context ? [...envelope.input.messages, context] : [...envelope.input.messages];
}
