// Waiting on events, never on the clock: resolve when a document handle satisfies a predicate.

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
