// A stream of acknowledged edits, for crash tests: runs until it is killed.
//
//   node edits.mjs ws://127.0.0.1:PORT [ws://127.0.0.1:OTHER_PORT]
//
// With a second URL, B connects to that relay instead (two relays sharing one database).
//
// Client A creates {edits: []} and prints {"url": ...}. Client B finds it through the relay. Then A
// appends 1, 2, 3, … to `edits`, never more than WINDOW ahead of what B has seen, and B prints
// {"seen": N} each time the highest edit it holds grows. The relay passes a change on only after
// committing it, so every edit B printed is durable on the relay. Exits after MAX edits.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { waitFor, whenStored, withTimeout } from "./wait.mjs";

const WINDOW = 4;
const MAX = 5000;

const url = process.argv[2];
const urlB = process.argv[3] ?? url;
const a = new Repo({ network: [new WebSocketClientAdapter(url)] });
const b = new Repo({ network: [new WebSocketClientAdapter(urlB)] });

const handleA = a.create({ edits: [] });
console.log(JSON.stringify({ url: handleA.url }));
await withTimeout(whenStored(handleA), 20000, "the relay did not store the document");
const handleB = await withTimeout(b.find(handleA.url), 20000, "B did not find the document");

let seen = 0;
const report = () => {
  const edits = handleB.doc().edits;
  const highest = edits.length === 0 ? 0 : Math.max(...edits);
  if (highest > seen) {
    seen = highest;
    console.log(JSON.stringify({ seen }));
  }
};
handleB.on("change", report);
report();

for (let i = 1; i <= MAX; i++) {
  handleA.change((d) => {
    d.edits.push(i);
  });
  if (i > WINDOW) {
    await withTimeout(
      waitFor(handleB, (d) => d.edits.length >= i - WINDOW),
      20000,
      `B did not see edit ${i - WINDOW}`,
    );
  }
}
console.log(JSON.stringify({ done: MAX }));
a.shutdown();
b.shutdown();
process.exit(0);
