// Reads and writes Automerge documents with the official JS library, so Rust tests can check that
// Tandem's documents are plain Automerge that any Automerge peer opens.
//
//   node doc.mjs to-json FILE          prints the document at FILE as JSON
//   node doc.mjs from-json FILE JSON   writes a new document holding JSON to FILE
//   node doc.mjs edit FILE KEY VALUE   sets a top-level KEY to the string VALUE in FILE, in place
import * as Automerge from "@automerge/automerge";
import { readFileSync, writeFileSync } from "node:fs";

const [command, file, ...rest] = process.argv.slice(2);

function load(path) {
  return Automerge.load(new Uint8Array(readFileSync(path)));
}

switch (command) {
  case "to-json": {
    // Automerge gives `uint` values as BigInt, which JSON cannot hold: write them as numbers.
    const json = JSON.stringify(Automerge.toJS(load(file)), (_, value) =>
      typeof value === "bigint" ? Number(value) : value,
    );
    process.stdout.write(json);
    break;
  }
  case "from-json": {
    const doc = Automerge.from(JSON.parse(rest[0]));
    writeFileSync(file, Automerge.save(doc));
    break;
  }
  case "edit": {
    const [key, value] = rest;
    const doc = Automerge.change(load(file), (d) => {
      d[key] = value;
    });
    writeFileSync(file, Automerge.save(doc));
    break;
  }
  default:
    console.error(`unknown command ${command}`);
    process.exit(2);
}
