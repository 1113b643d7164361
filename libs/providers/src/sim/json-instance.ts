import { createHash } from "node:crypto";

/**
 * A deterministic JSON value valid against a JSON Schema: what the simulated model answers to
 * `response_format: json_schema`, and the arguments it gives a tool it calls. It covers what
 * structured-output schemas use (OpenAI's strict subset, and what zod, Pydantic and the AI SDK
 * generate): objects with their properties, strings (formats, lengths, enums), numbers and
 * integers (bounds, `multipleOf`), booleans, null, arrays (item counts, tuples), `enum`, `const`,
 * `anyOf`/`oneOf`/`allOf`, type lists and local `$ref`s, recursive ones included.
 */

type Schema = Record<string, unknown>;

/** What the answer knows, for values that can say something rather than only fit. */
export interface InstanceHints {
  /** The answer in one line: the value of a string property that asks for one (`answer`, ...). */
  text?: string;
  /** Numbers the answer found (tool results), for the first number property each fits. */
  numbers?: readonly number[];
  /** The question asked, for arguments drawn from it (a city, an expression). */
  question?: string;
  /**
   * Objects get their required properties, and optional ones only when the question fills them
   * (a place, a query): how a model writes a tool call's arguments. Otherwise every property.
   */
  requiredOnly?: boolean;
}

/** Past this depth objects keep their required properties only and arrays their fewest items. */
const MAX_DEPTH = 8;
/** String properties that hold the answer itself. */
const ANSWER_KEYS =
  /^(?:answer|result|response|reply|text|content|output|summary|explanation|reasoning|message|final_answer)$/i;
/** String properties that name a place: filled from "in Paris" in the question. */
const PLACE_KEYS = /^(?:city|location|place|town|where)$/i;
/** String properties that take the question, or the arithmetic in it. */
const QUERY_KEYS = /^(?:query|question|prompt|input|search|q)$/i;

interface Walk {
  root: Schema;
  hints: InstanceHints;
  /** Numbers not yet used by a number property. */
  numbers: number[];
  /** The answer text is given once, to the first property that asks for it. */
  textUsed: boolean;
}

/** A value valid against `schema` (a JSON Schema object; `true` or nothing: an empty object). */
export function jsonInstance(schema: unknown, hints: InstanceHints = {}): unknown {
  const root = isSchema(schema) ? schema : {};
  const walk: Walk = { root, hints, numbers: [...(hints.numbers ?? [])], textUsed: false };
  if (!isSchema(schema)) return {};
  return instance(walk, root, { depth: 0, index: 0 });
}

interface At {
  depth: number;
  /** The property this value is for, if any. */
  key?: string;
  /** The position in an array, so that items differ (`uniqueItems`). */
  index: number;
}

function instance(walk: Walk, schema: Schema, at: At): unknown {
  const resolved = resolve(walk, schema, at.depth);
  if (!resolved) return null;
  schema = resolved;
  if ("const" in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length > 0) {
    return schema.enum[at.index % schema.enum.length];
  }
  for (const keyword of ["anyOf", "oneOf"] as const) {
    const options = schema[keyword];
    if (Array.isArray(options) && options.length > 0) {
      const schemas = options.filter(isSchema);
      // A value of the first option that is not null: the answer says something.
      const pick = schemas.find((option) => !isNullOnly(walk, option, at.depth)) ?? schemas[0];
      const { [keyword]: _options, ...rest } = schema;
      return instance(walk, pick ? merge(rest, pick) : rest, at);
    }
  }
  if (Array.isArray(schema.allOf)) {
    const { allOf, ...rest } = schema;
    const merged = allOf
      .filter(isSchema)
      .map((part) => resolve(walk, part, at.depth) ?? {})
      .reduce<Schema>(merge, rest);
    return instance(walk, merged, at);
  }
  switch (typeOf(schema)) {
    case "object":
      return object(walk, schema, at);
    case "array":
      return array(walk, schema, at);
    case "string":
      return string(walk, schema, at);
    case "integer":
      return number(walk, schema, at, true);
    case "number":
      return number(walk, schema, at, false);
    case "boolean":
      return true;
    default:
      return null;
  }
}

/** A local `$ref` followed (to a depth), the rest of the schema kept beside it. */
function resolve(walk: Walk, schema: Schema, depth: number): Schema | undefined {
  let current = schema;
  for (let hops = 0; typeof current.$ref === "string"; hops++) {
    if (hops > 32 || depth > MAX_DEPTH * 4) return undefined;
    const target = pointer(walk.root, current.$ref as string);
    if (!target) return undefined;
    const { $ref: _ref, ...rest } = current;
    current = merge(target, rest);
  }
  return current;
}

function pointer(root: Schema, ref: string): Schema | undefined {
  if (ref === "#") return root;
  if (!ref.startsWith("#/")) return undefined;
  let node: unknown = root;
  for (const raw of ref.slice(2).split("/")) {
    const token = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || !Object.hasOwn(node, token)) return undefined;
    node = (node as Schema)[token];
  }
  return isSchema(node) ? node : undefined;
}

/** Two schemas as one: `b`'s keywords win, except that properties and required add up. */
function merge(a: Schema, b: Schema): Schema {
  const out: Schema = { ...a, ...b };
  if (isSchema(a.properties) || isSchema(b.properties)) {
    out.properties = { ...(a.properties as Schema), ...(b.properties as Schema) };
  }
  if (Array.isArray(a.required) || Array.isArray(b.required)) {
    out.required = [
      ...new Set([...((a.required as string[]) ?? []), ...((b.required as string[]) ?? [])]),
    ];
  }
  return out;
}

function isNullOnly(walk: Walk, schema: Schema, depth: number): boolean {
  const resolved = resolve(walk, schema, depth);
  return resolved?.type === "null" || (resolved !== undefined && resolved.const === null);
}

/** The type to produce: the schema's (the first of a list that is not null), else inferred. */
function typeOf(schema: Schema): string {
  const type = schema.type;
  if (typeof type === "string") return type;
  if (Array.isArray(type)) {
    return (type.find((t) => t !== "null") as string | undefined) ?? "null";
  }
  if (isSchema(schema.properties) || Array.isArray(schema.required)) return "object";
  if (schema.items !== undefined || Array.isArray(schema.prefixItems)) return "array";
  if (
    typeof schema.minimum === "number" ||
    typeof schema.maximum === "number" ||
    typeof schema.multipleOf === "number"
  ) {
    return "number";
  }
  return "string";
}

function object(walk: Walk, schema: Schema, at: At): Record<string, unknown> {
  const properties = isSchema(schema.properties) ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const deep = at.depth >= MAX_DEPTH;
  const out: Record<string, unknown> = {};
  for (const [key, property] of Object.entries(properties)) {
    // Deep down, only what must be there: a recursive schema ends.
    if (deep && !required.has(key)) continue;
    if (walk.hints.requiredOnly && !required.has(key) && !fromQuestion(walk, key)) continue;
    out[key] = isSchema(property)
      ? instance(walk, property, { depth: at.depth + 1, key, index: 0 })
      : property === false
        ? undefined
        : {};
    if (out[key] === undefined) delete out[key];
  }
  // Required without a schema of their own: anything goes, as the additional properties allow.
  for (const key of required) {
    if (key in out) continue;
    const extra = schema.additionalProperties;
    out[key] = isSchema(extra)
      ? instance(walk, extra, { depth: at.depth + 1, key, index: 0 })
      : `sim ${key}`;
  }
  return out;
}

function array(walk: Walk, schema: Schema, at: At): unknown[] {
  const min = nonNegative(schema.minItems) ?? 0;
  const max = nonNegative(schema.maxItems);
  const prefix = Array.isArray(schema.prefixItems) ? schema.prefixItems.filter(isSchema) : [];
  const want = at.depth >= MAX_DEPTH ? min : Math.max(min, prefix.length, 1);
  const count = max === undefined ? want : Math.min(want, max);
  const items = isSchema(schema.items) ? schema.items : {};
  const out: unknown[] = [];
  for (let index = 0; index < count; index++) {
    const item = prefix[index] ?? items;
    // `items: false` after a tuple: no more items.
    if (index >= prefix.length && schema.items === false) break;
    out.push(instance(walk, item, { depth: at.depth + 1, ...keyOf(at), index }));
  }
  return out;
}

function keyOf(at: At): { key?: string } {
  return at.key === undefined ? {} : { key: at.key };
}

const FORMATS: Record<string, string> = {
  "date-time": "2025-01-01T12:00:00Z",
  date: "2025-01-01",
  time: "12:00:00Z",
  duration: "PT1H",
  email: "sim@example.com",
  "idn-email": "sim@example.com",
  hostname: "example.com",
  "idn-hostname": "example.com",
  ipv4: "192.0.2.1",
  ipv6: "2001:db8::1",
  uri: "https://example.com/sim",
  "uri-reference": "https://example.com/sim",
  iri: "https://example.com/sim",
  url: "https://example.com/sim",
  "json-pointer": "/sim",
  regex: "^sim$",
};

function string(walk: Walk, schema: Schema, at: At): string {
  const format = typeof schema.format === "string" ? schema.format : undefined;
  let value: string;
  if (format === "uuid") value = uuid(`${at.key ?? ""}:${at.index}`);
  else if (format !== undefined && FORMATS[format] !== undefined) value = FORMATS[format];
  else value = prose(walk, at);
  if (format === undefined && at.index > 0) value = `${value} ${at.index + 1}`;
  value = fitLength(value, schema);
  const pattern = typeof schema.pattern === "string" ? regex(schema.pattern) : undefined;
  if (pattern && !pattern.test(value)) {
    const fits = ["sim", "a", "A", "0", "1", "x1", "sim-1", "abc123", value.toLowerCase()]
      .map((candidate) => fitLength(candidate, schema))
      .find((candidate) => pattern.test(candidate));
    if (fits !== undefined) value = fits;
  }
  return value;
}

/** Whether the question has a value for a property of this name: a place, or a query. */
function fromQuestion(walk: Walk, key: string): boolean {
  const question = walk.hints.question ?? "";
  if (PLACE_KEYS.test(key)) return placeIn(question) !== undefined;
  return QUERY_KEYS.test(key) && question.trim() !== "";
}

/** "Paris" of "weather in Paris?": capitalized words after in, for, at or of. */
function placeIn(question: string): string | undefined {
  return /\b(?:in|for|at|of)\s+([A-Z][\p{L}'-]*(?:\s+[A-Z][\p{L}'-]*)*)/u.exec(question)?.[1];
}

/** The words a string property gets: the answer, a place, the question, or its own name. */
function prose(walk: Walk, at: At): string {
  const { hints } = walk;
  const key = at.key ?? "";
  if (hints.text !== undefined && !walk.textUsed && (ANSWER_KEYS.test(key) || key === "")) {
    walk.textUsed = true;
    return hints.text;
  }
  const question = hints.question ?? "";
  if (PLACE_KEYS.test(key)) {
    const place = placeIn(question);
    if (place) return place;
  }
  if (QUERY_KEYS.test(key) && question.trim() !== "") return question.trim();
  return key === "" ? "sim" : `sim ${key.replace(/[_-]+/g, " ")}`;
}

function fitLength(value: string, schema: Schema): string {
  const min = nonNegative(schema.minLength) ?? 0;
  const max = nonNegative(schema.maxLength);
  const chars = [...value];
  while (chars.length < min) chars.push(...[..."sim "].slice(0, min - chars.length));
  return max !== undefined && chars.length > max ? chars.slice(0, max).join("") : chars.join("");
}

function regex(pattern: string): RegExp | undefined {
  try {
    return new RegExp(pattern, "u");
  } catch {
    return undefined;
  }
}

function number(walk: Walk, schema: Schema, at: At, integer: boolean): number {
  const step = integer ? 1 : 0.5;
  let lo = typeof schema.minimum === "number" ? schema.minimum : Number.NEGATIVE_INFINITY;
  let hi = typeof schema.maximum === "number" ? schema.maximum : Number.POSITIVE_INFINITY;
  if (typeof schema.exclusiveMinimum === "number")
    lo = Math.max(lo, schema.exclusiveMinimum + step);
  if (typeof schema.exclusiveMaximum === "number")
    hi = Math.min(hi, schema.exclusiveMaximum - step);
  if (integer) {
    lo = Math.ceil(lo);
    hi = Math.floor(hi);
  }
  const multiple =
    typeof schema.multipleOf === "number" && schema.multipleOf > 0 ? schema.multipleOf : undefined;
  const fits = (n: number) =>
    Number.isFinite(n) &&
    n >= lo &&
    n <= hi &&
    (!integer || Number.isInteger(n)) &&
    (multiple === undefined || Number.isInteger(round(n / multiple)));
  // A number the answer found (a tool's result), used once, when it fits.
  const found = walk.numbers.findIndex(fits);
  if (found !== -1) return walk.numbers.splice(found, 1)[0] as number;
  let value = (integer ? 1 : 1.5) + at.index;
  if (value < lo) value = lo;
  if (value > hi) value = hi;
  if (!Number.isFinite(value)) value = 0;
  if (multiple !== undefined) {
    let m = Math.ceil(round(value / multiple)) * multiple;
    if (m > hi) m = Math.floor(round(hi / multiple)) * multiple;
    value = round(m);
  }
  return integer ? Math.round(value) : value;
}

/** Float dust off: `0.1 * 3` is 0.3. */
function round(n: number): number {
  return Math.round(n * 1e9) / 1e9;
}

function nonNegative(value: unknown): number | undefined {
  return typeof value === "number" && value >= 0 ? Math.floor(value) : undefined;
}

/** A version-4-shaped UUID derived from `seed`: the same seed, the same id. */
function uuid(seed: string): string {
  const hex = createHash("sha256").update(seed).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function isSchema(value: unknown): value is Schema {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
