import { describe, expect, it } from "vitest";
import { type SseEvent, SseLimitError, SseParser } from "./sse.js";

/** Feeds the pieces in order and collects every event, including those `end` dispatches. */
function parse(pieces: readonly string[]): SseEvent[] {
  const parser = new SseParser();
  const events = pieces.flatMap((piece) => parser.push(piece));
  return [...events, ...parser.end()];
}

// Two chunks as OpenAI streams them, then the end marker.
const STREAM =
  'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n' +
  'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n' +
  "data: [DONE]\n\n";
const EVENTS: SseEvent[] = [
  { data: '{"choices":[{"index":0,"delta":{"content":"Hel"}}]}' },
  { data: '{"choices":[{"index":0,"delta":{"content":"lo"}}]}' },
  { data: "[DONE]" },
];

describe("SseParser", () => {
  it("parses data events separated by blank lines", () => {
    expect(parse([STREAM])).toEqual(EVENTS);
  });

  it("gives the same events wherever the text is split", () => {
    for (let at = 0; at <= STREAM.length; at++) {
      expect(parse([STREAM.slice(0, at), STREAM.slice(at)]), `split at ${at}`).toEqual(EVENTS);
    }
    expect(parse([...STREAM])).toEqual(EVENTS); // one character at a time
  });

  it("returns events as soon as their blank line arrives, not before", () => {
    const parser = new SseParser();
    expect(parser.push('data: {"a":1}\n')).toEqual([]);
    expect(parser.push("\n")).toEqual([{ data: '{"a":1}' }]);
    expect(parser.push("data: [DO")).toEqual([]);
    expect(parser.push("NE]\n\n")).toEqual([{ data: "[DONE]" }]);
  });

  it("accepts CRLF and lone CR line ends, even with CRLF split between pieces", () => {
    const crlf = STREAM.replace(/\n/g, "\r\n");
    expect(parse([crlf])).toEqual(EVENTS);
    for (let at = 0; at <= crlf.length; at++) {
      expect(parse([crlf.slice(0, at), crlf.slice(at)]), `split at ${at}`).toEqual(EVENTS);
    }
    expect(parse([STREAM.replace(/\n/g, "\r")])).toEqual(EVENTS);
    // A CR at the end of one piece and an LF starting the next are one line end, not two: the
    // multi-line event below must not be split by a phantom blank line.
    expect(parse(["data: a\r", "\ndata: b\r\n\r\n"])).toEqual([{ data: "a\nb" }]);
  });

  it("ignores comment lines such as keep-alives", () => {
    expect(parse([": keep-alive\n\n", ": OPENROUTER PROCESSING\n", STREAM])).toEqual(EVENTS);
    expect(parse(["data: x\n: comment inside an event\ndata: y\n\n"])).toEqual([{ data: "x\ny" }]);
  });

  it("joins multiple data lines with newlines", () => {
    expect(parse(['data: {"a":\ndata: 1}\n\n'])).toEqual([{ data: '{"a":\n1}' }]);
    expect(parse(["data: one\ndata:\ndata: three\n\n"])).toEqual([{ data: "one\n\nthree" }]);
  });

  it("removes exactly one space after the colon", () => {
    expect(parse(["data:tight\n\n", "data:  two spaces\n\n"])).toEqual([
      { data: "tight" },
      { data: " two spaces" },
    ]);
  });

  it("reads event and id fields and drops events that carry no data", () => {
    expect(
      parse([
        "event: ping\n\n", // no data: not dispatched
        "id: 7\nevent: error\ndata: {}\n\n",
        "retry: 1000\nunknown: x\ndata: after\n\n",
      ]),
    ).toEqual([{ event: "error", id: "7", data: "{}" }, { data: "after" }]);
  });

  it("treats a line without a colon as a field with an empty value", () => {
    expect(parse(["data\n\n"])).toEqual([{ data: "" }]);
  });

  it("strips a byte-order mark at the start of the stream only", () => {
    expect(parse(["\uFEFFdata: a\n\n"])).toEqual([{ data: "a" }]);
    // Later, a BOM is part of the field name, which then is not `data`.
    expect(parse(["data: a\n\n", "\uFEFFdata: b\n\n"])).toEqual([{ data: "a" }]);
  });

  it("at the end dispatches complete lines that lack a blank line and drops a partial line", () => {
    expect(parse(["data: [DONE]\n"])).toEqual([{ data: "[DONE]" }]);
    expect(parse(['data: {"choices":[{"delta":{"content":"Hel'])).toEqual([]);
    expect(parse(['data: {"a":1}\n\ndata: {"b":'])).toEqual([{ data: '{"a":1}' }]);
  });

  it("refuses a line or event longer than its limit", () => {
    const parser = new SseParser({ maxEventChars: 16 });
    expect(() => parser.push("data: 0123456789abcdefg")).toThrow(SseLimitError);
    const lines = new SseParser({ maxEventChars: 16 });
    expect(() => lines.push("data: 0123456789\ndata: 0123456789\n")).toThrow(SseLimitError);
  });
});
