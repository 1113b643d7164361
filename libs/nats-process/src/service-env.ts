/**
 * The cap on V8's young generation the mesh's services run with: 8 MB per semi-space.
 *
 * V8 sizes the young generation to the heap limit, and on a machine with a lot of memory it lets
 * it grow to 64 MB per semi-space under load: the classifier's young generation reached 134 MB,
 * most of its 290-330 MB resident set after a load run. At 16 MB the classifier stayed at
 * 192-215 MB after the benchmark's loads; at 8 MB, with {@link SERVICE_OLD_SPACE_MB}, at 159-184 MB
 * (bench/hot-path.md).
 */
export const SERVICE_SEMI_SPACE_MB = 8;

/**
 * The old-generation limit the services run with: 1 GiB, 30 times the 20-33 MB a service holds
 * live (bench/soak.md).
 *
 * Below V8's default limit for the machine (4 GiB on the 24 GiB benchmark machine), V8 lets the
 * old generation grow to at most about 1.4 times what the last full collection kept, instead of 4
 * times: under load it collects the garbage that outlived the young generation (requests in flight,
 * batched spans) sooner, and the resident set stays smaller.
 *
 * The container image sets the young generation's cap alone: in a container Node sizes V8's
 * default from the container's memory limit, so under 4 GiB a fixed 1 GiB would not lower the
 * growing factor, only lift the heap limit above deploy/k8s's 512-768 Mi.
 */
export const SERVICE_OLD_SPACE_MB = 1024;

const SEMI_SPACE_FLAG = /(^|\s)--max-semi-space-size(=|\s|$)/;
const OLD_SPACE_FLAG = /(^|\s)--max-old-space-size(-percentage)?(=|\s|$)/;

const SEMI_SPACE_OPTION = `--max-semi-space-size=${SERVICE_SEMI_SPACE_MB}`;
const OLD_SPACE_OPTION = `--max-old-space-size=${SERVICE_OLD_SPACE_MB}`;

/** The V8 flags {@link serviceEnv} adds to `NODE_OPTIONS` when they name neither size. */
export const SERVICE_NODE_OPTIONS = `${SEMI_SPACE_OPTION} ${OLD_SPACE_OPTION}`;

/**
 * The environment to start a service with: `env`, with `--max-semi-space-size=8` and
 * `--max-old-space-size=1024` added to `NODE_OPTIONS`, each unless they already name it (an
 * operator's own choice wins; `--max-old-space-size-percentage` counts as naming the old one).
 */
export function serviceEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const options = env.NODE_OPTIONS?.trim() ?? "";
  const added = [
    SEMI_SPACE_FLAG.test(options) ? undefined : SEMI_SPACE_OPTION,
    OLD_SPACE_FLAG.test(options) ? undefined : OLD_SPACE_OPTION,
  ].filter((flag) => flag !== undefined);
  if (added.length === 0) return env;
  return { ...env, NODE_OPTIONS: [options, ...added].filter(Boolean).join(" ") };
}
