import { Headers } from "@handoff/contracts";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { describe, expect, it } from "vitest";
import { loadMeshSigner, MeshSigner } from "./signing.js";

const keyA = Buffer.from("a".repeat(48));
const keyB = Buffer.from("b".repeat(48));

function signed(signer: MeshSigner, subject: string, payload: string) {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(signer.sign(subject, payload))) h.set(k, v);
  return h;
}

describe("MeshSigner", () => {
  it("accepts what it signed, over the same subject and payload only", () => {
    const signer = new MeshSigner(keyA);
    const h = signed(signer, "handoff.v1.results.job1", '{"x":1}');
    expect(signer.verify("handoff.v1.results.job1", '{"x":1}', h)).toBe("authentic");
    expect(signer.verify("handoff.v1.results.job1", '{"x":2}', h)).toBe("forged");
    // Replayed on another job's subject.
    expect(signer.verify("handoff.v1.results.job2", '{"x":1}', h)).toBe("forged");
    expect(signer.verify("handoff.v1.results.job1", '{"x":1}', undefined)).toBe("unsigned");
  });

  it("refuses a signature made with another key, and malformed headers", () => {
    const mine = new MeshSigner(keyA);
    const theirs = new MeshSigner(keyB);
    expect(mine.verify("s", "p", signed(theirs, "s", "p"))).toBe("forged");
    for (const value of ["v1", "v2 abc def", "v1 nokey AAAA", "garbage"]) {
      const h = natsHeaders();
      h.set(Headers.signature, value);
      expect(mine.verify("s", "p", h)).toBe("forged");
    }
    // A signature with the right key id but a mangled MAC.
    const good = signed(mine, "s", "p").get(Headers.signature);
    const h = natsHeaders();
    h.set(Headers.signature, `${good.slice(0, -4)}AAAA`);
    expect(mine.verify("s", "p", h)).toBe("forged");
  });

  it("rotates without downtime: during a rotation both keys verify, one signs", () => {
    // Step 1: everyone accepts the new key while still signing with the old one.
    const step1 = new MeshSigner(keyA, [keyB]);
    // Step 2: services switch to signing with the new key, still accepting the old one.
    const step2 = new MeshSigner(keyB, [keyA]);
    // Services at step 1 and step 2 run side by side during the roll-out.
    expect(step1.verify("s", "p", signed(step2, "s", "p"))).toBe("authentic");
    expect(step2.verify("s", "p", signed(step1, "s", "p"))).toBe("authentic");
    // Step 3: the old key is gone; what it signs is refused.
    const step3 = new MeshSigner(keyB);
    expect(step3.verify("s", "p", signed(step1, "s", "p"))).toBe("forged");
    expect(step3.verify("s", "p", signed(step2, "s", "p"))).toBe("authentic");
  });

  it("is off without a key: signs nothing, checks nothing", () => {
    const off = MeshSigner.disabled();
    expect(off.enabled).toBe(false);
    expect(off.sign("s", "p")).toEqual({});
    expect(off.verify("s", "p", undefined)).toBe("unchecked");
  });
});

describe("loadMeshSigner", () => {
  it("reads the keys from the variables the config names", () => {
    const signer = loadMeshSigner(
      { signing_key_env: "K_NEW", verify_key_envs: ["K_OLD"] },
      { K_NEW: keyB.toString(), K_OLD: keyA.toString() },
    );
    expect(signer.enabled).toBe(true);
    expect(signer.verify("s", "p", signed(new MeshSigner(keyA), "s", "p"))).toBe("authentic");
    expect(loadMeshSigner(undefined, {}).enabled).toBe(false);
  });

  it("names the variable, never the value, when a key is missing or short", () => {
    expect(() => loadMeshSigner({ signing_key_env: "K" }, {})).toThrow(
      "mesh.signing_key_env names K, which is not set or is empty",
    );
    const short = "canary-short-key";
    let message = "";
    try {
      loadMeshSigner({ signing_key_env: "K" }, { K: short });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/the key in K is 16 bytes; a mesh signing key needs at least 32/);
    expect(message).not.toContain(short);
    expect(() =>
      loadMeshSigner({ signing_key_env: "K", verify_key_envs: ["OLD"] }, { K: keyA.toString() }),
    ).toThrow("mesh.verify_key_envs[0] names OLD");
    expect(() => loadMeshSigner({ verify_key_envs: ["OLD"] }, {})).toThrow(
      /needs mesh.signing_key_env/,
    );
  });
});
