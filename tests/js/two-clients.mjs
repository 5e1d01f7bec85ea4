// Two official automerge-repo clients sync one document through a relay.
//
//   node two-clients.mjs ws://127.0.0.1:PORT
//
// Client A creates a document and waits until the relay has stored it; client B finds it by URL
// and sees A's content; B edits it and A
// sees B's edit. Then both edit the same document at once, while connected, and each waits until
// it holds the other's edit: the two copies must converge to the same content and heads. Prints
// one JSON line with what each saw. Exits non-zero on timeout.
import * as Automerge from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { waitFor, whenStored, withTimeout } from "./wait.mjs";

const url = process.argv[2];

const a = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: "js-client-a" });
const b = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: "js-client-b" });

await withTimeout(
  (async () => {
    const handleA = a.create({ title: "Study plan", goals: ["Pass calculus"], notes: {} });
    // B looks for the document once the relay holds it (otherwise the relay may rightly answer
    // that nobody has it).
    await whenStored(handleA);
    const handleB = await b.find(handleA.url);
    const seenByB = handleB.doc();
    handleB.change((d) => {
      d.goals.push("Join a study group");
    });
    await waitFor(handleA, (d) => d.goals.length === 2);
    const seenByA = handleA.doc();

    // Concurrent edits of the same document: the same list and the same map, from both sides,
    // without waiting for each other.
    handleA.change((d) => {
      d.goals.push("from A");
      d.notes.a = "written by A";
      d.title = "Study plan (A)";
    });
    handleB.change((d) => {
      d.goals.push("from B");
      d.notes.b = "written by B";
      d.title = "Study plan (B)";
    });
    const hasBoth = (d) => d.goals.includes("from A") && d.goals.includes("from B");
    await Promise.all([waitFor(handleA, hasBoth), waitFor(handleB, hasBoth)]);
    // Both now hold both changes; wait until their heads agree (any merge is already done).
    const sameHeads = () =>
      JSON.stringify(Automerge.getHeads(handleA.doc()).sort()) ===
      JSON.stringify(Automerge.getHeads(handleB.doc()).sort());
    await Promise.all([waitFor(handleA, sameHeads), waitFor(handleB, sameHeads)]);
    console.log(
      JSON.stringify({
        url: handleA.url,
        seenByB,
        seenByA,
        finalA: handleA.doc(),
        finalB: handleB.doc(),
        headsA: Automerge.getHeads(handleA.doc()),
        headsB: Automerge.getHeads(handleB.doc()),
      }),
    );
  })(),
  20000,
  "two clients did not converge",
);
a.shutdown();
b.shutdown();
process.exit(0);
