import type { JobInput } from "@handoff/contracts";

/**
 * The text a router reads: the latest user message. Earlier turns, system prompts and tool output
 * say less about how hard the question at hand is, and the labelled data is single prompts.
 */
export function routingText(input: Pick<JobInput, "messages">): string {
  for (let i = input.messages.length - 1; i >= 0; i--) {
    const m = input.messages[i];
    if (m?.role === "user") return m.content;
  }
  return "";
}
