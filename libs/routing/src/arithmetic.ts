import { evaluate } from "@handoff/tools/calculator";

/**
 * Arithmetic claims in a model's answer, re-checked with the mesh's own calculator. Two forms are
 * read: GSM8K-style annotations `<<48/2=24>>`, and written chains such as `15 x 8 = 120`,
 * `$40 + $24 = $64` or `30 * (1 - 40/100) = 30 * 0.6 = 18`, checked link by link. A chain with
 * words between its numbers (`2 x 1 hour = 120`) is not a calculation and is left alone. A link is
 * wrong when the calculator disagrees beyond the precision the answer wrote it in (8.57 for 60/7
 * is right; 8 is not).
 */

export interface ArithmeticClaim {
  /** The link as written: `left = right`. */
  text: string;
  left: number;
  right: number;
  ok: boolean;
}

const NUMBER = String.raw`\$?\d+(?:,\d{3})*(?:\.\d+)?%?`;
// An `x` is multiplication only between spaces ("8 x 5"), never inside a word.
const OPERATOR = String.raw`(?:\\?\*|[-+/×÷−]|(?<=\s)[xX](?=\s))`;
// Whitespace after a number belongs to the next token, so a longer chain is never cut short.
// Each run of spaces has one place it can go: an operand takes spaces only after its own "(",
// else the spaces before an operand could be read two ways and a chain of n operators without
// an "=" would backtrack through 2^n readings (seconds at 20, never ending at 40).
const OPERAND = String.raw`(?:\(\s*)*${NUMBER}(?:\s*\))*`;
const EXPRESSION = String.raw`${OPERAND}(?:\s*${OPERATOR}\s*${OPERAND})*`;
const CHAIN = new RegExp(String.raw`${EXPRESSION}(?:\s*=\s*${EXPRESSION})+`, "g");
const ANNOTATION = /<<([^<>]+)>>/g;
const HAS_OPERATOR = new RegExp(String.raw`\d\s*(?:\)\s*)*${OPERATOR}`);

/** Turns written arithmetic into the calculator's syntax. */
export function normalizeExpression(text: string): string {
  return text
    .replace(/\\\*/g, "*")
    .replace(/(\d|\))\s*[xX×]\s*(?=[\d($])/g, "$1*")
    .replace(/÷/g, "/")
    .replace(/−/g, "-")
    .replace(/\$/g, "")
    .replace(/(\d),(?=\d{3}\b)/g, "$1")
    .replace(/(\d+(?:\.\d+)?)%/g, "($1/100)");
}

/** A number as written in prose (`$1,234.50`, `12%`), or undefined. */
export function parseNumber(text: string): number | undefined {
  const cleaned = text.trim().replace(/^\$/, "").replace(/,/g, "").replace(/\.$/, "");
  const percent = cleaned.endsWith("%");
  const value = Number(percent ? cleaned.slice(0, -1) : cleaned);
  if (cleaned === "" || !Number.isFinite(value)) return undefined;
  return percent ? value / 100 : value;
}

/**
 * The values a written expression may mean: as the calculator reads it, and with bare fractions
 * bound first (`12.8 / 2/5` is written for 12.8 ÷ ⅖ as often as for 12.8 ÷ 2 ÷ 5).
 */
function readings(expression: string): number[] {
  const out: number[] = [];
  const plain = normalizeExpression(expression);
  for (const candidate of [plain, plain.replace(/(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)/g, "($1/$2)")]) {
    try {
      const value = evaluate(candidate);
      if (!out.includes(value)) out.push(value);
    } catch {
      // Not arithmetic after all (unbalanced parentheses, a stray operator): no reading.
    }
  }
  return out;
}

/** Whether a value agrees with a number as written, to the precision it was written in. */
export function agrees(value: number, written: string): boolean {
  const claimed = parseNumber(written);
  if (claimed === undefined) return false;
  const tolerance = 1e-9 * Math.max(1, Math.abs(value));
  if (Math.abs(value - claimed) <= tolerance) return true;
  const places = /\.(\d+)/.exec(written.replace(/%\s*$/, ""))?.[1]?.length ?? 0;
  const step = 10 ** -places / (written.trim().endsWith("%") ? 100 : 1);
  return Math.abs(value - claimed) <= step / 2 + tolerance;
}

/** Two sides agree when some reading of each is within rounding (half a percent) of the other. */
function sidesAgree(left: number[], right: number[], rightText: string): boolean {
  const single = !HAS_OPERATOR.test(rightText);
  return left.some((l) =>
    right.some((r) =>
      single
        ? agrees(l, rightText.trim())
        : Math.abs(l - r) <= Math.max(1e-9, 0.005 * Math.max(Math.abs(l), Math.abs(r))),
    ),
  );
}

function checkChain(text: string, into: ArithmeticClaim[], seen: Set<string>): void {
  const sides = text.split("=");
  for (let k = 1; k < sides.length; k++) {
    const left = sides[k - 1] as string;
    const right = sides[k] as string;
    if (!HAS_OPERATOR.test(left) && !HAS_OPERATOR.test(right)) continue;
    const l = readings(left);
    const r = readings(right);
    if (l.length === 0 || r.length === 0) continue;
    const key = `${normalizeExpression(left).replace(/\s+/g, "")}=${normalizeExpression(right).replace(/\s+/g, "")}`;
    if (seen.has(key)) continue;
    seen.add(key);
    into.push({
      text: `${left.trim()} = ${right.trim()}`,
      left: l[0] as number,
      right: r[0] as number,
      ok: sidesAgree(l, r, right),
    });
  }
}

/** Every checkable calculation in an answer, in order, each once. */
export function arithmeticClaims(answer: string): ArithmeticClaim[] {
  const claims: ArithmeticClaim[] = [];
  const seen = new Set<string>();
  for (const match of answer.matchAll(ANNOTATION)) checkChain(match[1] ?? "", claims, seen);
  // The annotation's result is written again right after it (`= <<6*4=24>>24`): dropping the
  // annotation leaves the prose claim, which `seen` keeps from counting twice.
  const prose = answer.replace(ANNOTATION, "");
  for (const match of prose.matchAll(CHAIN)) checkChain(match[0], claims, seen);
  return claims;
}
