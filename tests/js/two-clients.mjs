// Two official automerge-repo clients sync one document through a relay.
//
//   node two-clients.mjs ws://127.0.0.1:PORT
//
// Client A creates a document; client B finds it by URL and sees A's content; B edits it and A
// sees B's edit. Prints one JSON line with what each saw. Exits non-zero on timeout.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { waitFor, withTimeout } from "./wait.mjs";

const url = process.argv[2];

const a = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: "js-client-a" });
const b = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: "js-client-b" });

await withTimeout(
  (async () => {
    const handleA = a.create({ title: "Study plan", goals: ["Pass calculus"] });
    const handleB = await b.find(handleA.url);
    const seenByB = handleB.doc();
    handleB.change((d) => {
      d.goals.push("Join a study group");
    });
    await waitFor(handleA, (d) => d.goals.length === 2);
    console.log(JSON.stringify({ url: handleA.url, seenByB, seenByA: handleA.doc() }));
  })(),
  20000,
  "two clients did not converge",
);
a.shutdown();
b.shutdown();
process.exit(0);
