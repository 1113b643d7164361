/**
 * The cap on V8's young generation the mesh's services run with: 16 MB per semi-space.
 *
 * V8 sizes the young generation to the heap limit, and on a machine with a lot of memory it lets
 * it grow to 64 MB per semi-space under load: the classifier's young generation reached 134 MB,
 * most of its 290-330 MB resident set after a load run. At 16 MB the classifier stayed at
 * 192-215 MB and every service of the main benchmark under 200 MB, with throughput no lower in
 * the same day's runs (bench/hot-path.md). The Dockerfile sets the same in `NODE_OPTIONS`.
 */
export const SERVICE_SEMI_SPACE_MB = 16;

const SEMI_SPACE_FLAG = /(^|\s)--max-semi-space-size(=|\s|$)/;

/**
 * The environment to start a service with: `env`, with `--max-semi-space-size=16` added to
 * `NODE_OPTIONS` unless they already name a semi-space size (an operator's own choice wins).
 */
export function serviceEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const options = env.NODE_OPTIONS?.trim() ?? "";
  if (SEMI_SPACE_FLAG.test(options)) return env;
  const cap = `--max-semi-space-size=${SERVICE_SEMI_SPACE_MB}`;
  return { ...env, NODE_OPTIONS: options ? `${options} ${cap}` : cap };
}
