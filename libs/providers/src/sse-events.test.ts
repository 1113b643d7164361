import { describe, expect, it } from "vitest";
import { readSse, type SseEvent, SseParser } from "./sse.js";

const STREAM =
  'event: message_start\r\ndata: {"type":"message_start"}\r\n\r\n' +
  ": a comment line\n" +
  "event: content_block_delta\ndata: first line\ndata:second line\n\n" +
  "data: no event name\r\r" +
  "event: ping\n\n" + // an event without data is not dispatched
  'event: message_stop\ndata: {"type":"message_stop"}\n\n';

const EXPECTED: SseEvent[] = [
  { event: "message_start", data: '{"type":"message_start"}' },
  { event: "content_block_delta", data: "first line\nsecond line" },
  { data: "no event name" },
  { event: "message_stop", data: '{"type":"message_stop"}' },
];

describe("SseParser with named events", () => {
  it("decodes LF, CRLF and CR line endings, comments and multi-line data", () => {
    const sse = new SseParser();
    expect([...sse.push(STREAM), ...sse.end()]).toEqual(EXPECTED);
  });

  it("gives the same events wherever the input is split, including inside a CRLF", () => {
    for (let cut = 0; cut <= STREAM.length; cut++) {
      const sse = new SseParser();
      const events = [
        ...sse.push(STREAM.slice(0, cut)),
        ...sse.push(STREAM.slice(cut)),
        ...sse.end(),
      ];
      expect(events, `split at ${cut}`).toEqual(EXPECTED);
    }
  });

  it("gives the same events when fed one character at a time", () => {
    const sse = new SseParser();
    const events = [...STREAM].flatMap((c) => sse.push(c));
    expect([...events, ...sse.end()]).toEqual(EXPECTED);
  });

  it("drops an event the stream ended before its blank line", () => {
    const sse = new SseParser();
    const events = sse.push('event: a\ndata: 1\n\nevent: b\ndata: {"cut');
    expect([...events, ...sse.end()]).toEqual([{ event: "a", data: "1" }]);
  });
});

describe("readSse", () => {
  it("keeps multi-byte characters split across chunks intact", async () => {
    const bytes = new TextEncoder().encode("data: héllo wörld ✓\n\n");
    async function* chunks() {
      for (const byte of bytes) yield Uint8Array.of(byte);
    }
    const events: SseEvent[] = [];
    for await (const event of readSse(chunks())) events.push(event);
    expect(events).toEqual([{ data: "héllo wörld ✓" }]);
  });
});
