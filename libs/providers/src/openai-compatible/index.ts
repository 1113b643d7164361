export {
  OPENAI_BASE_URL,
  OpenAICompatibleModel,
  type OpenAICompatibleOptions,
} from "./adapter.js";
export { type Dialect, dialectOf, toWireRequest, type WireRequestOptions } from "./wire.js";
