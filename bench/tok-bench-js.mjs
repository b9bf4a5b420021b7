// tok-bench-js.mjs: encode MB/s of @huggingface/tokenizers (npm) on a text file, the reference for hymba-tokbench.
// usage: node tok-bench-js.mjs MODULE_DIR TOKENIZER_DIR FILE [RUNS] [--lines] [--ids OUT]
//   MODULE_DIR: a folder where `npm install @huggingface/tokenizers@0.2.0` was run
//   --ids OUT: also write the ids of the last run, comma-separated, to OUT (for an exactness check)
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const args = process.argv.slice(2);
const lines = args.includes("--lines");
const idsAt = args.indexOf("--ids");
const idsOut = idsAt >= 0 ? args[idsAt + 1] : null;
const pos = args.filter((a, i) => !a.startsWith("--") && !(idsAt >= 0 && i === idsAt + 1));
const [modDir, tokDir, file] = pos;
const runs = Number(pos[3] ?? 5);
const require = createRequire(join(modDir, "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");
const tj = JSON.parse(readFileSync(join(tokDir, "tokenizer.json"), "utf8"));
const tc = JSON.parse(readFileSync(join(tokDir, "tokenizer_config.json"), "utf8"));
const tok = new Tokenizer(tj, tc);
const text = readFileSync(file, "utf8");
const bytes = Buffer.byteLength(text, "utf8");
const parts = lines ? text.split(/(?<=\n)/) : [text];
const mbps = [], cpuMbps = [];
let last = [];
for (let r = 0; r < runs; r++) {
  const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
  let n = 0;
  const all = [];
  for (const p of parts) {
    const ids = tok.encode(p, { add_special_tokens: false }).ids;
    n += ids.length;
    if (idsOut && r === runs - 1) for (const id of ids) all.push(id);
  }
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  const cu = process.cpuUsage(c0), dc = (cu.user + cu.system) / 1e6;   // all threads of the process, GC included
  mbps.push(bytes / 1e6 / dt);
  cpuMbps.push(bytes / 1e6 / dc);
  console.log(`run ${r + 1}: ${dt.toFixed(3)} s, ${(bytes / 1e6 / dt).toFixed(2)} MB/s (CPU time ${dc.toFixed(3)} s, ${(bytes / 1e6 / dc).toFixed(3)} MB/s), ${n} ids`);
  last = all;
}
mbps.sort((a, b) => a - b);
cpuMbps.sort((a, b) => a - b);
const mid = Math.floor(runs / 2);
console.log(`tok-bench-js: ${file} (${bytes} bytes, ${lines ? "per line" : "whole file"}): median ${mbps[mid].toFixed(3)} MB/s wall, ${cpuMbps[mid].toFixed(3)} MB/s CPU time over ${runs} runs`);
if (idsOut) writeFileSync(idsOut, last.join(",") + "\n");
