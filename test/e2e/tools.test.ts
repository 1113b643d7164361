import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ChatCompletion } from "@handoff/contracts";
import {
  checkTrace,
  type ServiceProcess,
  spawnService,
  startNats,
  UpstreamServer,
  waitFor,
} from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mesh, startMesh } from "./harness.js";

// The mid tier with real tools: a tool service in its own process (examples/tool-service, which
// serves http_get on NATS), an MCP server started by the tool-executor (the SDK-built fixture), and
// an OpenAI-wire upstream as the mid-tier model that calls them. One request makes the model call
// both; another asks for a tool the mid tier is not allowed.

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const cli = join(root, "cli", "dist", "main.js");
const toolService = join(root, "examples", "tool-service", "dist", "main.js");
const notesServer = join(root, "test", "fixtures", "mcp-notes-server.ts");

const CHECKLIST =
  "Launch checklist: fuel loaded at T-40, crew aboard at T-20, go/no-go poll at T-5.";

interface WireMessage {
  role: string;
  content?: string | null;
  tool_call_id?: string;
}

/** An OpenAI chat completion whose message calls tools, as the API sends one. */
function toolCalls(model: string, calls: Array<{ id: string; name: string; args: object }>) {
  return {
    id: "chatcmpl-mid",
    object: "chat.completion",
    created: 1_727_000_000,
    model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: null,
          refusal: null,
          tool_calls: calls.map((call) => ({
            id: call.id,
            type: "function",
            function: { name: call.name, arguments: JSON.stringify(call.args) },
          })),
        },
        logprobs: null,
        finish_reason: "tool_calls",
      },
    ],
    usage: { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150 },
  };
}

function answer(model: string, text: string) {
  return {
    id: "chatcmpl-mid",
    object: "chat.completion",
    created: 1_727_000_000,
    model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: text, refusal: null },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage: { prompt_tokens: 200, completion_tokens: 40, total_tokens: 240 },
  };
}

describe("tools in the mesh: a NATS tool service and an MCP server, behind the allowlist", () => {
  let web: Server;
  let webUrl: string;
  let mid: UpstreamServer;
  let tools: ServiceProcess;
  let mesh: Mesh;

  beforeAll(async () => {
    web = createServer((req, res) => {
      if (req.url === "/launch-checklist") {
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        res.end(CHECKLIST);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
    webUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;

    // The mid-tier model: asked about the launch, it calls both tools; asked to multiply, it calls
    // the calculator, which it was not offered; given tool results, it answers from them.
    mid = await UpstreamServer.start((body) => {
      const model = String(body.model);
      const messages = body.messages as WireMessage[];
      const results = messages.filter((m) => m.role === "tool");
      if (results.length > 0) {
        return {
          kind: "json",
          body: answer(model, `From the tools: ${results.map((m) => m.content).join(" | ")}`),
        };
      }
      const question = messages.findLast((m) => m.role === "user")?.content ?? "";
      const calls = question.includes("launch")
        ? [
            { id: "call_page", name: "http_get", args: { url: `${webUrl}/launch-checklist` } },
            { id: "call_note", name: "notes__lookup_note", args: { topic: "handoff-launch" } },
          ]
        : [{ id: "call_calc", name: "calculator", args: { expression: "6 * 7" } }];
      return { kind: "json", body: toolCalls(model, calls) };
    });

    const nats = await startNats();
    mesh = await startMesh({
      nats,
      services: [],
      config: `
tiers:
  light: [{ provider: sim, model: sim-light }]
  mid:
    - provider: openai-compatible
      model: mid-upstream
      base_url: ${mid.url}/v1
      price: { input_per_mtok: 2.5, output_per_mtok: 10 }
  heavy: [{ provider: sim, model: sim-heavy }]
tools:
  allow:
    mid: [http_get, "notes__lookup*", clock]
  mcp:
    - name: notes
      command: ${JSON.stringify(process.execPath)}
      args: [${JSON.stringify(notesServer)}]
`,
    });
    // The tool service runs first, in its own process, exporting its spans like the services.
    tools = spawnService({
      name: "http-tools",
      entry: toolService,
      env: {
        NATS_URL: nats.url,
        HTTP_GET_ALLOW_HOSTS: "127.0.0.1",
        // The test's web server is on loopback, which a real deployment would never allow.
        HTTP_GET_ALLOW_PRIVATE: "1",
        OTEL_SERVICE_NAME: undefined,
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT: mesh.spans.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_BSP_SCHEDULE_DELAY: "100",
        OTEL_METRICS_EXPORTER: "none",
        OTEL_LOGS_EXPORTER: "none",
      },
    });
    await tools.waitForLog((line) => line.msg === "http-tools ready", 20_000);
    await Promise.all(
      (["gateway", "classifier", "tool-executor", "heavy-reasoner"] as const).map((name) =>
        mesh.start(name),
      ),
    );
  });

  afterAll(async () => {
    await mesh?.stop();
    await tools?.stop(10_000);
    await mid?.close();
    web?.close();
  });

  it("lets the mid-tier model call a NATS tool service and an MCP tool, in one trace", async () => {
    const res = await fetch(`${mesh.gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "handoff/mid",
        messages: [
          { role: "user", content: "What is on the launch checklist, and the code word?" },
        ],
      }),
    });
    expect(res.status).toBe(200);
    const completion = ChatCompletion.parse(await res.json());
    const content = completion.choices[0]?.message.content ?? "";
    // The answer is built from both tools' results: the page and the note.
    expect(content).toContain(CHECKLIST);
    expect(content).toContain("the code word is PELICAN");
    expect(completion.handoff.route).toEqual(["classifier", "tool-executor"]);
    expect(completion.handoff.usage.map((u) => [u.stage, u.tier, u.model])).toEqual([
      ["tool-executor", "mid", "mid-upstream"],
      ["tool-executor", "mid", "mid-upstream"],
    ]);

    // The model was offered the allowed tools, with their schemas, and not the calculator.
    const first = mid.requests[0]?.body as { tools?: Array<{ function: { name: string } }> };
    const offered = (first.tools ?? []).map((t) => t.function.name).sort();
    expect(offered).toEqual(["clock", "http_get", "notes__lookup_note"]);

    // One trace: the gateway's root, the tool-executor's two tool calls (CLIENT), and the tool
    // service's side of http_get (SERVER, in its own process), with no broken parent link.
    const traceId = completion.handoff.trace_id;
    const spans = await waitFor(
      () => {
        const all = mesh.spans.trace(traceId);
        const server = all.some((s) => s.name === "execute_tool http_get" && s.kind === "SERVER");
        const executor = all.some((s) => s.name === "execute_tool notes__lookup_note");
        // The gateway's SERVER span ends with the response, and each hop's CONSUMER span (the
        // tool calls' parent) after its work: either may be exported last.
        const root = all.some((s) => s.kind === "SERVER" && s.serviceName === "gateway");
        const consumers = all.filter((s) => s.kind === "CONSUMER").length;
        return server && executor && root && consumers >= completion.handoff.route.length
          ? all
          : undefined;
      },
      { timeoutMs: 15_000, what: `the tool spans of trace ${traceId}` },
    );
    const { roots, broken } = checkTrace(spans);
    expect(roots).toHaveLength(1);
    expect(broken).toEqual([]);
    const page = spans.filter((s) => s.name === "execute_tool http_get");
    expect(page.map((s) => [s.serviceName, s.kind]).sort()).toEqual([
      ["http-tools", "SERVER"],
      ["tool-executor", "CLIENT"],
    ]);
    const clientSide = page.find((s) => s.kind === "CLIENT");
    expect(page.find((s) => s.kind === "SERVER")?.parentSpanId).toBe(clientSide?.spanId);
    expect(clientSide?.attributes).toMatchObject({
      "gen_ai.tool.name": "http_get",
      "handoff.tool.outcome": "ok",
      "handoff.tool.source": "nats",
    });
    const note = spans.find((s) => s.name === "execute_tool notes__lookup_note");
    expect(note).toMatchObject({ serviceName: "tool-executor", kind: "CLIENT" });
    expect(note?.attributes).toMatchObject({
      "handoff.tool.outcome": "ok",
      "handoff.tool.source": "mcp:notes",
    });
  });

  it("refuses a tool the mid tier is not allowed, and the model reads why", async () => {
    const before = mid.requests.length;
    const res = await fetch(`${mesh.gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "handoff/mid",
        messages: [{ role: "user", content: "Multiply six by seven with the calculator." }],
      }),
    });
    expect(res.status).toBe(200);
    const completion = ChatCompletion.parse(await res.json());
    const refusal =
      'tool "calculator" is not allowed for the mid tier (tools.allow.mid); use only the tools you were offered';
    expect(completion.choices[0]?.message.content).toBe(`From the tools: error: ${refusal}`);
    // The refusal went back to the model as the call's tool result.
    const second = mid.requests[before + 1]?.body as { messages: WireMessage[] };
    expect(second.messages.at(-1)).toEqual({
      role: "tool",
      tool_call_id: "call_calc",
      content: `error: ${refusal}`,
    });
    // The calculator was never called: no span of its service in the trace.
    const spans = await waitFor(
      () => {
        const all = mesh.spans.trace(completion.handoff.trace_id);
        return all.some((s) => s.name === "execute_tool calculator") ? all : undefined;
      },
      { timeoutMs: 15_000, what: "the refused call's span" },
    );
    const calls = spans.filter((s) => s.name === "execute_tool calculator");
    expect(calls.map((s) => [s.kind, s.attributes["handoff.tool.outcome"]])).toEqual([
      ["CLIENT", "not_allowed"],
    ]);
  });

  it("lists every tool the mesh can see, where it lives and who may use it (handoff tools)", async () => {
    // This machine's config says nothing of the mesh's: what is listed comes from the mesh.
    const env: NodeJS.ProcessEnv = { ...process.env, NATS_URL: mesh.nats.url };
    delete env.HANDOFF_CONFIG;
    const { stdout } = await run(process.execPath, [cli, "tools", "--json"], { env });
    const report = JSON.parse(stdout) as {
      executors: string[];
      tools: Array<{ name: string; origin: Record<string, unknown>; mid: boolean }>;
    };
    expect(report.executors).toHaveLength(1);
    const byName = new Map(report.tools.map((t) => [t.name, t]));
    expect(byName.get("http_get")).toMatchObject({
      origin: { kind: "nats", service: "http-tools", instances: 1 },
      mid: true,
    });
    expect(byName.get("notes__lookup_note")).toMatchObject({
      origin: { kind: "mcp", server: "notes", transport: "stdio", tool: "lookup_note" },
      mid: true,
    });
    expect(byName.get("calculator")).toMatchObject({
      origin: { kind: "nats", service: "handoff-builtin-tools" },
      mid: false,
    });
    const text = await run(process.execPath, [cli, "tools"], { env });
    expect(text.stdout).toMatch(/http_get\s+NATS http-tools \(1 instance\)\s+every request/);
    expect(text.stdout).toMatch(/calculator\s+NATS handoff-builtin-tools .*no one/);
  });
});
