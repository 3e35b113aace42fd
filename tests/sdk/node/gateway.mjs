// Starts the real llmop binary on the SDK tests' config, in a temporary directory (the
// record store lands there, not in the repository); resolves to its base URL.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { copyFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const bin = process.env.LLMOP_BIN ?? path.join(root, "target/debug/llmop");

export async function startGateway() {
  const dir = mkdtempSync(path.join(tmpdir(), "llmop-sdk-"));
  const config = path.join(dir, "llmop.toml");
  copyFileSync(path.join(root, "tests/sdk/llmop-sdk.toml"), config);
  const proc = spawn(bin, ["serve", "--config", config, "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const line = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout });
    rl.once("line", resolve);
    proc.once("exit", (code) => reject(new Error(`llmop exited with ${code}`)));
  });
  return { proc, url: line.replace("llmop listening on ", "").trim() };
}
