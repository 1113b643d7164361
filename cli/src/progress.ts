/**
 * Progress for long CLI work (train, score, eval), on stderr so stdout stays data. On a terminal it
 * redraws one bar in place; elsewhere (CI logs, pipes) it prints a line per tenth, and never more.
 */
export interface Progress {
  update(done: number, total: number, label?: string): void;
  done(message?: string): void;
}

/** Where a command writes: data to `out`, notes to `err`, progress of long work to `progress`. */
export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
  /** stderr when not given. */
  progress?: ProgressStream;
}

/** Where progress goes: a terminal redraws in place; anything else gets whole lines. */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export function progressBar(
  title: string,
  stream: ProgressStream = process.stderr,
  now: () => number = Date.now,
): Progress {
  const started = now();
  const tty = stream.isTTY === true;
  let lastTenth = -1;
  let finished = false;
  const seconds = () => ((now() - started) / 1000).toFixed(1);
  return {
    update(done, total, label) {
      if (finished || total <= 0) return;
      const share = Math.min(1, Math.max(0, done / total));
      const suffix = label ? ` ${label}` : "";
      if (tty) {
        const width = 28;
        const full = Math.round(share * width);
        stream.write(
          `\r${title} [${"#".repeat(full)}${"-".repeat(width - full)}] ${String(Math.round(share * 100)).padStart(3)}% ${seconds()}s${suffix}\x1b[K`,
        );
        return;
      }
      const tenth = Math.floor(share * 10);
      if (tenth > lastTenth) {
        lastTenth = tenth;
        stream.write(`${title}: ${tenth * 10}% (${seconds()}s)${suffix}\n`);
      }
    },
    done(message) {
      if (finished) return;
      finished = true;
      if (tty) stream.write("\r\x1b[K");
      stream.write(`${title}: done in ${seconds()}s${message ? `: ${message}` : ""}\n`);
    },
  };
}
