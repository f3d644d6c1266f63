#!/usr/bin/env bash
# benches/proxies.sh - the reference proxies of the balance scenarios of benches/load.sh:
# nginx (`proxy_pass`) or HAProxy in front of the rig's counting sinks on 127.0.0.1:8101 and
# 8102, each with one worker, keep-alive upstream connections and access logs off, the same
# path rewrite as fanout's balance2 route (any path is sent as /in). Runs in the foreground
# (so rig.sh can measure and stop it).
#
#   benches/proxies.sh nginx|haproxy --port 8080 [--dir DIR]
set -euo pipefail
KIND=${1:-} PORT="" DIR=""
shift || true
while [[ $# -gt 0 ]]; do
  case $1 in
    --port) PORT=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    *) echo "proxies: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $PORT =~ ^[0-9]+$ ]] || { echo "usage: proxies.sh nginx|haproxy --port P" >&2; exit 2; }
DIR=${DIR:-/tmp/rig/$KIND-$PORT}
mkdir -p "$DIR/tmp"
case $KIND in
  nginx)
    cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $DIR/tmp/body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;
    upstream sinks {
        least_conn;
        server 127.0.0.1:8101;
        server 127.0.0.1:8102;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location / {
            proxy_pass http://sinks/in;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    nginx -t -q -e "$DIR/error.log" -p "$DIR" -c "$DIR/nginx.conf"
    exec nginx -e "$DIR/error.log" -p "$DIR" -c "$DIR/nginx.conf" -g 'daemon off;'
    ;;
  haproxy)
    cat >"$DIR/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend in
    bind 127.0.0.1:$PORT
    default_backend sinks
backend sinks
    balance leastconn
    http-request set-path /in
    server s1 127.0.0.1:8101
    server s2 127.0.0.1:8102
CONF
    exec haproxy -f "$DIR/haproxy.cfg" -db
    ;;
  *) echo "usage: proxies.sh nginx|haproxy --port P" >&2; exit 2 ;;
esac
