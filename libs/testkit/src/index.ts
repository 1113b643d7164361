export {
  findNatsServer,
  freePort,
  freePortNotIn,
  freePorts,
  type NatsHandle,
  type NatsProbe,
  probeNats,
  type SpawnNatsOptions,
  spawnNatsServer,
  type WaitForOptions,
  waitFor,
} from "@handoff/nats-process";
export {
  type TestEnvelopeOptions,
  testEnvelope,
  testStageContext,
  testUsage,
} from "./envelopes.js";
export { type FakeNatsServer, fakeNatsServer } from "./fake-nats.js";
export {
  type ClusterNode,
  type NatsCluster,
  type StartNatsClusterOptions,
  type StreamClusterInfo,
  startNatsCluster,
} from "./nats-cluster.js";
export {
  createTestNkeyUser,
  createTestOperator,
  createTestPki,
  type TestOperator,
  type TestPki,
} from "./nats-security.js";
export { type StartNatsOptions, startNats } from "./nats-server.js";
export {
  type ProcessExit,
  type ServiceProcess,
  type SpawnServiceOptions,
  spawnService,
} from "./processes.js";
export {
  type CollectedPayload,
  type CollectedSpan,
  type CollectedSpanKind,
  checkTrace,
  SpanCollector,
  type TraceCheck,
} from "./span-collector.js";
export {
  type AnthropicUsage,
  anthropicError,
  anthropicMessage,
  anthropicModelReply,
  anthropicStream,
  decideMove,
  type ModelMove,
  type OpenAIUsage,
  openaiCompletion,
  openaiError,
  openaiModelReply,
  openaiStream,
  type RecordedRequest,
  sseEvent,
  type UpstreamReply,
  UpstreamServer,
} from "./upstreams.js";
