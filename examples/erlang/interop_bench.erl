%% The Erlang side of `cargo run --release --example erlang_interop -- bench`.
%%
%% The example compiles this module with erlc into a temporary directory and
%% starts each `erl` with `-pa DIR -eval 'interop_bench:repl().'`; it then
%% writes one Erlang expression per line to the node's standard input and
%% reads its result, printed with ~w on one line as `{ok, Value}` or
%% `{error, Class, Reason}` (bindings kept from line to line, as in the
%% joerl-dist tests' erl_common). End of input halts the node.
%%
%% What the expressions use:
%%   start_sink()          registers `sink`: on {start, From, N} it counts
%%                         N {msg, _} and then sends {done, N} to From.
%%   start_server()        registers `bench_server`, a gen_server: {add, N}
%%                         -> the new total, get -> the total.
%%   send_run(Dest, N)     sends {start, self(), N} to Dest (a pid or
%%                         {Name, Node}, monitored), then N {msg, I} as
%%                         fast as `!` goes, then waits for {done, N}; returns
%%                         {sent, N, Micros}, Micros from the first {msg, _}
%%                         sent to {done, N} received.
%%   call_run(Server, M)   M sequential gen_server:call(Server, {add, 1});
%%                         returns {rtt, P50, P99} in nanoseconds (index
%%                         trunc((M - 1) * P) of the sorted samples).
-module(interop_bench).
-behaviour(gen_server).

-export([repl/0, start_sink/0, start_server/0, send_run/2, call_run/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% How long one run may wait for its sink or one call for its reply.
-define(DEADLINE, 100000).

repl() ->
    repl(erl_eval:new_bindings()).

repl(B) ->
    case io:get_line('') of
        eof ->
            halt();
        {error, _} ->
            halt();
        Line ->
            {R, B2} =
                try
                    {ok, Toks, _} = erl_scan:string(Line),
                    {ok, Es} = erl_parse:parse_exprs(Toks),
                    {value, V, NB} = erl_eval:exprs(Es, B),
                    {{ok, V}, NB}
                catch
                    C:E -> {{error, C, E}, B}
                end,
            io:format("~w~n", [R]),
            repl(B2)
    end.

start_sink() ->
    case whereis(sink) of
        undefined ->
            Pid = spawn(fun sink/0),
            true = register(sink, Pid),
            Pid;
        Pid ->
            Pid
    end.

sink() ->
    receive
        {start, From, N} -> sink(From, N, 0);
        _ -> sink()
    end.

sink(From, N, N) ->
    From ! {done, N},
    sink();
sink(From, N, C) ->
    receive
        {msg, _} -> sink(From, N, C + 1)
    end.

start_server() ->
    case gen_server:start({local, bench_server}, ?MODULE, 0, []) of
        {ok, Pid} -> Pid;
        {error, {already_started, Pid}} -> Pid
    end.

init(Total) -> {ok, Total}.

handle_call({add, N}, _From, Total) when is_integer(N) ->
    {reply, Total + N, Total + N};
handle_call(get, _From, Total) ->
    {reply, Total, Total};
handle_call(_, _From, Total) ->
    {reply, {error, unknown}, Total}.

handle_cast(_, Total) -> {noreply, Total}.

handle_info(_, Total) -> {noreply, Total}.

send_run(Dest, N) ->
    %% A sink that dies (or whose node goes away) ends the run at once.
    Ref = erlang:monitor(process, Dest),
    Dest ! {start, self(), N},
    T0 = erlang:monotonic_time(microsecond),
    send_loop(Dest, 1, N),
    receive
        {done, N} -> ok;
        {'DOWN', Ref, process, _, Why} -> exit({sink_down, Dest, Why})
    after ?DEADLINE -> exit({sink_timeout, Dest, N})
    end,
    T1 = erlang:monotonic_time(microsecond),
    erlang:demonitor(Ref, [flush]),
    {sent, N, T1 - T0}.

send_loop(_Dest, I, N) when I > N ->
    ok;
send_loop(Dest, I, N) ->
    Dest ! {msg, I},
    send_loop(Dest, I + 1, N).

call_run(Server, M) when M > 0 ->
    Sorted = lists:sort(call_loop(Server, M, [])),
    At = fun(P) -> lists:nth(trunc((M - 1) * P) + 1, Sorted) end,
    {rtt, At(0.5), At(0.99)}.

call_loop(_Server, 0, Acc) ->
    Acc;
call_loop(Server, K, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    R = gen_server:call(Server, {add, 1}, ?DEADLINE),
    T1 = erlang:monotonic_time(nanosecond),
    true = is_integer(R),
    call_loop(Server, K - 1, [T1 - T0 | Acc]).
