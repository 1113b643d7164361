export { type HttpClientOptions, httpClient } from "./http.js";
export { type NatsClientOptions, natsClient } from "./nats.js";
export {
  type HandoffClient,
  HandoffClientError,
  type JobOutcome,
  type JobRequest,
  outcomeOf,
  type SubmitOptions,
  type SubmittedJob,
  type WaitOptions,
} from "./types.js";
