// Recompile the demo contracts into committed artifacts (ABI + bytecode).
// solc binaries cannot be downloaded here, so this uses the solc-js package from
// the npm registry through its standard-JSON API, targeting the "paris" EVM so
// the bytecode runs on py-evm, hardhat and ganache alike.
//
//   cd edge_server/scripts && npm install && node compile_contracts.mjs
import { readFileSync, writeFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const chainDir = join(here, "..", "offload_edge", "chain");
const sourceDir = join(chainDir, "contracts");
const artifactDir = join(chainDir, "artifacts");
const settings = {
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const sources = {};
for (const file of readdirSync(sourceDir).filter((name) => name.endsWith(".sol")).sort()) {
  sources[file] = { content: readFileSync(join(sourceDir, file), "utf8") };
}
const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings })));
const errors = (output.errors || []).filter((error) => error.severity === "error");
for (const problem of output.errors || []) console.error(problem.formattedMessage);
if (errors.length) process.exit(1);

for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, compiled] of Object.entries(contracts)) {
    const artifact = {
      contractName: name,
      sourceName: file,
      abi: compiled.abi,
      bytecode: "0x" + compiled.evm.bytecode.object,
      deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
      compiler: { name: "solc-js", version: solc.version(), evmVersion: settings.evmVersion, optimizer: settings.optimizer },
    };
    writeFileSync(join(artifactDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
    console.log(`wrote artifacts/${name}.json (${artifact.deployedBytecode.length / 2 - 1} bytes deployed)`);
  }
}
