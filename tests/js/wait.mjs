// Waiting on events, never on the clock: resolve when a document handle satisfies a predicate.
import { isImmutableString } from "@automerge/automerge";

export function waitFor(handle, predicate) {
  return new Promise((resolve) => {
    const check = () => {
      const doc = handle.doc();
      if (doc && predicate(doc)) {
        handle.off("change", check);
        resolve(doc);
      }
    };
    handle.on("change", check);
    check();
  });
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Resolves when a peer that stores documents (the relay: it announces a storage id) reports the
// handle's current heads. The relay answers only with what it has committed, so this is the JS
// client's "saved to the server".
export function whenStored(handle) {
  const same = (a, b) => a && b && a.length === b.length && a.every((h) => b.includes(h));
  return new Promise((resolve) => {
    const check = ({ heads }) => {
      if (same(heads, handle.heads())) {
        handle.off("remote-heads", check);
        resolve(heads);
      }
    };
    handle.on("remote-heads", check);
  });
}

// A document as plain JSON: timestamps as milliseconds, immutable strings as strings, BigInts as
// numbers.
export function toJSON(doc) {
  return JSON.parse(
    JSON.stringify(doc, function (key, value) {
      const raw = this[key];
      if (raw instanceof Date) return raw.getTime();
      if (isImmutableString(raw)) return raw.toString();
      return typeof value === "bigint" ? Number(value) : value;
    }),
  );
}
