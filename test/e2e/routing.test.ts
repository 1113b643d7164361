import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ChatCompletion } from "@handoff/contracts";
import { openaiCompletion, UpstreamServer } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mesh, postChat, startMesh } from "./harness.js";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const cli = join(root, "cli", "dist", "main.js");

const WRONG =
  "Janet's ducks lay 16 eggs a day. She eats three for breakfast and bakes muffins with four. She sells the rest at $2 an egg. How much does she make every day?";
const RIGHT =
  "Toula bought 3 dozen donuts at $68 a dozen and 2 dozen cupcakes at $80 a dozen. How much did she pay in total?";

/**
 * The light tier's answers, by question, as a real OpenAI-compatible server would send them: a
 * worked answer with an arithmetic slip for one question, a correct one for the other, each ending
 * with the confidence line the cascade asks for.
 */
const LIGHT_ANSWERS: Record<string, string> = {
  [WRONG]:
    "She eats 3 and bakes with 4, so 16 - 3 - 4 = 8 eggs are left.\nShe makes 8 x $2 = $16.\nThe answer is 16.\nConfidence: 70%",
  [RIGHT]:
    "3 x 68 = 204 and 2 x 80 = 160, so 204 + 160 = 364.\nThe answer is 364.\nConfidence: 95%",
};

describe("routing in the mesh: the cascade through the gateway, and replay of recorded traffic", () => {
  let upstream: UpstreamServer;
  let mesh: Mesh;

  beforeAll(async () => {
    upstream = await UpstreamServer.start((body) => {
      const messages = body.messages as Array<{ role: string; content: string }>;
      const question = messages.find((m) => m.role === "user")?.content ?? "";
      const text = LIGHT_ANSWERS[question] ?? `No scripted answer for: ${question}`;
      return {
        kind: "json",
        body: openaiCompletion(
          "light-upstream",
          { kind: "text", text },
          { prompt: 60, completion: 30 },
        ),
      };
    });
    mesh = await startMesh({
      config: `
tiers:
  light:
    - provider: openai-compatible
      model: light-upstream
      base_url: ${upstream.url}/v1
      price: { input_per_mtok: 0.6, output_per_mtok: 0.6 }
  mid: [{ provider: sim, model: sim-mid }]
  heavy: [{ provider: sim, model: sim-heavy, price: { input_per_mtok: 10, output_per_mtok: 30 } }]
routing:
  strategy: cascade
  record_inputs: true
`,
    });
  });

  afterAll(async () => {
    await mesh?.stop();
    await upstream?.close();
  });

  it("escalates a light answer that fails verification to the heavy tier, with the draft attached", async () => {
    const { status, body } = await postChat(mesh.gatewayUrl, WRONG);
    expect(status).toBe(200);
    const completion = ChatCompletion.parse(body);
    const { handoff } = completion;
    expect(handoff.route).toEqual(["classifier", "heavy-reasoner"]);
    expect(handoff.escalated).toBe(true);
    expect(handoff.escalation).toMatchObject({ stage: "classifier" });
    expect(handoff.escalation?.reason).toContain("arithmetic error");
    expect(handoff.decision).toMatchObject({ decision: "heavy", strategy: "cascade" });
    expect(handoff.decision?.score).toBeGreaterThanOrEqual(handoff.decision?.threshold ?? 1);
    // Both calls are billed: the light answer that did not stand, and the heavy one.
    expect(handoff.usage.map((u) => [u.stage, u.tier, u.model])).toEqual([
      ["classifier", "light", "light-upstream"],
      ["heavy-reasoner", "heavy", "sim-heavy"],
    ]);
    expect(handoff.cost_usd).toBeCloseTo(
      handoff.usage.reduce((s, u) => s + u.cost_usd, 0),
      9,
    );
    // The heavy model saw the light draft among the findings handed up (the sim model lists them).
    expect(completion.choices[0]?.message.content).toContain(
      "- Draft from the classifier (cascade: verifier:",
    );
    expect(completion.model).toBe("sim-heavy");
  });

  it("keeps a light answer that passes, without the confidence line, in one hop", async () => {
    const { status, body } = await postChat(mesh.gatewayUrl, RIGHT);
    expect(status).toBe(200);
    const completion = ChatCompletion.parse(body);
    expect(completion.handoff.route).toEqual(["classifier"]);
    expect(completion.handoff.escalated).toBe(false);
    expect(completion.handoff.decision).toMatchObject({ decision: "light", strategy: "cascade" });
    expect(completion.handoff.usage).toHaveLength(1);
    expect(completion.choices[0]?.message.content).toBe(
      "3 x 68 = 204 and 2 x 80 = 160, so 204 + 160 = 364.\nThe answer is 364.",
    );
  });

  it("streams a cascaded answer only after its verdict: the client never sees a draft that is replaced", async () => {
    const res = await fetch(`${mesh.gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "handoff",
        stream: true,
        messages: [{ role: "user", content: WRONG }],
      }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    const chunks = text
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map(
        (e) =>
          JSON.parse(e.slice(6)) as {
            choices: Array<{ delta: { content?: string } }>;
            handoff?: { escalated: boolean };
          },
      );
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    // The first text the client sees is the heavy answer's: the light draft was never streamed.
    expect(content.startsWith("[simulated sim-heavy]")).toBe(true);
    expect(chunks.at(-1)?.handoff?.escalated).toBe(true);
  });

  it("exports recorded jobs and replays them through any strategy without calling a model", async () => {
    const env = { ...process.env, NATS_URL: mesh.nats.url };
    const exported = await run(process.execPath, [cli, "jobs", "export", "--since", "1h"], { env });
    const rows = exported.stdout
      .trim()
      .split("\n")
      .map(
        (line) =>
          JSON.parse(line) as {
            messages: Array<{ content: string }>;
            route?: { strategy: string };
          },
      );
    expect(rows.length).toBeGreaterThanOrEqual(3);
    expect(rows.map((r) => r.messages[0]?.content)).toEqual(expect.arrayContaining([WRONG, RIGHT]));
    expect(rows.every((r) => r.route?.strategy === "cascade")).toBe(true);
    expect(exported.stderr).toMatch(/exported \d+ jobs/);

    const file = join(mkdtempSync(join(tmpdir(), "handoff-replay-")), "jobs.jsonl");
    writeFileSync(file, exported.stdout);
    const before = upstream.requests.length;
    const replay = await run(
      process.execPath,
      [cli, "router", "eval", "--data", file, "--strategy", "rules,learned", "--json"],
      { env },
    );
    const report = JSON.parse(replay.stdout) as {
      labelled: boolean;
      strategies: Array<{
        name: string;
        at_threshold: { strong_share: number; usd_per_1k: number };
      }>;
    };
    expect(report.labelled).toBe(false);
    expect(report.strategies.map((s) => s.name)).toEqual(["rules", "learned"]);
    for (const s of report.strategies) {
      expect(s.at_threshold.strong_share).toBeGreaterThanOrEqual(0);
      expect(s.at_threshold.usd_per_1k).toBeGreaterThan(0);
    }
    // Replay scores recorded prompts offline: no model was called.
    expect(upstream.requests.length).toBe(before);
  });
});
