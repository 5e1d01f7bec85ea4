// The official automerge-repo sync server, configured as automerge-repo-sync-server configures it,
// for the sync benchmark (tests/benches/sync.rs) to compare Tandem's relay against.
//
//   node sync-server.mjs
//
// Listens on 127.0.0.1 on a free port and prints `js-sync-server listening on 127.0.0.1:PORT`.
//
// One difference from the reference server: storage is in memory (the reference server uses
// NodeFSStorageAdapter, which is not installed here). A storage adapter is still needed, because a
// repo without one announces itself as ephemeral and its peers would not keep sync states with it.
// Nothing this server holds is written to disk, let alone fsynced.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { WebSocketServer } from "ws";

/**
 * StorageAdapterInterface over Maps, one per document id (the first key part), as the reference
 * NodeFSStorageAdapter keeps a directory per document: a range load looks at one document only.
 */
class MemoryStorageAdapter {
  #data = new Map();

  #bucket(first, create) {
    let bucket = this.#data.get(first);
    if (!bucket && create) this.#data.set(first, (bucket = new Map()));
    return bucket;
  }

  async load(key) {
    return this.#bucket(key[0], false)?.get(JSON.stringify(key))?.data;
  }

  async save(key, data) {
    this.#bucket(key[0], true).set(JSON.stringify(key), { key, data });
  }

  async remove(key) {
    this.#bucket(key[0], false)?.delete(JSON.stringify(key));
  }

  #matching(prefix) {
    const buckets = prefix.length > 0 ? [this.#bucket(prefix[0], false) ?? new Map()] : [...this.#data.values()];
    return buckets.flatMap((bucket) =>
      [...bucket.entries()].filter(([, { key }]) => startsWith(key, prefix)).map(([id, chunk]) => ({ id, bucket, chunk })),
    );
  }

  async loadRange(prefix) {
    return this.#matching(prefix).map(({ chunk }) => chunk);
  }

  async removeRange(prefix) {
    for (const { id, bucket } of this.#matching(prefix)) bucket.delete(id);
  }
}

function startsWith(key, prefix) {
  return prefix.length <= key.length && prefix.every((part, i) => key[i] === part);
}

const socket = new WebSocketServer({ host: "127.0.0.1", port: 0 });
await new Promise((resolve) => socket.once("listening", resolve));

new Repo({
  network: [new WebSocketServerAdapter(socket)],
  storage: new MemoryStorageAdapter(),
  peerId: `storage-server-bench-${process.pid}`,
  // As the reference server: only sync documents a client names, never announce any.
  sharePolicy: async () => false,
});

const { address, port } = socket.address();
console.log(`js-sync-server listening on ${address}:${port}`);

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
