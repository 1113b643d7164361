export { hasExited, killHard, onProcessExit, waitExit } from "./exit-guard.js";
export { freePort, freePortNotIn, freePorts } from "./free-port.js";
export {
  findNatsServer,
  type NatsHandle,
  type NatsProbe,
  probeNats,
  type SpawnNatsOptions,
  spawnNatsServer,
} from "./nats-server.js";
export {
  SERVICE_NODE_OPTIONS,
  SERVICE_OLD_SPACE_MB,
  SERVICE_SEMI_SPACE_MB,
  serviceEnv,
} from "./service-env.js";
export { type WaitForOptions, waitFor } from "./wait.js";
