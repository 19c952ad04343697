#!/bin/sh
# Erlang's remote spawn round trip on this machine, beside services_bench's
# spawn_on_us_p50: node a spawns a process on node b with spawn(Node, Fun)
# and waits for its first message (joerl's spawn_on answers once the actor
# started, so this is the same round trip). 200 samples, after 100 to warm
# up. Both nodes use joerl's epmd_server on a free port, stopped by PID at
# the end, as are the nodes.
#
#   cargo build --release -p joerl-epmd && sh examples/erlang/spawn_bench.sh
#   erlang spawn_on_us_p50=..
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
epmd_bin="$root/target/release/epmd_server"
[ -x "$epmd_bin" ] || { echo "build it first: cargo build --release -p joerl-epmd" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$epmd_bin" "127.0.0.1:$port" >/dev/null 2>&1 &
epmd=$!
b=""
cleanup() { [ -n "$b" ] && kill "$b" 2>/dev/null; kill "$epmd" 2>/dev/null; }
trap cleanup EXIT
sleep 0.5
export ERL_EPMD_PORT=$port
erl -name spawn_b@127.0.0.1 -setcookie spawnbench -noshell -noinput >/dev/null 2>&1 &
b=$!
erl -name spawn_a@127.0.0.1 -setcookie spawnbench -noshell -eval '
  B = '"'"'spawn_b@127.0.0.1'"'"',
  Wait = fun W(0) -> halt(1); W(N) -> case net_adm:ping(B) of pong -> ok; pang -> timer:sleep(100), W(N - 1) end end,
  Wait(100),
  Me = self(),
  One = fun() ->
      T0 = erlang:monotonic_time(nanosecond),
      P = spawn(B, fun() -> Me ! {started, self()}, receive stop -> ok end end),
      receive {started, P} -> ok end,
      T = erlang:monotonic_time(nanosecond) - T0,
      P ! stop,
      T
  end,
  [One() || _ <- lists:seq(1, 100)],
  Ts = lists:sort([One() || _ <- lists:seq(1, 200)]),
  P50 = lists:nth(100, Ts) / 1000,
  io:format("erlang spawn_on_us_p50=~B~n", [round(P50)]),
  halt(0).'
