import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { jsonInstance } from "./json-instance.js";

// Formats are not ajv's core: the zod case below checks them, as a client's parse would.
const ajv = new Ajv2020({ strict: false, validateFormats: false });

/** Asserts `value` is valid against `schema`, with ajv's errors as the message. */
function expectValid(schema: Record<string, unknown>, value: unknown): void {
  const validate = ajv.compile(schema);
  const ok = validate(value);
  expect(ok, `${JSON.stringify(value)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
}

describe("jsonInstance", () => {
  it("fills an object's properties with strings, numbers, integers, booleans, arrays, enums and nested objects", () => {
    const schema = {
      type: "object",
      properties: {
        name: { type: "string" },
        score: { type: "number" },
        count: { type: "integer" },
        ok: { type: "boolean" },
        tags: { type: "array", items: { type: "string" } },
        mood: { enum: ["happy", "sad"] },
        kind: { type: "string", enum: ["a", "b"] },
        address: {
          type: "object",
          properties: { street: { type: "string" }, zip: { type: "integer" } },
          required: ["street", "zip"],
          additionalProperties: false,
        },
        nothing: { type: "null" },
      },
      required: ["name", "score", "count", "ok", "tags", "mood", "kind", "address", "nothing"],
      additionalProperties: false,
    };
    const value = jsonInstance(schema);
    expectValid(schema, value);
    expect(value).toEqual({
      name: "sim name",
      score: 1.5,
      count: 1,
      ok: true,
      tags: ["sim tags"],
      mood: "happy",
      kind: "a",
      address: { street: "sim street", zip: 1 },
      nothing: null,
    });
  });

  it("is deterministic", () => {
    const schema = { type: "object", properties: { id: { type: "string", format: "uuid" } } };
    expect(jsonInstance(schema)).toEqual(jsonInstance(schema));
    expectValid(schema, jsonInstance(schema));
  });

  it("keeps to bounds, lengths, item counts, formats and patterns", () => {
    const schema = {
      type: "object",
      properties: {
        small: { type: "integer", minimum: 5, maximum: 7 },
        above: { type: "number", exclusiveMinimum: 10 },
        below: { type: "integer", exclusiveMaximum: 0 },
        step: { type: "number", minimum: 0.25, multipleOf: 0.25 },
        short: { type: "string", maxLength: 2 },
        long: { type: "string", minLength: 40 },
        code: { type: "string", pattern: "^[0-9]+$" },
        when: { type: "string", format: "date-time" },
        day: { type: "string", format: "date" },
        mail: { type: "string", format: "email" },
        site: { type: "string", format: "uri" },
        pair: { type: "array", items: { type: "integer" }, minItems: 2, uniqueItems: true },
        none: { type: "array", items: { type: "string" }, maxItems: 0 },
        tuple: { type: "array", prefixItems: [{ type: "string" }, { type: "boolean" }] },
      },
    };
    const value = jsonInstance(schema) as Record<string, unknown>;
    expectValid(schema, value);
    expect(value).toMatchObject({ small: 5, above: 10.5, below: -1, step: 1.5, short: "si" });
    expect(value.pair).toEqual([1, 2]);
    expect(value.none).toEqual([]);
    expect(z.iso.datetime().parse(value.when)).toBeDefined();
    expect(z.iso.date().parse(value.day)).toBeDefined();
    expect(z.email().parse(value.mail)).toBeDefined();
    expect(z.url().parse(value.site)).toBeDefined();
  });

  it("takes the first non-null option of anyOf and oneOf, merges allOf, and reads type lists", () => {
    const schema = {
      type: "object",
      properties: {
        maybe: { anyOf: [{ type: "null" }, { type: "string" }] },
        either: { oneOf: [{ type: "integer", minimum: 3 }, { type: "string" }] },
        both: {
          allOf: [
            { type: "object", properties: { a: { type: "string" } }, required: ["a"] },
            { properties: { b: { type: "integer" } }, required: ["b"] },
          ],
        },
        nullable: { type: ["null", "boolean"] },
        fixed: { const: "exactly" },
      },
      required: ["maybe", "either", "both", "nullable", "fixed"],
    };
    const value = jsonInstance(schema);
    expectValid(schema, value);
    expect(value).toMatchObject({
      maybe: "sim maybe",
      either: 3,
      both: { a: "sim a", b: 1 },
      nullable: true,
      fixed: "exactly",
    });
  });

  it("follows $refs to $defs and definitions, and ends a recursive schema", () => {
    const schema = {
      $ref: "#/$defs/node",
      $defs: {
        node: {
          type: "object",
          properties: {
            label: { type: "string" },
            children: { type: "array", items: { $ref: "#/$defs/node" } },
            parent: { $ref: "#/definitions/link" },
          },
          required: ["label", "children"],
        },
      },
      definitions: { link: { type: ["string", "null"] } },
    };
    const value = jsonInstance(schema);
    expectValid(schema, value);
    expect(JSON.stringify(value).length).toBeLessThan(10_000);
  });

  it("is valid against the JSON Schemas zod writes, as clients send them", () => {
    const Recipe = z.object({
      title: z.string(),
      servings: z.number().int().positive(),
      rating: z.number().min(0).max(5),
      vegetarian: z.boolean(),
      ingredients: z.array(z.object({ name: z.string(), grams: z.number().nonnegative() })).min(1),
      course: z.enum(["starter", "main", "dessert"]),
      note: z.string().nullable(),
      author: z.email(),
      id: z.uuid(),
      created: z.iso.datetime(),
    });
    const schema = z.toJSONSchema(Recipe) as Record<string, unknown>;
    const value = jsonInstance(schema);
    expectValid(schema, value);
    expect(Recipe.parse(value)).toMatchObject({ servings: 1, course: "starter" });
  });

  it("says what the answer knows: its text, numbers it found, and a place or query from the question", () => {
    const schema = {
      type: "object",
      properties: {
        answer: { type: "string" },
        value: { type: "integer" },
        city: { type: "string" },
        query: { type: "string" },
      },
      required: ["answer", "value", "city", "query"],
    };
    const value = jsonInstance(schema, {
      text: "17 * 23 = 391.",
      numbers: [391],
      question: "Weather in Paris?",
    });
    expectValid(schema, value);
    expect(value).toEqual({
      answer: "17 * 23 = 391.",
      value: 391,
      city: "Paris",
      query: "Weather in Paris?",
    });
    // A number that does not fit is not used.
    expect(jsonInstance({ type: "integer", maximum: 10 }, { numbers: [391] })).toBe(1);
  });

  it("answers an empty object for no schema or `true`", () => {
    expect(jsonInstance(undefined)).toEqual({});
    expect(jsonInstance(true)).toEqual({});
  });
});
