# Shared by the bench scripts (sourced, not run): a work directory removed on exit,
# the processes a script starts (in `pids`) killed on exit, the release binaries'
# directory, and helpers.
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# url_of FILE: waits for "... listening on http://ADDR" in a process's stdout file and
# prints the URL; fails (showing the matching .log file, if any) when it never comes.
url_of() {
  for _ in $(seq 200); do
    if grep -q "listening on" "$1" 2>/dev/null; then grep -o 'http://[0-9.:]*' "$1" | head -1; return; fi
    sleep 0.05
  done
  echo "process did not start: $1" >&2; cat "${1%.out}.log" >&2 2>/dev/null || true; exit 1
}

# nginx_config PORT UPSTREAM_PORT WORKERS: writes $WORK/nginx.conf, a keep-alive
# reverse proxy to the upstream (no buffering, no access log).
nginx_config() {
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes $3;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream up { server 127.0.0.1:$2; keepalive 512; }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
}

# free_port: a loopback port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# CPU ticks (user + system) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure LABEL PID OUT BENCH-LOAD-ARGS...: one bench-load run on core 1 against
# $TARGET (else $url), for $SECS seconds after a 1 s warm-up; its result line, with the
# CPU the process PID (llmop) spent per completed request added, is appended to OUT
# (and shown on stderr).
measure() {
  local label=$1 p=$2 out=$3; shift 3
  local before after line
  before=$(ticks "$p")
  line=$(taskset -c 1 $BIN/bench-load --url "${TARGET:-$url}" --seconds "$SECS" --warmup 1 --label "$label" "$@")
  after=$(ticks "$p")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); t=(int(sys.argv[2])-int(sys.argv[3]))/int(sys.argv[4]); r["cpu_us_per_req"]=t*1e6/max(r["completed"],1); print(json.dumps(r))' \
    "$line" "$after" "$before" "$(getconf CLK_TCK)" | tee -a "$out" >&2
}
