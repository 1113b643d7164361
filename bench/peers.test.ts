import { parseConfig } from "@handoff/config";
import { describe, expect, it } from "vitest";
import { envFlag, type Summary } from "./lib.ts";
import { answerTo, chatCompletion, MOCK_ANSWER } from "./mock-upstream.ts";
import { countSpansJson, countSpansProtobuf } from "./otlp-sink.ts";
import { MOCK_KEY_ENV, MOCK_MODELS, peerConfigYaml, portkeyHeaders } from "./peers.ts";
import { type MachineFacts, parseStatBusyTicks, parseVmRss } from "./proc.ts";
import {
  type Measurement,
  meanOverheadMs,
  meanRate,
  overheadMs,
  type PeerMeasurement,
  type PeerReport,
  peerVerdicts,
  type Report,
  ratioBeside,
  renderPeerSection,
  renderReadme,
  renderTables,
  rssVerdict,
  shapeReading,
  shapeTable,
  verdictWord,
} from "./report.ts";

const MB = 1e6;

function summary(opsPerSec: number, p50Ms: number, ops = 2000): Summary {
  return {
    ops,
    elapsedMs: (ops * 1000) / opsPerSec,
    opsPerSec,
    p50Ms,
    p99Ms: p50Ms * 3,
    meanMs: p50Ms * 1.2,
    maxMs: p50Ms * 5,
  };
}

function peerMeasurement(
  key: PeerMeasurement["key"],
  opsPerSec: number,
  serialP50Ms: number | undefined,
  rss: Record<string, number> = {},
  cpu: Record<string, number> = {},
): PeerMeasurement {
  return {
    key,
    label: key,
    what: `${key} path`,
    loaded: summary(opsPerSec, 10),
    serial: serialP50Ms === undefined ? undefined : summary(500, serialP50Ms, 200),
    cpuMs: new Map(Object.entries({ "bench (client)": 1000, ...cpu })),
    rssBytes: new Map(Object.entries(rss).map(([name, mb]) => [name, mb * MB])),
    upstreamCallsPerOp: 1,
  };
}

const services = (mb: number) => ({
  gateway: mb,
  classifier: mb + 10,
  "tool-executor": mb - 20,
  "heavy-reasoner": mb - 30,
});

function peers(options: {
  portkey: number;
  handoff: number;
  traced: number;
  serial?: { direct: number; portkey: number; handoff: number; relay?: number };
  serviceMb?: number;
  /** The bare relay's requests/s; without it, the run had no relay. */
  relay?: number;
}): PeerReport {
  const serial = options.serial;
  const mb = options.serviceMb ?? 150;
  return {
    portkey: { version: "1.15.2", install: "added 95 packages in 3s", installMs: 3400 },
    measurements: [
      peerMeasurement("direct", 3000, serial?.direct, { "bench (client)": 250 }),
      peerMeasurement(
        "portkey",
        options.portkey,
        serial?.portkey,
        { Portkey: 160 },
        {
          Portkey: 4000,
        },
      ),
      ...(options.relay === undefined
        ? []
        : [
            peerMeasurement(
              "relay",
              options.relay,
              serial?.relay,
              { "relay front": 60, "relay tier": 70, "nats-server": 20 },
              { "relay front": 1000, "nats-server": 600, "relay tier": 1400 },
            ),
          ]),
      peerMeasurement(
        "handoff",
        options.handoff,
        serial?.handoff,
        { "nats-server": 20, ...services(mb) },
        { "nats-server": 2000, gateway: 4000, classifier: 4000 },
      ),
      peerMeasurement(
        "handoff-traced",
        options.traced,
        serial ? serial.handoff + 1 : undefined,
        { ...services(mb - 5), "OTLP sink": 80 },
        { "nats-server": 2000, gateway: 5000, classifier: 5000, "OTLP sink": 100 },
      ),
    ],
    otlp: { exports: 40, bytes: 6_000_000, spans: 24_000, ops: 2400 },
    durationMs: 31_000,
  };
}

describe("envFlag", () => {
  it("is off when unset or blank, on for 1/true/yes/on, off for 0/false/no/off", () => {
    expect(envFlag({}, "BENCH_PEERS")).toBe(false);
    expect(envFlag({ BENCH_PEERS: " " }, "BENCH_PEERS")).toBe(false);
    for (const on of ["1", "true", "YES", "On"]) expect(envFlag({ X: on }, "X")).toBe(true);
    for (const off of ["0", "false", "No", "OFF"]) expect(envFlag({ X: off }, "X")).toBe(false);
  });

  it("names the variable when the value is neither", () => {
    expect(() => envFlag({ BENCH_PEERS: "2" }, "BENCH_PEERS")).toThrow(/BENCH_PEERS.*"2"/);
  });
});

describe("parseVmRss", () => {
  it("reads the VmRSS line of /proc/<pid>/status in bytes", () => {
    const status = "Name:\tnode\nVmPeak:\t 1234 kB\nVmRSS:\t  181452 kB\nRssAnon:\t 9 kB\n";
    expect(parseVmRss(status)).toBe(181452 * 1024);
  });

  it("is undefined without one (a kernel thread, a zombie)", () => {
    expect(parseVmRss("Name:\tkthreadd\nState:\tS (sleeping)\n")).toBeUndefined();
  });
});

describe("parseStatBusyTicks", () => {
  it("adds up the cpu line of /proc/stat less idle and iowait", () => {
    const stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
    expect(parseStatBusyTicks(stat)).toBe(100 + 5 + 50 + 3 + 2 + 1);
  });

  it("is undefined for anything else", () => {
    expect(parseStatBusyTicks("intr 1 2 3\n")).toBeUndefined();
    expect(parseStatBusyTicks("")).toBeUndefined();
  });
});

describe("the mock upstream's answer", () => {
  it("is a chat.completion as OpenAI sends it", () => {
    const answer = chatCompletion({
      id: "chatcmpl-1",
      model: "mock-light",
      content: "Hi",
      promptTokens: 7,
      createdSeconds: 1_700_000_000,
    });
    expect(answer).toMatchObject({
      id: "chatcmpl-1",
      object: "chat.completion",
      created: 1_700_000_000,
      model: "mock-light",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "Hi" },
          finish_reason: "stop",
          logprobs: null,
        },
      ],
      usage: { prompt_tokens: 7, completion_tokens: 1, total_tokens: 8 },
    });
  });

  it("answers any request with the fixed text, for the model it asked for", () => {
    const request = JSON.stringify({
      model: "mock-light",
      messages: [{ role: "user", content: "Hello there" }],
    });
    const answer = JSON.parse(answerTo(request, "chatcmpl-7", 1_700_000_000_999));
    expect(answer.model).toBe("mock-light");
    expect(answer.created).toBe(1_700_000_000);
    expect(answer.choices[0].message.content).toBe(MOCK_ANSWER);
    expect(answer.usage.prompt_tokens).toBeGreaterThan(0);
    expect(JSON.parse(answerTo("not json", "x", 0)).choices[0].message.content).toBe(MOCK_ANSWER);
  });
});

describe("the OTLP sink's span count", () => {
  const varint = (value: number): number[] => {
    const out: number[] = [];
    let v = value;
    while (v >= 0x80) {
      out.push((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    out.push(v);
    return out;
  };
  const field = (number: number, bytes: number[]): number[] => [
    ...varint((number << 3) | 2),
    ...varint(bytes.length),
    ...bytes,
  ];
  // A span with a name and a fixed64 start time; long enough to need a 2-byte length.
  const span = [
    ...field(5, [...Buffer.from("x".repeat(150))]),
    (7 << 3) | 1,
    ...[1, 2, 3, 4, 5, 6, 7, 8],
  ];
  const scope = (spans: number) => [
    ...field(1, field(1, [...Buffer.from("handoff")])),
    ...Array.from({ length: spans }, () => field(2, span)).flat(),
  ];
  const resource = (...scopes: number[]) => [
    ...field(1, field(1, [...Buffer.from("attrs")])),
    ...scopes.flatMap((n) => field(2, scope(n))),
  ];

  it("counts spans across resources and scopes in protobuf", () => {
    const request = Uint8Array.from([...field(1, resource(3, 2)), ...field(1, resource(4))]);
    expect(countSpansProtobuf(request)).toBe(9);
    expect(countSpansProtobuf(new Uint8Array())).toBe(0);
  });

  it("rejects a truncated message", () => {
    const request = Uint8Array.from(field(1, resource(2)));
    expect(() => countSpansProtobuf(request.subarray(0, request.length - 3))).toThrow(/truncated/);
  });

  it("counts spans in OTLP JSON", () => {
    const body = {
      resourceSpans: [
        { scopeSpans: [{ spans: [{}, {}] }, { spans: [{}] }] },
        { scopeSpans: [{ spans: [] }] },
      ],
    };
    expect(countSpansJson(JSON.stringify(body))).toBe(3);
  });
});

describe("the peer mesh's config and Portkey's routing", () => {
  it("is a valid Handoff config with every tier on the mock upstream", () => {
    const config = parseConfig(peerConfigYaml("http://127.0.0.1:4567"), "peers.yaml");
    for (const tier of ["light", "mid", "heavy"] as const) {
      expect(config.tiers[tier]).toHaveLength(1);
      expect(config.tiers[tier][0]).toMatchObject({
        id: MOCK_MODELS[tier],
        provider: "openai-compatible",
        model: MOCK_MODELS[tier],
        base_url: "http://127.0.0.1:4567/v1",
        api_key_env: MOCK_KEY_ENV,
      });
    }
  });

  it("names the provider and the custom host in headers", () => {
    expect(portkeyHeaders("http://127.0.0.1:4567/v1")).toMatchObject({
      "x-portkey-provider": "openai",
      "x-portkey-custom-host": "http://127.0.0.1:4567/v1",
    });
  });
});

describe("the targets", () => {
  it("are met when Handoff is as fast, adds no more, traces cheaply and stays small", () => {
    const verdicts = peerVerdicts(
      peers({
        portkey: 400,
        handoff: 420,
        traced: 400,
        serial: { direct: 0.5, portkey: 2.5, handoff: 2.0 },
      }),
    );
    expect(verdicts.map((v) => v.met)).toEqual([true, true, true, true]);
    expect(verdicts[0]?.value).toBe("1.05");
    expect(verdicts[1]?.value).toBe("1.50 ms vs 2.00 ms");
    expect(verdicts[2]?.value).toBe("0.95");
    expect(verdicts[3]?.value).toBe("largest: classifier, 160.0 MB");
  });

  it("are not met on the other side of each line", () => {
    const verdicts = peerVerdicts(
      peers({
        portkey: 400,
        handoff: 300,
        traced: 240,
        serial: { direct: 0.5, portkey: 2.5, handoff: 8.5 },
        serviceMb: 195,
      }),
    );
    expect(verdicts.map((v) => v.met)).toEqual([false, false, false, false]);
    expect(verdicts[3]?.value).toBe("largest: classifier, 205.0 MB");
  });

  it("show a ratio that falls just short of its line with the digit that says so", () => {
    expect(ratioBeside(0.8996, 0.9)).toBe("0.900");
    expect(ratioBeside(0.9, 0.9)).toBe("0.90");
    expect(ratioBeside(0.9049, 0.9)).toBe("0.90");
    expect(ratioBeside(0.997, 1)).toBe("0.997");
    expect(ratioBeside(0.62, 1)).toBe("0.62");
    const verdicts = peerVerdicts(peers({ portkey: 1000, handoff: 998, traced: 898 }));
    expect(verdicts[0]).toMatchObject({ value: "0.998", met: false });
    expect(verdicts[2]).toMatchObject({ value: "0.900", met: false });
  });

  it("take the lines themselves as met", () => {
    const verdicts = peerVerdicts(
      peers({
        portkey: 400,
        handoff: 400,
        traced: 360,
        serial: { direct: 0.5, portkey: 2.5, handoff: 2.5 },
      }),
    );
    expect(verdicts.slice(0, 3).map((v) => v.met)).toEqual([true, true, true]);
  });

  it("judge tracing by the mean rates of the alternating rounds, not by one pair", () => {
    const report = peers({ portkey: 400, handoff: 500, traced: 400 });
    // A second round in which tracing on ran faster than off: one pair alone says 0.80.
    report.measurements.push(
      peerMeasurement("handoff", 420, undefined),
      peerMeasurement("handoff-traced", 500, undefined, { gateway: 300 }),
    );
    expect(meanRate(report, "handoff")).toBe(460);
    const verdicts = peerVerdicts(report);
    expect(verdicts[2]?.value).toBe("0.98");
    expect(verdicts[2]?.met).toBe(true);
    // Memory is judged over every round.
    expect(verdicts[3]?.value).toBe("largest: gateway, 300.0 MB");
  });

  it("judge Handoff against Portkey by the mean rates and overheads of the rounds", () => {
    const report = peers({
      portkey: 400,
      handoff: 420,
      traced: 400,
      serial: { direct: 0.5, portkey: 1.5, handoff: 2.0 },
    });
    // A second round in which Portkey ran fast and Handoff slow: that pair alone says 0.60.
    report.measurements.push(
      peerMeasurement("portkey", 600, 1.0),
      peerMeasurement("handoff", 360, 3.0),
      peerMeasurement("handoff-traced", 380, 3.5),
    );
    expect(meanRate(report, "portkey")).toBe(500);
    expect(meanOverheadMs(report, "portkey")).toBeCloseTo(0.75);
    expect(meanOverheadMs(report, "handoff")).toBeCloseTo(2.0);
    const verdicts = peerVerdicts(report);
    expect(verdicts[0]?.value).toBe("0.78");
    expect(verdicts[1]?.value).toBe("2.00 ms vs 0.75 ms");
    expect(verdicts[1]?.met).toBe(false);
    // A round without its serial run leaves the mean of those that had one.
    report.measurements.push(peerMeasurement("portkey", 500, undefined));
    expect(meanOverheadMs(report, "portkey")).toBeCloseTo(0.75);
  });

  it("say 'not measured' for the overhead without serial runs", () => {
    const verdicts = peerVerdicts(peers({ portkey: 400, handoff: 420, traced: 400 }));
    expect(verdicts[1]?.met).toBeUndefined();
    expect(verdictWord(verdicts[1]?.met)).toBe("not measured");
    expect(verdictWord(true)).toBe("met");
    expect(verdictWord(false)).toBe("not met");
  });

  it("judge memory by the services only, whatever the client or Portkey hold", () => {
    const verdict = rssVerdict([
      { label: "a", rssBytes: new Map([["bench (client)", 900 * MB]]) },
      {
        label: "b",
        rssBytes: new Map([
          ["Portkey", 500 * MB],
          ["gateway", 120 * MB],
          ["classifier", 199.9 * MB],
        ]),
      },
    ]);
    expect(verdict.met).toBe(true);
    expect(verdict.value).toBe("largest: classifier, 199.9 MB");
    expect(rssVerdict([{ label: "a", rssBytes: new Map() }]).met).toBeUndefined();
  });

  it("measure the overhead from the direct path's unloaded p50", () => {
    const report = peers({
      portkey: 400,
      handoff: 420,
      traced: 400,
      serial: { direct: 0.5, portkey: 2.5, handoff: 2.0 },
    });
    const [direct, portkey] = report.measurements;
    expect(overheadMs(portkey as PeerMeasurement, direct)).toBeCloseTo(2.0);
    expect(overheadMs(portkey as PeerMeasurement, undefined)).toBeNaN();
  });
});

const machine: MachineFacts = {
  cpuModel: "Test CPU",
  cores: 2,
  memoryGiB: 8,
  kernel: "Linux 6",
  loadAverage: 0.5,
  node: "v24.0.0",
  natsServer: "nats-server: v2.9.10",
};

const settings = { n: 2000, concurrency: 16, warmup: 200, serialN: 200, peers: true };

function mainMeasurement(key: Measurement["key"], opsPerSec: number): Measurement {
  const mesh = key.startsWith("mesh");
  return {
    key,
    label: `workload ${key}`,
    what: `one ${key}`,
    loaded: summary(opsPerSec, 5),
    serial: summary(300, 1, 200),
    cpuMs: new Map([
      ["bench (client)", 800],
      ["nats-server", 400],
    ]),
    rssBytes: new Map([
      ["bench (client)", 150 * MB],
      ["nats-server", 20 * MB],
      ...(mesh ? Object.entries(services(140)).map(([n, mb]) => [n, mb * MB] as const) : []),
    ]),
    traffic: undefined,
  };
}

function report(withPeers: PeerReport | undefined): Report {
  return {
    settings: { ...settings, peers: withPeers !== undefined },
    machine,
    measurements: [
      mainMeasurement("core", 12000),
      mainMeasurement("jetstream", 4000),
      mainMeasurement("mesh-tools", 380),
      mainMeasurement("mesh-light", 720),
    ],
    serviceWarnings: [],
    startedAt: new Date("2026-12-02T10:00:00Z"),
    finishedAt: new Date("2026-12-02T10:00:45Z"),
    command: "npm run bench",
    peers: withPeers,
  };
}

describe("the peer section", () => {
  const full = peers({
    portkey: 400,
    handoff: 300,
    traced: 280,
    serial: { direct: 0.5, portkey: 2.5, handoff: 8.5 },
  });

  it("says how to get it in one sentence when the run had no peers", () => {
    const section = renderPeerSection(undefined, settings, 2);
    const [heading, ...rest] = section.split("\n\n");
    expect(heading).toBe("## Side by side with Portkey (BENCH_PEERS=1)");
    expect(rest).toHaveLength(1);
    expect(rest[0]).toContain("`BENCH_PEERS=1 npm run bench`");
    expect(rest[0]?.match(/\. /g) ?? []).toHaveLength(0);
  });

  it("shows every path, the targets with their verdicts, CPU and memory", () => {
    const section = renderPeerSection(full, settings, 2);
    const prose = section.replace(/\s+/g, " ");
    expect(prose).toContain("`@portkey-ai/gateway` 1.15.2");
    expect(prose).toContain("`x-portkey-custom-host: http://127.0.0.1:<port>/v1`");
    expect(section).toContain("### Against the targets");
    for (const key of ["direct", "portkey", "handoff", "handoff-traced"]) {
      expect(section).toMatch(new RegExp(`^\\| ${key} +\\|`, "m"));
    }
    expect(section).toMatch(
      /Handoff `handoff\/light` ÷ Portkey.*\| 0\.75 .*\| ≥ 1\.0 .*\| not met/,
    );
    expect(section).toMatch(/Tracing on ÷ tracing off.*\| 0\.93 .*\| met/);
    expect(section).toMatch(/8\.00 ms vs 2\.00 ms .*\| not met/);
    expect(section).toMatch(/RSS per service.*largest: classifier, 160\.0 MB.*\| met/);
    expect(section).toContain("### Memory after the load run (RSS, MB)");
    expect(prose).toContain("10.0 spans and 2.5 kB per request");
    expect(prose).toContain("added 31 s to this run");
    // Handoff: 10,000 ms of CPU in nats-server and the services over 2000 requests at 300/s.
    expect(prose).toContain("spent 5.00 ms of CPU in nats-server and the services");
    expect(prose).toContain("against Portkey's 2.00 ms in its process (2.5×)");
    expect(prose).toContain("Handoff's processes together kept 1.50 of 2 busy");
    expect(prose).toContain("Portkey's one event loop kept 0.80 of a core busy");
    expect(prose).toContain("served 93 % of the tracing-off rate");
    // Every line of prose fits the README's width; tables may be wider.
    for (const line of section.split("\n")) {
      if (!line.startsWith("|")) expect(line.length).toBeLessThanOrEqual(100);
    }
  });

  it("is in the README, after the results, with the variable documented", () => {
    const without = renderReadme(report(undefined));
    expect(without).toContain("| `BENCH_PEERS` | 0 |");
    expect(without).toContain("This run had no peers");
    expect(without).toContain("### Memory after the load run (RSS, MB)");
    expect(without.replace(/\s+/g, " ")).toContain(
      "under 200 MB after the load run, was **met** (largest: classifier, 150.0 MB)",
    );

    const readme = renderReadme(report(full));
    const at = readme.indexOf("## Side by side with Portkey (BENCH_PEERS=1)");
    expect(at).toBeGreaterThan(readme.indexOf("## What the numbers say"));
    expect(at).toBeLessThan(readme.indexOf("## Other benchmarks"));
    expect(readme).not.toContain("This run had no peers");
  });

  it("warns when other work took CPU during a path's measured run", () => {
    expect(renderPeerSection(full, settings, 2)).not.toContain("Other work shared the machine");
    const disturbed: PeerReport = {
      ...full,
      measurements: full.measurements.map((m) =>
        m.key === "handoff-traced" ? { ...m, otherCores: 0.75 } : { ...m, otherCores: 0.05 },
      ),
    };
    const prose = renderPeerSection(disturbed, settings, 2).replace(/\s+/g, " ");
    expect(prose).toContain(
      '**Other work shared the machine:** 0.75 cores during "handoff-traced" (of 2), so those paths',
    );
    expect(renderPeerSection(disturbed, settings, 2)).toMatch(
      /^\| handoff-traced .*\| +0\.75 \|$/m,
    );
  });

  it("is printed with the tables when the run had peers", () => {
    expect(renderTables(report(undefined))).not.toContain("Portkey");
    const tables = renderTables(report(full));
    expect(tables).toContain("RSS (MB) after the load run; each service under 200 MB: met");
    expect(tables).toContain("Side by side with Portkey 1.15.2");
    expect(tables).toContain("Against the targets");
  });
});

describe("the mesh's shape against its work (the bare relay)", () => {
  const serial = { direct: 0.5, portkey: 2.5, handoff: 8.5 };
  /** Portkey at 400/s, Handoff at 300/s, and the relay at `rate`/s with `unloadedMs` one at a time. */
  const withRelay = (rate: number, unloadedMs: number) =>
    peers({
      portkey: 400,
      handoff: 300,
      traced: 280,
      relay: rate,
      serial: { ...serial, relay: unloadedMs },
    });

  it("is left out of a run that had no bare relay", () => {
    const without = peers({ portkey: 400, handoff: 300, traced: 280, serial });
    expect(shapeTable(without)).toBeUndefined();
    expect(shapeReading(without)).toBeUndefined();
    expect(renderPeerSection(without, settings, 2)).not.toContain("The mesh's shape");
  });

  it("sets Portkey, the relay and Handoff side by side, CPU from each path's own processes", () => {
    const run = withRelay(500, 1.5);
    const table = shapeTable(run) ?? "";
    // Portkey: 4,000 ms over 2,000 requests; the relay: front, nats-server and tier, 3,000 ms
    // (the client's 1,000 ms is nobody's); Handoff: nats-server, gateway and classifier.
    expect(table).toMatch(
      /^\| Portkey \(one process\) +\| +400 \| +1\.00 \| +2\.00 \| +2\.000 \|$/m,
    );
    expect(table).toMatch(/^\| bare relay .*\| +500 \| +1\.25 \| +1\.00 \| +1\.500 \|$/m);
    expect(table).toMatch(
      /^\| Handoff `handoff\/light` .*\| +300 \| +0\.75 \| +8\.00 \| +5\.000 \|$/m,
    );
    const reading = (shapeReading(run) ?? "").replace(/\s+/g, " ");
    expect(reading).toContain("The bare relay served 1.25× Portkey's rate");
    expect(reading).toContain("Handoff's durable path 0.60× the relay's");
    expect(reading).toContain("does not stand in the way of the throughput target");
    expect(reading).toContain("added 1.00 ms over direct against Portkey's 2.00 ms");
    expect(reading).toContain("the shape alone adds less than Portkey does");
    const section = renderPeerSection(run, settings, 2);
    expect(section).toContain("### The mesh's shape against its work");
    expect(section).toMatch(/^\| relay +\|/m);
    expect(section.replace(/\s+/g, " ")).toContain("**bare relay**: the mesh's shape");
    expect(renderTables(report(run))).toContain("The mesh's shape against its work");
    for (const line of section.split("\n")) {
      if (!line.startsWith("|")) expect(line.length).toBeLessThanOrEqual(100);
    }
  });

  it("says when the shape alone falls short of Portkey, in rate and in overhead", () => {
    const run = withRelay(360, 3.5);
    const reading = (shapeReading(run) ?? "").replace(/\s+/g, " ");
    expect(reading).toContain("The bare relay served 0.90× Portkey's rate");
    expect(reading).toContain("no design with a separate gateway and tier on NATS meets");
    expect(reading).toContain("added 3.00 ms over direct against Portkey's 2.00 ms");
    expect(reading).toContain("already adds more than Portkey does");
  });

  it("reads overheads within a fifth of Portkey's as the same, on either side", () => {
    // Portkey adds 2.00 ms (2.5 - 0.5): 1.65 and 2.35 ms are within 0.40 ms of it.
    for (const unloadedMs of [2.15, 2.85]) {
      const reading = (shapeReading(withRelay(500, unloadedMs)) ?? "").replace(/\s+/g, " ");
      expect(reading).toContain("the shape alone adds about what Portkey does (within a fifth)");
      expect(reading).toContain("leaves no room for Handoff's own work on top of it");
    }
    expect(shapeReading(withRelay(500, 2.05))).toContain("adds less than Portkey does");
    expect(shapeReading(withRelay(500, 2.95))).toContain("already adds more than");
  });
});
