#!/usr/bin/env python3
"""Adversarial figures: what attacks that once broke llmop cost now.

Starts the release binary on loopback with a hostile fake upstream (Python, stdlib only)
and measures, each bounded in time and count:
  - /healthz latency while two 1 MiB single-character prompts are estimated (budgets on)
  - RSS before and after an upstream answering 200 MiB (capped at max_response_bytes)
  - how long a slowloris connection (a header byte every 0.5 s) stays open
  - a valid call's latency while 1,100 idle unauthenticated sockets are open
  - whether an upstream echoing the provider key leaks it (whole and streamed)
Prints a Markdown table and writes bench/results/adversarial.json.

Usage: bench/adversarial.py  (LLMOP_BIN to use a built binary instead of building)
"""
import json, os, resource, socket, subprocess, sys, tempfile, threading, time
import http.server, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-adversarial-upstream-key-123456"


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n) or b"{}")
        model = body.get("model", "")
        if model == "huge":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            chunk = b"y" * (1 << 20)
            try:
                head = b'{"choices":[{"message":{"content":"'
                self.wfile.write(b"%x\r\n%s\r\n" % (len(head), head))
                for _ in range(200):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        got = self.headers.get("authorization", "")
        err = json.dumps({"error": {"message": f"Incorrect API key provided: {got}", "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(err)))
        self.end_headers()
        self.wfile.write(err)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def post(url, body, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except (ValueError, OSError):
        pass
    binary = os.environ.get("LLMOP_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "llmop"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target/release/llmop")
    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp()
    cfg = os.path.join(work, "llmop.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:0"
idle_timeout_ms = 10000
[providers.sim]
kind = "mock"
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{up.server_address[1]}/v1"
api_key_env = "UP_KEY"
[prices."sim/*"]
input = 1.0
output = 1.0
[[budgets]]
scope = "global"
window = "day"
hard_usd = 100000.0
""")
    proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=subprocess.PIPE, stderr=open(os.path.join(work, "log"), "w"),
                            env={**os.environ, "UP_KEY": KEY, "LLMOP_LOG": "warn"})
    line = proc.stdout.readline().decode()
    url = line.strip().rsplit(" ", 1)[-1]
    host, port = url.replace("http://", "").split(":")
    results = {}
    try:
        time.sleep(0.5)
        results["rss_idle_mib"] = round(rss_mib(proc.pid), 1)

        # Pathological prompts while /healthz is probed.
        lat, done = [], []
        def heavy():
            t = time.time()
            s, _ = post(f"{url}/v1/chat/completions", {"model": "sim/lorem", "max_tokens": 5,
                                                        "messages": [{"role": "user", "content": "a" * (1 << 20)}]})
            done.append((s, time.time() - t))
        ts = [threading.Thread(target=heavy) for _ in range(2)]
        for t in ts:
            t.start()
        while any(t.is_alive() for t in ts):
            t0 = time.time()
            urllib.request.urlopen(f"{url}/healthz", timeout=30).read()
            lat.append((time.time() - t0) * 1000)
            time.sleep(0.005)
        for t in ts:
            t.join()
        lat.sort()
        results["one_char_1mib_call_s"] = round(max(d for _, d in done), 3)
        results["healthz_max_ms_during"] = round(lat[-1], 2) if lat else None
        results["healthz_samples"] = len(lat)

        # An upstream answering 200 MiB.
        before = rss_mib(proc.pid)
        s, body = post(f"{url}/v1/chat/completions", {"model": "up/huge", "messages": [{"role": "user", "content": "hi"}]})
        results["huge_upstream_status"] = s
        results["rss_after_huge_upstream_mib"] = round(rss_mib(proc.pid), 1)
        results["rss_before_huge_upstream_mib"] = round(before, 1)

        # Slowloris.
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        t0 = time.time()
        sock.settimeout(0.5)
        while time.time() - t0 < 60:
            try:
                sock.sendall(b"x")
                if sock.recv(1) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        results["slowloris_closed_after_s"] = round(time.time() - t0, 1)
        sock.close()

        # 1,100 idle sockets, then a real call.
        idle = [socket.create_connection((host, int(port))) for _ in range(1100)]
        t0 = time.time()
        s, _ = post(f"{url}/v1/chat/completions", {"model": "sim/echo", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        results["call_with_1100_idle_sockets_status"] = s
        results["call_with_1100_idle_sockets_ms"] = round((time.time() - t0) * 1000, 1)
        for c in idle:
            c.close()

        # An upstream that echoes the key it was sent.
        leaks = 0
        for stream in (False, True):
            s, body = post(f"{url}/v1/chat/completions", {"model": "up/m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            leaks += KEY.encode() in body
        with open(os.path.join(work, "log")) as f:
            leaks += KEY in f.read()
        results["echoed_key_leaks"] = leaks
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        up.shutdown()
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/adversarial.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| measure | value |\n|---|---:|")
    for k, v in results.items():
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    sys.exit(main())
