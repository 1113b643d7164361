import { ChatCompletion, ChatCompletionChunk } from "@handoff/contracts";
import { checkTrace } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mesh, pingServices, postChat, startMesh, waitFor } from "./harness.js";

describe("the mesh end to end, four services as four processes", () => {
  let mesh: Mesh;
  const answers: ChatCompletion[] = [];

  beforeAll(async () => {
    mesh = await startMesh();
  });

  afterAll(async () => {
    await mesh?.stop();
  });

  it("finds every service through the NATS service API", async () => {
    expect(await pingServices(mesh.nats.url)).toEqual([
      "classifier",
      "gateway",
      // The tool-executor serves the built-in tools as a tool service of their own.
      "handoff-builtin-tools",
      "heavy-reasoner",
      "tool-executor",
    ]);
  });

  it("answers 17 * 23 with 391 through a real calculator call in the tool-executor", async () => {
    const { status, body } = await postChat(mesh.gatewayUrl, "What is 17 * 23?");
    expect(status).toBe(200);
    const completion = ChatCompletion.parse(body);
    answers.push(completion);
    expect(completion.choices[0]?.message.content).toContain("391");
    expect(completion.handoff.route).toEqual(["classifier", "tool-executor"]);
    expect(completion.handoff.usage.every((u) => u.stage === "tool-executor")).toBe(true);
  });

  it("routes a proof to the heavy-reasoner", async () => {
    const { status, body } = await postChat(
      mesh.gatewayUrl,
      "Prove step by step that there are infinitely many primes.",
    );
    expect(status).toBe(200);
    const completion = ChatCompletion.parse(body);
    answers.push(completion);
    expect(completion.handoff.route.at(-1)).toBe("heavy-reasoner");
    expect(completion.handoff.decision?.decision).toBe("heavy");
    expect(completion.handoff.usage.at(-1)?.tier).toBe("heavy");
  });

  it("answers a greeting with the light model in the classifier", async () => {
    const { body } = await postChat(mesh.gatewayUrl, "Hi! Who are you?");
    const completion = ChatCompletion.parse(body);
    answers.push(completion);
    expect(completion.handoff.route).toEqual(["classifier"]);
    expect(completion.handoff.usage[0]?.tier).toBe("light");
  });

  it("stitches each request into one trace rooted at the gateway, with no broken links", async () => {
    expect(answers).toHaveLength(3);
    for (const answer of answers) {
      const traceId = answer.handoff.trace_id;
      const hops = answer.handoff.route.length;
      // Wait until the last hop's consumer span arrived.
      const spans = await waitFor(
        () => {
          const all = mesh.spans.trace(traceId);
          const consumers = all.filter((s) => s.kind === "CONSUMER").length;
          const server = all.some((s) => s.kind === "SERVER" && s.serviceName === "gateway");
          return consumers >= hops && server ? all : undefined;
        },
        { timeoutMs: 15_000, what: `spans of trace ${traceId}` },
      );
      const { roots, broken } = checkTrace(spans);
      expect(broken.map((s) => `${s.serviceName}:${s.name}`)).toEqual([]);
      expect(roots).toHaveLength(1);
      expect(roots[0]).toMatchObject({
        kind: "SERVER",
        serviceName: "gateway",
        name: "POST /v1/chat/completions",
      });
      expect(roots[0]?.attributes["http.response.status_code"]).toBe(200);

      // Each hop is a PRODUCER publish followed by the stage's CONSUMER span under it.
      const byId = new Map(spans.map((s) => [s.spanId, s]));
      const consumers = spans.filter((s) => s.kind === "CONSUMER");
      expect(consumers.map((s) => s.serviceName).sort()).toEqual([...answer.handoff.route].sort());
      for (const consumer of consumers) {
        expect(consumer.name).toBe(`process handoff.v1.jobs.${consumer.serviceName}`);
        expect(byId.get(consumer.parentSpanId ?? "")?.kind).toBe("PRODUCER");
      }
      // Every model call is a CLIENT span with GenAI attributes and its cost.
      const calls = spans.filter(
        (s) => s.kind === "CLIENT" && s.attributes["gen_ai.operation.name"] !== "execute_tool",
      );
      expect(calls).toHaveLength(answer.handoff.usage.length);
      for (const call of calls) {
        expect(call.attributes["gen_ai.operation.name"]).toBe("chat");
        expect(call.attributes["gen_ai.provider.name"]).toBe("handoff.sim");
        expect(call.attributes["gen_ai.request.model"]).toMatch(/^sim-/);
        expect(call.attributes["gen_ai.usage.input_tokens"]).toBeGreaterThan(0);
        expect(typeof call.attributes["handoff.cost_usd"]).toBe("number");
      }
    }
    const arithmetic = mesh.spans.trace(answers[0]?.handoff.trace_id ?? "");
    // The calculator call on both sides: the tool loop's CLIENT span, the tool service's SERVER
    // span under it.
    const tool = arithmetic.filter((s) => s.name === "execute_tool calculator");
    const caller = tool.find((s) => s.kind === "CLIENT");
    expect(caller?.attributes["gen_ai.tool.name"]).toBe("calculator");
    expect(tool.find((s) => s.kind === "SERVER")?.parentSpanId).toBe(caller?.spanId);
    const classify = arithmetic.find(
      (s) => s.serviceName === "classifier" && s.kind === "CONSUMER",
    );
    expect(classify?.attributes["handoff.route.decision"]).toBe("tools");

    // Across the requests, all four services took part in traces.
    const services = new Set(
      answers.flatMap((a) => mesh.spans.trace(a.handoff.trace_id).map((s) => s.serviceName)),
    );
    expect([...services].sort()).toEqual([
      "classifier",
      "gateway",
      "heavy-reasoner",
      "tool-executor",
    ]);
  });

  it("writes JSON logs that carry the request's trace id in every service it visited", async () => {
    const traceId = answers[0]?.handoff.trace_id;
    for (const name of ["gateway", "classifier", "tool-executor"]) {
      const lines = mesh.processes.get(name)?.logs() ?? [];
      expect(
        lines.some((line) => line.trace_id === traceId && typeof line.span_id === "string"),
      ).toBe(true);
    }
  });

  it("streams an answer across the processes as OpenAI chunks, in one trace", async () => {
    const res = await fetch(`${mesh.gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "handoff",
        stream: true,
        messages: [{ role: "user", content: "What is 12 * 12?" }],
      }),
    });
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const data = (await res.text())
      .split("\n")
      .filter((line) => line.startsWith("data: "))
      .map((line) => line.slice(6));
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => ChatCompletionChunk.parse(JSON.parse(d)));
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("12 * 12 = 144.");
    const traceId = chunks.at(-1)?.handoff?.trace_id ?? "";
    const spans = await waitFor(() => {
      const all = mesh.spans.trace(traceId);
      return all.some((s) => s.serviceName === "tool-executor" && s.kind === "CONSUMER")
        ? all
        : undefined;
    });
    expect(checkTrace(spans).roots).toHaveLength(1);
    expect(checkTrace(spans).broken).toEqual([]);
  });

  it("exports cost and token metrics, and puts each stage's cost on its span", async () => {
    const names = await waitFor(
      () => {
        const found = new Set<string>();
        for (const payload of mesh.spans.payloads("metrics")) {
          const body = payload.body as {
            resourceMetrics?: Array<{
              scopeMetrics?: Array<{ metrics?: Array<{ name: string }> }>;
            }>;
          };
          for (const rm of body.resourceMetrics ?? []) {
            for (const sm of rm.scopeMetrics ?? [])
              for (const m of sm.metrics ?? []) found.add(m.name);
          }
        }
        return found.has("handoff.cost") && found.has("gen_ai.client.token.usage")
          ? found
          : undefined;
      },
      { timeoutMs: 15_000, what: "cost and token metrics" },
    );
    expect(names.has("gen_ai.client.operation.duration")).toBe(true);
    const arithmetic = answers[0];
    const consumer = mesh.spans
      .trace(arithmetic?.handoff.trace_id ?? "")
      .find((s) => s.serviceName === "tool-executor" && s.kind === "CONSUMER");
    expect(consumer?.attributes["handoff.stage.cost_usd"]).toBeCloseTo(
      arithmetic?.handoff.cost_usd ?? -1,
      9,
    );
    expect(arithmetic?.handoff.cost_by_stage).toEqual({
      "tool-executor": arithmetic?.handoff.cost_usd,
    });
  });

  it("drains on SIGTERM: a service exits cleanly and leaves the service API", async () => {
    const heavy = mesh.processes.get("heavy-reasoner");
    const exit = await heavy?.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    await waitFor(async () =>
      !(await pingServices(mesh.nats.url)).includes("heavy-reasoner") ? true : undefined,
    );
  });
});
