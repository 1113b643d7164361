export * from "./chat.js";
export * from "./dead-letter.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./job-record.js";
export * from "./json-schema.js";
export * from "./openai.js";
export * from "./subjects.js";
