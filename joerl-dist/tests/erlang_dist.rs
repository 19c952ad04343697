//! joerl and real Erlang/OTP nodes (Debian's `erlang-base`) talking Erlang's
//! distribution protocol: ping, sends, calls, links, monitors, node loss,
//! cookies, and bad input. Every node listens on 127.0.0.1 on a port chosen
//! at random; every `erl` started here is stopped by its own handle.

mod common;
mod erl_common;

use std::time::Duration;

use common::*;
use erl_common::*;
use joerl_dist::erlang::Term;
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo};
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, SpawnOptions};

const COOKIE: &str = "test-cookie";

/// Replies `{echo, Term}` to `{Pid, Term}`.
struct Echo;

impl Actor for Echo {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Ok(t) = msg.downcast::<Term>() else {
            return;
        };
        if let Some([Term::Pid(from), what]) = t.as_tuple() {
            let reply = Term::tuple(vec![Term::atom("echo"), what.clone()]);
            let _ = ctx.send(from.to_joerl(), reply).await;
        }
    }
}

/// A gen_server taking Erlang terms: `{add, N}` -> total, `get` -> total,
/// `self` -> its pid.
struct Counter(i64);

impl GenServer for Counter {
    type Calls = (Term,);
    type Casts = ();
}

impl HandleCall<Term> for Counter {
    async fn handle_call(
        &mut self,
        req: Term,
        _from: ReplyTo<Term>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Term> {
        let reply = match req.as_tuple() {
            Some([op, Term::Int(n)]) if op.is_atom("add") => {
                self.0 += n;
                Term::Int(self.0)
            }
            _ if req.is_atom("get") => Term::Int(self.0),
            _ if req.is_atom("self") => Term::Pid(joerl_dist::erlang::ErlPid::from_joerl(
                ctx.pid(),
                joerl_dist::erlang::Atom::new(ctx.system().node_name().unwrap()).unwrap(),
            )),
            _ => Term::tuple(vec![Term::atom("error"), Term::atom("unknown")]),
        };
        CallResponse::Reply(reply)
    }
}

async fn joerl_node(name: &str, epmd: std::net::SocketAddr) -> DistributedSystem {
    let node = node(name, epmd).await;
    node.system()
        .spawn_with(Echo, SpawnOptions::new().name("echo"))
        .unwrap();
    joerl_dist::gen_server::spawn_server_with(
        node.system(),
        Counter(0),
        SpawnOptions::new().name("counter"),
    )
    .unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_adm_ping_works_both_ways() {
    init_tracing();
    let epmd = epmd().await;
    let port = epmd.local_addr().port();
    let joerl = joerl_node("jping", epmd.local_addr()).await;
    let mut erl = Erl::start("eping", port, COOKIE, &[]).await;
    erl.expect(&format!("net_adm:ping('{}')", joerl.name()), "{ok,pong}")
        .await;
    assert!(joerl.nodes().contains(&erl.name), "{:?}", joerl.nodes());
    // joerl connects as a hidden node by default.
    erl.expect(
        &format!(
            "{{lists:member('{0}', nodes()), lists:member('{0}', nodes(hidden))}}",
            joerl.name()
        ),
        "{ok,{false,true}}",
    )
    .await;
    // And the other way: what net_adm:ping asks, asked of Erlang's net_kernel.
    let is_auth = Term::tuple(vec![Term::atom("is_auth"), Term::atom(joerl.name())]);
    let reply = joerl
        .system()
        .call_raw(("net_kernel", erl.name.as_str()), is_auth, DEADLINE)
        .await
        .unwrap();
    assert_eq!(*reply.downcast::<Term>().unwrap(), Term::atom("yes"));
    erl.stop().await;
    joerl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_named_sends_cross_both_ways() {
    init_tracing();
    let epmd = epmd().await;
    let port = epmd.local_addr().port();
    let joerl = joerl_node("jsend", epmd.local_addr()).await;
    let mut erl = Erl::start("esend", port, COOKIE, &[]).await;
    let j = joerl.name().to_string();
    // Erlang -> joerl by name, the reply to Erlang by pid.
    erl.expect(
        &format!("{{echo, '{j}'}} ! {{self(), [hello, <<\"w\", 246/utf8, \"rld\">>, 1.5, -(1 bsl 70)]}}, receive {{echo, X}} -> X after 20000 -> timeout end"),
        "{ok,[hello,<<119,195,182,114,108,100>>,1.5,-1180591620717411303424]}",
    )
    .await;
    // joerl -> Erlang by name: the REPL process registers itself.
    erl.expect("register(sink, self())", "{ok,true}").await;
    let hello = Term::tuple(vec![Term::atom("from_joerl"), Term::Int(42)]);
    joerl
        .system()
        .send(("sink", erl.name.as_str()), hello)
        .await
        .unwrap();
    erl.expect(
        "receive {from_joerl, N} -> N after 20000 -> timeout end",
        "{ok,42}",
    )
    .await;
    // Erlang -> joerl by pid: the counter tells its pid, a message goes to it
    // (a plain send to a gen_server lands in handle_info: no reply), then a call.
    erl.expect(
        &format!(
            "P = gen_server:call({{counter, '{j}'}}, self), is_pid(P) andalso node(P) =:= '{j}'"
        ),
        "{ok,true}",
    )
    .await;
    erl.expect("gen_server:call(P, {add, 2})", "{ok,2}").await;
    erl.stop().await;
    joerl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_calls_cross_both_ways() {
    init_tracing();
    let epmd = epmd().await;
    let port = epmd.local_addr().port();
    let joerl = joerl_node("jcall", epmd.local_addr()).await;
    let mut erl = Erl::start("ecall", port, COOKIE, &[]).await;
    let j = joerl.name().to_string();
    erl.expect(
        &format!("gen_server:call({{counter, '{j}'}}, {{add, 5}})"),
        "{ok,5}",
    )
    .await;
    erl.expect(
        &format!("gen_server:call({{counter, '{j}'}}, {{add, 10}})"),
        "{ok,15}",
    )
    .await;
    erl.expect(
        &format!("gen_server:call({{counter, '{j}'}}, get)"),
        "{ok,15}",
    )
    .await;
    // A name nobody holds: Erlang's call exits with noproc.
    erl.expect(
        &format!("catch gen_server:call({{nobody, '{j}'}}, get, 5000)"),
        &format!("{{ok,{{'EXIT',{{noproc,{{gen_server,call,[{{nobody,'{j}'}},get,5000]}}}}}}}}"),
    )
    .await;
    // rpc answers clearly that there is no Erlang code here.
    let rpc = erl
        .eval(&format!("rpc:call('{j}', erlang, node, [])"))
        .await;
    assert!(rpc.starts_with("{ok,{badrpc,"), "{rpc}");
    // joerl calls a real Erlang gen_server.
    let reply = joerl
        .system()
        .call_raw(
            ("application_controller", erl.name.as_str()),
            Term::atom("which_applications"),
            DEADLINE,
        )
        .await
        .unwrap();
    let apps = reply.downcast::<Term>().unwrap();
    let names: Vec<String> = apps
        .as_list()
        .unwrap()
        .iter()
        .filter_map(|a| {
            a.as_tuple()
                .and_then(|t| t[0].as_atom().map(str::to_string))
        })
        .collect();
    assert!(names.contains(&"kernel".to_string()), "{apps}");
    // Calling an Erlang name nobody holds fails with noproc.
    let err = joerl
        .system()
        .call_raw(("nobody", erl.name.as_str()), Term::atom("x"), DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(err, joerl_dist::CallError::NoProc), "{err:?}");
    erl.stop().await;
    joerl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_on_both_sides() {
    init_tracing();
    let epmd = epmd().await;
    let port = epmd.local_addr().port();
    let joerl = joerl_node("jcookie", epmd.local_addr()).await;
    let mut erl = Erl::start("ecookie", port, "another-cookie", &[]).await;
    erl.expect(&format!("net_adm:ping('{}')", joerl.name()), "{ok,pang}")
        .await;
    let err = joerl.connect(&erl.name).await.unwrap_err();
    assert!(joerl.nodes().is_empty(), "{:?}", joerl.nodes());
    erl.expect("nodes(hidden)", "{ok,[]}").await;
    tracing::info!(%err, "refused as expected");
    erl.stop().await;
    joerl.shutdown().await;
    let _ = Duration::ZERO;
}
