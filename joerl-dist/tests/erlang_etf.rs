//! The ETF codec against a real Erlang/OTP node (`erl`), which is the
//! authority on what the bytes mean.
//!
//! One `erl -noshell` process runs a small command loop (the program in
//! [`ERL_LOOP`]) that reads one hex-encoded request a line and answers one
//! line:
//!
//! ```text
//! R <term>          -> OK <term_to_binary(T)> <term_to_binary(T, [{minor_version, 2}])>
//! E <term> <term>   -> true | false          (the two terms are =:=)
//! X <term> <expr>   -> OK <term_to_binary(Value)>  (expr evaluated with T bound to the term)
//! G                 -> N <count>, then count lines: label default v2 v0 compressed ~tw
//! Q                 -> BYE, and erl halts
//! ```
//!
//! Every field after the command is hex; a failure answers `ERR <reason>`.
//! Without `erl` on the PATH the test prints why and passes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use joerl_dist::erlang::etf::{self, EtfError};
use joerl_dist::erlang::{
    Atom, BigInt, ErlPid, ErlPort, ErlRef, Term, from_term, to_term, to_term_with,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

const ERL_LOOP: &str = r#"
Hex = fun(B) -> binary_to_list(binary:encode_hex(B)) end,
Unhex = fun(S) -> binary:decode_hex(list_to_binary(S)) end,
Eval = fun(Src, T) ->
    {ok, Toks, _} = erl_scan:string(Src),
    {ok, Exprs} = erl_parse:parse_exprs(Toks),
    {value, V, _} = erl_eval:exprs(Exprs, erl_eval:add_binding('T', T, erl_eval:new_bindings())),
    V
end,
Samples = fun() ->
    Free = 42,
    [{atom_hello, hello},
     {atom_latin1, 'h\x{e9}llo'},
     {atom_cjk, list_to_atom([20320, 22909])},
     {atom_quoted, 'Hello World'},
     {atom_long, list_to_atom(lists:duplicate(255, 20320))},
     {atom_empty, ''},
     {pid_self, self()},
     {pid_listed, list_to_pid("<0.10.20>")},
     {ref, make_ref()},
     {ref_alias, alias()},
     {port, hd(erlang:ports())},
     {fun_local, fun() -> ok end},
     {fun_free, fun(X) -> X + Free end},
     {export, fun lists:map/2},
     {int_0, 0}, {int_255, 255}, {int_256, 256}, {int_m1, -1},
     {int_i32max, 2147483647}, {int_over_i32, 2147483648},
     {int_i32min, -2147483648}, {int_under_i32, -2147483649},
     {int_i64max, (1 bsl 63) - 1}, {int_i64min, -(1 bsl 63)},
     {big_over_i64, 1 bsl 63}, {big_under_i64, -(1 bsl 63) - 1},
     {big_200, 1 bsl 200}, {big_neg_70, -(1 bsl 70)}, {big_2100, 1 bsl 2100},
     {float_plain, 2.75}, {float_neg, -0.5}, {float_huge, 1.0e300},
     {float_denormal, 5.0e-324}, {float_zero, 0.0},
     {bits_3, <<1:3>>}, {bits_long, <<1, 2, 3:5>>},
     {bin_empty, <<>>}, {bin, <<"bin">>},
     {map_small, #{a => 1, <<"k">> => [1, 2]}},
     {map_large, maps:from_list([{I, I * I} || I <- lists:seq(1, 40)])},
     {map_nested, #{a => #{b => {c}}, [] => #{}}},
     {improper, [1, 2 | 3]}, {improper_atoms, [a | b]},
     {string, "hello"}, {string_unicode, [20320, 22909]},
     {nil, []}, {list_ints, [1000, 2000]}, {list_mixed, [a, "b", <<"c">>, 1.5]},
     {tuple_empty, {}}, {tuple_pair, {a, 1}},
     {tuple_large, list_to_tuple(lists:seq(1, 300))},
     {string_long, lists:duplicate(70000, $a)}]
end,
Line = fun(L, T) ->
    [atom_to_list(L), " ", Hex(term_to_binary(T)),
     " ", Hex(term_to_binary(T, [{minor_version, 2}])),
     " ", Hex(term_to_binary(T, [{minor_version, 0}])),
     " ", Hex(term_to_binary(T, [compressed])),
     " ", Hex(unicode:characters_to_binary(io_lib:format("~tw", [T])))]
end,
Handle = fun
    (["R", H]) ->
        T = binary_to_term(Unhex(H)),
        ["OK ", Hex(term_to_binary(T)), " ", Hex(term_to_binary(T, [{minor_version, 2}]))];
    (["E", A, B]) ->
        atom_to_list(binary_to_term(Unhex(A)) =:= binary_to_term(Unhex(B)));
    (["X", H, E]) ->
        T = binary_to_term(Unhex(H)),
        ["OK ", Hex(term_to_binary(Eval(binary_to_list(Unhex(E)), T)))];
    (["G"]) ->
        S = Samples(),
        [io_lib:format("N ~b", [length(S)]) | [["\n", Line(L, T)] || {L, T} <- S]];
    (["Q"]) ->
        "BYE"
end,
Loop = fun Loop() ->
    case io:get_line("") of
        eof -> halt(0);
        In ->
            Reply = try Handle(string:lexemes(string:trim(In), " "))
                    catch C:R -> ["ERR ", io_lib:format("~w:~w", [C, R])] end,
            io:put_chars([Reply, "\n"]),
            case Reply of
                "BYE" -> halt(0);
                _ -> Loop()
            end
    end
end,
Loop().
"#;

/// Answers can take long on a loaded machine; a hung `erl` must still fail
/// the test rather than hang it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

struct Erl {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Erl {
    /// The `erl` command loop, or `None` when `erl` is not installed.
    fn start() -> Option<Erl> {
        let spawned = Command::new("erl")
            .args(["-noshell", "-eval", ERL_LOOP])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot start erl: {e}"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Some(Erl {
            child,
            stdin,
            lines,
        })
    }

    fn line(&self) -> String {
        match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("erl did not answer in {ANSWER_TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("erl exited"),
        }
    }

    fn ask(&mut self, request: &str) -> String {
        let stdin = self.stdin.as_mut().expect("erl's stdin is open");
        writeln!(stdin, "{request}").expect("write to erl");
        stdin.flush().expect("flush to erl");
        self.line()
    }

    /// Erl's two re-encodings of our encoding of `t`.
    fn round_trip(&mut self, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let answer = self.ask(&format!("R {}", hex(bytes)));
        let mut f = answer.split(' ');
        match (f.next(), f.next(), f.next()) {
            (Some("OK"), Some(a), Some(b)) => Ok((unhex(a), unhex(b))),
            _ => Err(answer),
        }
    }

    /// Whether erl finds the two encodings the same term (`=:=`).
    fn same(&mut self, a: &[u8], b: &[u8]) -> bool {
        match self.ask(&format!("E {} {}", hex(a), hex(b))).as_str() {
            "true" => true,
            "false" => false,
            other => panic!("erl: {other}"),
        }
    }

    /// The value of the Erlang expression `expr` with `T` bound to `t`.
    fn eval(&mut self, t: &Term, expr: &str) -> Term {
        let answer = self.ask(&format!(
            "X {} {}",
            hex(&etf::encode(t)),
            hex(expr.as_bytes())
        ));
        let bytes = answer
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("erl evaluating {expr} on {t}: {answer}"));
        etf::decode(&unhex(bytes)).expect("erl's answer decodes")
    }

    /// Erlang's sample terms: label, then default, minor version 2, minor
    /// version 0 and compressed encodings, then its `~tw` text.
    fn samples(&mut self) -> Vec<(String, [Vec<u8>; 4], String)> {
        let head = self.ask("G");
        let n: usize = head
            .strip_prefix("N ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("erl: {head}"));
        (0..n)
            .map(|_| {
                let line = self.line();
                let f: Vec<&str> = line.split(' ').collect();
                assert_eq!(f.len(), 6, "sample line {line}");
                let text = String::from_utf8(unhex(f[5])).expect("~tw is UTF-8");
                (
                    f[0].to_string(),
                    [unhex(f[1]), unhex(f[2]), unhex(f[3]), unhex(f[4])],
                    text,
                )
            })
            .collect()
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        // Ask it to quit; if it does not answer, kill it. Wait in both cases.
        let said_bye = self
            .stdin
            .as_mut()
            .is_some_and(|s| writeln!(s, "Q").is_ok())
            && self.stdin.as_mut().is_some_and(|s| s.flush().is_ok())
            && matches!(self.lines.recv_timeout(Duration::from_secs(10)), Ok(l) if l == "BYE");
        drop(self.stdin.take());
        if !said_bye {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn atom(s: &str) -> Atom {
    Atom::new(s).unwrap()
}

/// True if Erlang's `~tw` and our Display must agree on `t`: no floats (whose
/// shortest form may differ), no pids, references, ports or funs (printed
/// differently on purpose), no large maps (whose order `~tw` does not take
/// from the encoding).
fn display_comparable(t: &Term) -> bool {
    match t {
        Term::Float(_) | Term::Pid(_) | Term::Ref(_) | Term::Port(_) | Term::Fun(_) => false,
        Term::Tuple(items) | Term::List(items) => items.iter().all(display_comparable),
        Term::ImproperList(items, tail) => {
            items.iter().all(display_comparable) && display_comparable(tail)
        }
        Term::Map(pairs) => {
            pairs.len() <= 32
                && pairs
                    .iter()
                    .all(|(k, v)| display_comparable(k) && display_comparable(v))
        }
        _ => true,
    }
}

/// What each of Erlang's samples must decode to, where the value is known.
fn expected_samples() -> HashMap<&'static str, Term> {
    let mut big200 = vec![0u8; 25];
    big200.push(1);
    let mut neg70 = vec![0u8; 8];
    neg70.push(64);
    let mut big2100 = vec![0u8; 262];
    big2100.push(16);
    let mut m = HashMap::new();
    m.insert("atom_hello", Term::atom("hello"));
    m.insert("atom_latin1", Term::atom("héllo"));
    m.insert("atom_cjk", Term::atom("你好"));
    m.insert("atom_quoted", Term::atom("Hello World"));
    m.insert("atom_long", Term::atom(&"你".repeat(255)));
    m.insert("atom_empty", Term::atom(""));
    m.insert(
        "export",
        Term::Export {
            module: atom("lists"),
            function: atom("map"),
            arity: 2,
        },
    );
    for (k, v) in [
        ("int_0", 0i64),
        ("int_255", 255),
        ("int_256", 256),
        ("int_m1", -1),
        ("int_i32max", 2147483647),
        ("int_over_i32", 2147483648),
        ("int_i32min", -2147483648),
        ("int_under_i32", -2147483649),
        ("int_i64max", i64::MAX),
        ("int_i64min", i64::MIN),
    ] {
        m.insert(k, Term::Int(v));
    }
    m.insert("big_over_i64", Term::from(1i128 << 63));
    m.insert("big_under_i64", Term::from(-(1i128 << 63) - 1));
    m.insert("big_200", Term::Big(BigInt::new(false, big200)));
    m.insert("big_neg_70", Term::Big(BigInt::new(true, neg70)));
    m.insert("big_2100", Term::Big(BigInt::new(false, big2100)));
    for (k, v) in [
        ("float_plain", 2.75f64),
        ("float_neg", -0.5),
        ("float_huge", 1.0e300),
        ("float_denormal", 5.0e-324),
        ("float_zero", 0.0),
    ] {
        m.insert(k, Term::Float(v));
    }
    m.insert(
        "bits_3",
        Term::BitBinary {
            bytes: vec![0b0010_0000],
            bits: 3,
        },
    );
    m.insert(
        "bits_long",
        Term::BitBinary {
            bytes: vec![1, 2, 3 << 3],
            bits: 5,
        },
    );
    m.insert("bin_empty", Term::binary(vec![]));
    m.insert("bin", Term::binary(*b"bin"));
    m.insert(
        "map_small",
        Term::map(vec![
            (
                Term::binary(*b"k"),
                Term::list(vec![Term::Int(1), Term::Int(2)]),
            ),
            (Term::atom("a"), Term::Int(1)),
        ]),
    );
    m.insert(
        "map_large",
        Term::map((1..=40).map(|i| (Term::Int(i), Term::Int(i * i))).collect()),
    );
    m.insert(
        "map_nested",
        Term::map(vec![
            (
                Term::atom("a"),
                Term::map(vec![(Term::atom("b"), Term::tuple(vec![Term::atom("c")]))]),
            ),
            (Term::nil(), Term::map(vec![])),
        ]),
    );
    m.insert(
        "improper",
        Term::ImproperList(vec![Term::Int(1), Term::Int(2)], Box::new(Term::Int(3))),
    );
    m.insert(
        "improper_atoms",
        Term::ImproperList(vec![Term::atom("a")], Box::new(Term::atom("b"))),
    );
    let chars = |s: &str| Term::list(s.chars().map(|c| Term::Int(c as i64)).collect());
    m.insert("string", chars("hello"));
    m.insert("string_unicode", chars("你好"));
    m.insert("string_long", chars(&"a".repeat(70000)));
    m.insert("nil", Term::nil());
    m.insert(
        "list_ints",
        Term::list(vec![Term::Int(1000), Term::Int(2000)]),
    );
    m.insert(
        "list_mixed",
        Term::list(vec![
            Term::atom("a"),
            chars("b"),
            Term::binary(*b"c"),
            Term::Float(1.5),
        ]),
    );
    m.insert("tuple_empty", Term::tuple(vec![]));
    m.insert(
        "tuple_pair",
        Term::tuple(vec![Term::atom("a"), Term::Int(1)]),
    );
    m.insert(
        "tuple_large",
        Term::tuple((1..=300).map(Term::Int).collect()),
    );
    m
}

/// Decodes each of Erlang's sample terms in all its encodings, checks the
/// known ones, and has Erlang confirm that our re-encoding is the same term.
/// Returns the funs, for the random terms.
fn check_erlang_samples(erl: &mut Erl) -> Vec<Term> {
    let expected = expected_samples();
    let samples = erl.samples();
    assert!(samples.len() >= expected.len());
    let mut funs = Vec::new();
    for (label, [default, v2, v0, compressed], text) in &samples {
        let t = etf::decode(default).unwrap_or_else(|e| panic!("{label}: {e} in {default:?}"));
        assert_eq!(etf::decode(v2).as_ref(), Ok(&t), "{label}: minor version 2");
        assert_eq!(etf::decode(v0).as_ref(), Ok(&t), "{label}: minor version 0");
        if compressed.get(1) == Some(&etf::COMPRESSED) {
            assert!(
                matches!(
                    etf::decode(compressed),
                    Err(EtfError::Unsupported { offset: 1, .. })
                ),
                "{label}: compressed"
            );
        } else {
            assert_eq!(etf::decode(compressed).as_ref(), Ok(&t), "{label}");
        }
        if let Some(want) = expected.get(label.as_str()) {
            assert_eq!(&t, want, "{label}");
        }
        let ours = etf::encode(&t);
        assert!(
            erl.same(&ours, default),
            "{label}: erl reads {t} back differently"
        );
        if display_comparable(&t) {
            assert_eq!(&t.to_string(), text, "{label}: Display");
        }
        match label.as_str() {
            "atom_hello" => {
                // OTP 25's default writes latin-1 atoms; minor version 2, UTF-8.
                assert_eq!(default, &[131, 100, 0, 5, 104, 101, 108, 108, 111]);
                assert_eq!(v2, &[131, 119, 5, 104, 101, 108, 108, 111]);
                assert_eq!(ours, *v2);
            }
            "pid_self" | "pid_listed" => {
                let Term::Pid(p) = &t else {
                    panic!("{label}: {t}")
                };
                assert_eq!(p.node, "nonode@nohost");
                if label == "pid_listed" {
                    assert_eq!((p.id, p.serial), (10, 20));
                }
                assert_eq!(ours, *v2, "{label}: NEW_PID_EXT as erl writes it");
            }
            "ref" | "ref_alias" => assert!(matches!(&t, Term::Ref(r) if r.ids.len() == 3)),
            "port" => assert!(matches!(&t, Term::Port(_))),
            "fun_local" | "fun_free" => {
                assert!(matches!(&t, Term::Fun(_)), "{label}: {t}");
                assert_eq!(
                    &ours, v2,
                    "{label}: a fun is written as erl writes it with UTF-8 atoms"
                );
                assert!(t.to_string().starts_with("#Fun<erl_eval."), "{t}");
                funs.push(t.clone());
            }
            "big_2100" => assert_eq!(default[1], etf::LARGE_BIG_EXT),
            "atom_long" => assert_eq!(v2[1], etf::ATOM_UTF8_EXT),
            "float_plain" => assert_eq!(v0[1], etf::FLOAT_EXT),
            _ => {}
        }
    }
    for label in expected.keys() {
        assert!(
            samples.iter().any(|(l, ..)| l == label),
            "erl sent no sample {label}"
        );
    }
    funs
}

/// Erlang reads our pids, references and ports with the node we gave them.
fn check_node_names(erl: &mut Erl) {
    let node = atom("joerl_test@somehost");
    let pid = Term::Pid(ErlPid {
        node: node.clone(),
        id: 0xdead_beef,
        serial: 7,
        creation: 0x1234_5678,
    });
    let port = Term::Port(ErlPort {
        node: node.clone(),
        id: 1 << 40,
        creation: 9,
    });
    let port32 = Term::Port(ErlPort {
        node: node.clone(),
        id: 12,
        creation: 9,
    });
    let reference = Term::Ref(ErlRef {
        node: node.clone(),
        creation: 3,
        ids: vec![1, 2, 3, 4, 5],
    });
    let tagged = |kind: &str| {
        Term::tuple(vec![
            Term::Atom(node.clone()),
            Term::atom("true"),
            Term::atom(kind),
        ])
    };
    assert_eq!(erl.eval(&pid, "{node(T), is_pid(T), pid}."), tagged("pid"));
    assert_eq!(
        erl.eval(&port, "{node(T), is_port(T), port}."),
        tagged("port")
    );
    assert_eq!(
        erl.eval(&port32, "{node(T), is_port(T), port}."),
        tagged("port")
    );
    assert_eq!(
        erl.eval(&reference, "{node(T), is_reference(T), ref}."),
        tagged("ref")
    );
    // Erlang sees the same numbers: NEW_PID_EXT is written back unchanged.
    let bytes = etf::encode(&pid);
    let (default, v2) = erl.round_trip(&bytes).unwrap();
    assert_eq!(etf::decode(&default).unwrap(), pid);
    assert_eq!(v2, bytes);
    assert_eq!(
        erl.eval(&Term::atom("héllo"), "atom_to_list(T)."),
        Term::list("héllo".chars().map(|c| Term::Int(c as i64)).collect())
    );
}

struct Gen<'a> {
    rng: StdRng,
    funs: &'a [Term],
}

impl Gen<'_> {
    fn atom(&mut self) -> Atom {
        const ALPHABETS: &[&str] = &[
            "abcdefghijklmnopqrstuvwxyz_@",
            "ABCxyz09 '\\\n\t\"",
            "éßÿÀ×÷ñ",
            "你好世界ひらがなπ😀",
        ];
        let len = match self.rng.random_range(0..20) {
            0 => 255,
            1 => 0,
            _ => self.rng.random_range(1..12),
        };
        let mut s = String::new();
        for _ in 0..len {
            let alphabet: Vec<char> = ALPHABETS[self.rng.random_range(0..ALPHABETS.len())]
                .chars()
                .collect();
            s.push(alphabet[self.rng.random_range(0..alphabet.len())]);
        }
        Atom::new(&s).unwrap()
    }

    fn node(&mut self) -> Atom {
        let n = self.rng.random_range(0..50);
        atom(&format!("n{n}@host{}", n % 3))
    }

    fn leaf(&mut self) -> Term {
        match self.rng.random_range(0..11) {
            0 => Term::Atom(self.atom()),
            1 => Term::Int(match self.rng.random_range(0..4) {
                0 => self.rng.random_range(0..256),
                1 => i64::from(self.rng.random::<i32>()),
                2 => self.rng.random(),
                _ => [i64::MIN, i64::MAX, -1, 0][self.rng.random_range(0..4)],
            }),
            2 => {
                let n = if self.rng.random_bool(0.05) {
                    self.rng.random_range(256..300)
                } else {
                    self.rng.random_range(9..40)
                };
                let mut m: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                *m.last_mut().unwrap() = self.rng.random_range(1..=255);
                Term::Big(BigInt::new(self.rng.random(), m))
            }
            3 => Term::Float(loop {
                let f = f64::from_bits(self.rng.random());
                if f.is_finite() {
                    break f;
                }
            }),
            4 => Term::binary(
                (0..self.rng.random_range(0..20))
                    .map(|_| self.rng.random::<u8>())
                    .collect::<Vec<u8>>(),
            ),
            5 => {
                let bits = self.rng.random_range(1..=7u8);
                let mut bytes: Vec<u8> = (0..self.rng.random_range(1..6))
                    .map(|_| self.rng.random())
                    .collect();
                *bytes.last_mut().unwrap() &= 0xffu8 << (8 - bits);
                Term::BitBinary { bytes, bits }
            }
            6 => Term::Pid(ErlPid {
                node: self.node(),
                id: self.rng.random(),
                serial: self.rng.random(),
                creation: self.rng.random(),
            }),
            7 => Term::Ref(ErlRef {
                node: self.node(),
                creation: self.rng.random(),
                ids: (0..self.rng.random_range(1..=5))
                    .map(|_| self.rng.random())
                    .collect(),
            }),
            8 => Term::Port(ErlPort {
                node: self.node(),
                id: if self.rng.random() {
                    u64::from(self.rng.random::<u32>())
                } else {
                    self.rng.random()
                },
                creation: self.rng.random(),
            }),
            9 => Term::Export {
                module: self.atom(),
                function: self.atom(),
                arity: self.rng.random(),
            },
            _ if !self.funs.is_empty() => {
                self.funs[self.rng.random_range(0..self.funs.len())].clone()
            }
            _ => Term::nil(),
        }
    }

    fn term(&mut self, depth: usize) -> Term {
        if depth == 0 || self.rng.random_bool(0.4) {
            return self.leaf();
        }
        let n = self.rng.random_range(0..5);
        match self.rng.random_range(0..6) {
            0 => Term::tuple((0..n).map(|_| self.term(depth - 1)).collect()),
            1 => Term::list((0..n).map(|_| self.term(depth - 1)).collect()),
            // A charlist, which travels as STRING_EXT.
            2 => Term::list(
                (0..n * 3)
                    .map(|_| Term::Int(self.rng.random_range(0..256)))
                    .collect(),
            ),
            3 => {
                let tail = loop {
                    let t = self.term(depth - 1);
                    if !matches!(t, Term::List(_) | Term::ImproperList(..)) {
                        break t;
                    }
                };
                Term::ImproperList(
                    (0..n + 1).map(|_| self.term(depth - 1)).collect(),
                    Box::new(tail),
                )
            }
            4 => {
                // Erlang refuses a map with a repeated key.
                let n = if self.rng.random_bool(0.05) { 40 } else { n };
                let mut pairs: Vec<(Term, Term)> = Vec::new();
                while pairs.len() < n {
                    let k = self.term(depth - 1);
                    if !pairs.iter().any(|(old, _)| *old == k) {
                        pairs.push((k, self.term(depth - 1)));
                    }
                }
                Term::map(pairs)
            }
            _ => Term::tuple(vec![Term::Atom(self.atom()), self.term(depth - 1)]),
        }
    }
}

/// Random terms survive our encoding, Erlang's decoding and re-encoding (in
/// both minor versions), and our decoding.
fn check_random_terms(erl: &mut Erl, funs: &[Term], count: usize, seed: u64) {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        funs,
    };
    for i in 0..count {
        let t = g.term(6);
        let bytes = etf::encode(&t);
        let ctx = || format!("term {i} of seed {seed} (JOERL_ETF_SEED={seed} to repeat): {t}");
        assert_eq!(
            etf::decode(&bytes).as_ref(),
            Ok(&t),
            "our own round trip, {}",
            ctx()
        );
        let (default, v2) = erl
            .round_trip(&bytes)
            .unwrap_or_else(|e| panic!("erl: {e}, {}", ctx()));
        assert_eq!(
            etf::decode(&default).as_ref(),
            Ok(&t),
            "erl's default, {}",
            ctx()
        );
        assert_eq!(
            etf::decode(&v2).as_ref(),
            Ok(&t),
            "erl's minor version 2, {}",
            ctx()
        );
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Named {
    n: u32,
    name: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "#point")]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f64),
    Resize { w: u32, h: u32 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Req {
    from: joerl_dist::Pid,
    n: u32,
}

/// Values serialized by us are matched by Erlang patterns, and terms written
/// in Erlang read back as the Rust values.
fn check_serde_shapes(erl: &mut Erl) {
    let named = to_term(&Named {
        n: 5,
        name: "x".into(),
    })
    .unwrap();
    assert_eq!(
        erl.eval(&named, "#{n := 5, name := <<\"x\">>} = T, ok."),
        Term::atom("ok")
    );
    let point = to_term(&Point { x: 1, y: -2 }).unwrap();
    assert_eq!(
        erl.eval(&point, "{point, 1, -2} = T, ok."),
        Term::atom("ok")
    );
    let node = Atom::new("joerl_a@127.0.0.1").unwrap();
    let node_id = joerl_dist::core::node_id(node.as_str());
    let pid = joerl_dist::Pid::new(node_id, (3 << 32) | 77, 5);
    let names = |id: u32| (id == node_id).then(|| node.clone());
    let req = to_term_with(&Req { from: pid, n: 4 }, &names).unwrap();
    assert_eq!(
        erl.eval(&req, "#{from := P, n := 4} = T, {node(P), is_pid(P)}."),
        Term::tuple(vec![Term::Atom(node.clone()), Term::atom("true")])
    );
    // Erlang sends it back with its own encoding; it is the same Pid.
    let back = erl.eval(&req, "T.");
    assert_eq!(from_term::<Req>(&back).unwrap(), Req { from: pid, n: 4 });
    let any = Term::nil();
    for (erlang, rust) in [
        ("empty", Shape::Empty),
        ("{circle, 1.5}", Shape::Circle(1.5)),
        ("{resize, #{w => 2, h => 3}}", Shape::Resize { w: 2, h: 3 }),
    ] {
        let theirs = erl.eval(&any, &format!("{erlang}."));
        assert_eq!(from_term::<Shape>(&theirs).unwrap(), rust);
        let ours = to_term(&rust).unwrap();
        assert_eq!(
            erl.eval(&ours, &format!("T =:= {erlang}.")),
            Term::atom("true"),
            "erl finds {ours} is not {erlang}"
        );
    }
    assert_eq!(
        from_term::<Point>(&erl.eval(&any, "{point, 3, 4}.")).unwrap(),
        Point { x: 3, y: 4 }
    );
    assert_eq!(
        from_term::<Named>(&erl.eval(&any, "#{name => \"charlist\", n => 1}.")).unwrap(),
        Named {
            n: 1,
            name: "charlist".into()
        }
    );
}

#[test]
fn etf_agrees_with_erlang() {
    let started = Instant::now();
    let Some(mut erl) = Erl::start() else {
        println!("erl is not on the PATH: skipping the Erlang/OTP oracle test");
        return;
    };
    let funs = check_erlang_samples(&mut erl);
    assert_eq!(funs.len(), 2);
    check_node_names(&mut erl);
    check_serde_shapes(&mut erl);
    let seed = std::env::var("JOERL_ETF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("random terms with JOERL_ETF_SEED={seed}");
    check_random_terms(&mut erl, &funs, 2000, seed);
    drop(erl);
    println!("done in {:?}", started.elapsed());
}
