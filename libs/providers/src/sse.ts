/**
 * An incremental parser for server-sent events (the `text/event-stream` format of the WHATWG HTML
 * standard), as OpenAI-compatible servers stream chat completions: `data: {...}` events separated
 * by blank lines, `: comment` keep-alives, `\n`, `\r\n` or `\r` line ends. It is pure: text goes in
 * (already decoded, split anywhere), events come out.
 */

/** One dispatched event. */
export interface SseEvent {
  /** The `event:` field; absent for the default `message` type, which is all OpenAI sends. */
  event?: string;
  /** The event's `data:` lines, joined by `\n`. */
  data: string;
  /** The `id:` field, when the event carried one. */
  id?: string;
}

/** Thrown when a line or an event grows past the parser's limit. */
export class SseLimitError extends Error {
  override readonly name = "SseLimitError";
}

/** Limits of one parser. */
export interface SseParserOptions {
  /**
   * Largest pending line or event, in characters. A server that never sends a line end would
   * otherwise grow the buffer until the process runs out of memory.
   */
  maxEventChars?: number;
}

const LINE_END = /\r\n|\r|\n/g;

/**
 * Feed decoded text with `push` as it arrives and call `end` when the stream closes; each returns
 * the events completed by that text, in order.
 */
export class SseParser {
  readonly #maxChars: number;
  /** The start of a line whose end has not arrived yet. */
  #partial = "";
  /** The previous text ended with `\r`: a `\n` at the start of the next one ends the same line. */
  #afterCr = false;
  #started = false;
  #data: string[] = [];
  #dataChars = 0;
  #event: string | undefined;
  #id: string | undefined;

  constructor(options: SseParserOptions = {}) {
    this.#maxChars = options.maxEventChars ?? 8 * 1024 * 1024;
  }

  /** Parses the next piece of the stream. */
  push(text: string): SseEvent[] {
    if (text.length === 0) return [];
    let input = text;
    if (!this.#started) {
      this.#started = true;
      // The standard allows one byte-order mark at the start of the stream.
      if (input.charCodeAt(0) === 0xfeff) input = input.slice(1);
    }
    if (this.#afterCr) {
      this.#afterCr = false;
      if (input.startsWith("\n")) input = input.slice(1);
    }

    const events: SseEvent[] = [];
    let start = 0;
    LINE_END.lastIndex = 0;
    for (let match = LINE_END.exec(input); match; match = LINE_END.exec(input)) {
      const line = this.#partial + input.slice(start, match.index);
      this.#partial = "";
      start = match.index + match[0].length;
      // A `\r` that ends this piece may be the first half of a `\r\n` split across pieces.
      if (match[0] === "\r" && start === input.length) this.#afterCr = true;
      this.#line(line, events);
    }
    this.#partial += input.slice(start);
    if (this.#partial.length > this.#maxChars) {
      throw new SseLimitError(`an event-stream line is longer than ${this.#maxChars} characters`);
    }
    return events;
  }

  /**
   * The stream closed. An event whose lines all arrived but whose closing blank line did not is
   * still dispatched (some servers end on `data: [DONE]\n`); an unterminated last line is dropped,
   * because nothing says it is complete, as the standard prescribes.
   */
  end(): SseEvent[] {
    this.#partial = "";
    this.#afterCr = false;
    const events: SseEvent[] = [];
    this.#dispatch(events);
    return events;
  }

  #line(line: string, events: SseEvent[]): void {
    if (line === "") {
      this.#dispatch(events);
      return;
    }
    if (line.startsWith(":")) return; // a comment, typically a keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);

    switch (field) {
      case "data":
        this.#data.push(value);
        this.#dataChars += value.length + 1;
        if (this.#dataChars > this.#maxChars) {
          throw new SseLimitError(`an event is longer than ${this.#maxChars} characters`);
        }
        break;
      case "event":
        this.#event = value;
        break;
      case "id":
        // The standard ignores ids containing NUL.
        if (!value.includes("\0")) this.#id = value;
        break;
      default:
        // `retry` and unknown fields mean nothing to a one-shot HTTP response.
        break;
    }
  }

  #dispatch(events: SseEvent[]): void {
    // An event without data lines is not dispatched (the standard), e.g. a lone `event:` line.
    if (this.#data.length > 0) {
      events.push({
        data: this.#data.join("\n"),
        ...(this.#event === undefined || this.#event === "" ? {} : { event: this.#event }),
        ...(this.#id === undefined ? {} : { id: this.#id }),
      });
    }
    this.#data = [];
    this.#dataChars = 0;
    this.#event = undefined;
    this.#id = undefined;
  }
}

/**
 * Decodes a byte stream (a fetch `Response.body`) into events as they complete. A streaming
 * `TextDecoder` keeps multi-byte UTF-8 characters that are split across chunks intact.
 */
export async function* readSse(
  body: AsyncIterable<Uint8Array>,
  options: SseParserOptions = {},
): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  const parser = new SseParser(options);
  for await (const chunk of body) yield* parser.push(decoder.decode(chunk, { stream: true }));
  yield* parser.push(decoder.decode());
  yield* parser.end();
}
