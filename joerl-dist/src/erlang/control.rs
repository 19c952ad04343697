//! Erlang's control messages: the tuple at the head of every distribution
//! message, as a typed enum, to and from [`Term`]s. No I/O.
//!
//! The sequential-trace variants (`*_TT`) are read as their plain variants
//! (the trace token is dropped: joerl does not trace). Control messages this
//! node does not take (`GROUP_LEADER`, `NODE_LINK`, the obsolete `UNLINK`)
//! decode to [`Control::Unsupported`] so the connection can say which and go
//! on.

use super::term::{Atom, ErlPid, ErlRef, Term};

/// A monitored process: by pid, or by registered name (`{Name, Node}` on the
/// monitored node, sent as the bare name atom).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRef {
    /// A process identifier.
    Pid(ErlPid),
    /// A registered name on the receiving node.
    Name(Atom),
}

impl ProcRef {
    fn to_term(&self) -> Term {
        match self {
            ProcRef::Pid(p) => Term::Pid(p.clone()),
            ProcRef::Name(a) => Term::Atom(a.clone()),
        }
    }

    fn from_term(t: &Term, what: &'static str) -> Result<Self, ControlError> {
        match t {
            Term::Pid(p) => Ok(ProcRef::Pid(p.clone())),
            Term::Atom(a) => Ok(ProcRef::Name(a.clone())),
            _ => Err(ControlError::Field(what, "a pid or an atom")),
        }
    }
}

/// One control message.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// `{1, From, To}`: `From` links to `To`.
    Link {
        /// The linking process.
        from: ErlPid,
        /// The process linked to.
        to: ErlPid,
    },
    /// `{2, Unused, To}` (or `SEND_SENDER` `{22, From, To}`), followed by the message.
    Send {
        /// The sender, when the peer said (`SEND_SENDER`).
        from: Option<ErlPid>,
        /// The receiver.
        to: ErlPid,
    },
    /// `{3, From, To, Reason}` or `PAYLOAD_EXIT` (reason as the payload): a
    /// linked process exited.
    Exit {
        /// The exiting process.
        from: ErlPid,
        /// The linked process.
        to: ErlPid,
        /// The exit reason; `None` when it follows as the payload.
        reason: Option<Term>,
    },
    /// `{6, From, Unused, ToName}`, followed by the message.
    RegSend {
        /// The sender.
        from: ErlPid,
        /// The registered name on the receiving node.
        to: Atom,
    },
    /// `{8, From, To, Reason}` or `PAYLOAD_EXIT2`: `exit(To, Reason)`.
    Exit2 {
        /// The process that called `exit/2`.
        from: ErlPid,
        /// The target.
        to: ErlPid,
        /// The reason; `None` when it follows as the payload.
        reason: Option<Term>,
    },
    /// `{19, From, ToProc, Ref}`: `From` monitors `ToProc`.
    MonitorP {
        /// The monitoring process.
        from: ErlPid,
        /// The monitored process, by pid or name.
        to: ProcRef,
        /// The monitor's reference.
        reference: ErlRef,
    },
    /// `{20, From, ToProc, Ref}`: the monitor ends.
    DemonitorP {
        /// The monitoring process.
        from: ErlPid,
        /// The monitored process, by pid or name.
        to: ProcRef,
        /// The monitor's reference.
        reference: ErlRef,
    },
    /// `{21, FromProc, To, Ref, Reason}` or `PAYLOAD_MONITOR_P_EXIT`: the
    /// monitored process went down.
    MonitorPExit {
        /// The monitored process, by pid or name (as it was monitored).
        from: ProcRef,
        /// The monitoring process.
        to: ErlPid,
        /// The monitor's reference.
        reference: ErlRef,
        /// Why; `None` when it follows as the payload.
        reason: Option<Term>,
    },
    /// `{29, ReqId, From, GroupLeader, {M, F, A}, Opts}`, followed by the
    /// arguments: a remote spawn request.
    SpawnRequest {
        /// The request's reference.
        req_id: ErlRef,
        /// The requesting process.
        from: ErlPid,
        /// `{Module, Function, Arity}`.
        mfa: Term,
    },
    /// `{31, ReqId, To, Flags, Result}`: the answer to a spawn request.
    SpawnReply {
        /// The request's reference.
        req_id: ErlRef,
        /// The requesting process.
        to: ErlPid,
        /// Link/monitor flags.
        flags: i64,
        /// The new pid, or an atom saying why not.
        result: Term,
    },
    /// `{33, From, Alias}`, followed by the message: a send to a process alias.
    AliasSend {
        /// The sender.
        from: ErlPid,
        /// The alias (a reference).
        alias: ErlRef,
    },
    /// `{35, Id, From, To}`: `From` unlinks from `To`.
    UnlinkId {
        /// The unlink operation's id.
        id: u64,
        /// The unlinking process.
        from: ErlPid,
        /// The process unlinked from.
        to: ErlPid,
    },
    /// `{36, Id, From, To}`: acknowledges an `UNLINK_ID`.
    UnlinkIdAck {
        /// The acknowledged id.
        id: u64,
        /// The process that received the unlink.
        from: ErlPid,
        /// The process that sent it.
        to: ErlPid,
    },
    /// A control message this node does not act on (its operation number).
    Unsupported(i64),
}

/// Why a term is not a control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Not a tuple whose first element is a small integer.
    #[error("a control message must be a tuple starting with an operation number")]
    NotATuple,
    /// The tuple has the wrong size for its operation.
    #[error("control message {op} has {arity} elements")]
    Arity {
        /// The operation number.
        op: i64,
        /// The tuple's size.
        arity: usize,
    },
    /// A field has the wrong type.
    #[error("control message field {0} must be {1}")]
    Field(&'static str, &'static str),
}

fn pid(t: &Term, what: &'static str) -> Result<ErlPid, ControlError> {
    match t {
        Term::Pid(p) => Ok(p.clone()),
        _ => Err(ControlError::Field(what, "a pid")),
    }
}

fn reference(t: &Term, what: &'static str) -> Result<ErlRef, ControlError> {
    match t {
        Term::Ref(r) => Ok(r.clone()),
        _ => Err(ControlError::Field(what, "a reference")),
    }
}

fn atom(t: &Term, what: &'static str) -> Result<Atom, ControlError> {
    match t {
        Term::Atom(a) => Ok(a.clone()),
        _ => Err(ControlError::Field(what, "an atom")),
    }
}

fn unlink_id(t: &Term) -> Result<u64, ControlError> {
    match t {
        Term::Int(i) if *i > 0 => Ok(*i as u64),
        Term::Big(b) if !b.negative && b.magnitude.len() <= 8 => {
            let mut v = 0u64;
            for (i, byte) in b.magnitude.iter().enumerate() {
                v |= u64::from(*byte) << (8 * i);
            }
            Ok(v)
        }
        _ => Err(ControlError::Field("Id", "an integer in 1..2^64")),
    }
}

fn id_term(id: u64) -> Term {
    match i64::try_from(id) {
        Ok(i) => Term::Int(i),
        Err(_) => Term::Big(super::term::BigInt {
            negative: false,
            magnitude: id.to_le_bytes().to_vec(),
        }),
    }
}

impl Control {
    /// True if a message (or, for exits and downs, a reason) follows the
    /// control message in the same distribution message.
    pub fn has_payload(&self) -> bool {
        match self {
            Control::Send { .. }
            | Control::RegSend { .. }
            | Control::AliasSend { .. }
            | Control::SpawnRequest { .. } => true,
            Control::Exit { reason, .. }
            | Control::Exit2 { reason, .. }
            | Control::MonitorPExit { reason, .. } => reason.is_none(),
            _ => false,
        }
    }

    /// Reads a control message.
    pub fn from_term(t: &Term) -> Result<Control, ControlError> {
        let Term::Tuple(f) = t else {
            return Err(ControlError::NotATuple);
        };
        let Some(Term::Int(op)) = f.first() else {
            return Err(ControlError::NotATuple);
        };
        let op = *op;
        let need = |n: usize| {
            if f.len() == n {
                Ok(())
            } else {
                Err(ControlError::Arity { op, arity: f.len() })
            }
        };
        Ok(match op {
            1 => {
                need(3)?;
                Control::Link {
                    from: pid(&f[1], "FromPid")?,
                    to: pid(&f[2], "ToPid")?,
                }
            }
            // SEND and SEND_TT: the Unused field is not a sender.
            2 | 12 => {
                need(if op == 2 { 3 } else { 4 })?;
                Control::Send {
                    from: None,
                    to: pid(&f[2], "ToPid")?,
                }
            }
            22 | 23 => {
                need(if op == 22 { 3 } else { 4 })?;
                Control::Send {
                    from: Some(pid(&f[1], "FromPid")?),
                    to: pid(&f[2], "ToPid")?,
                }
            }
            3 | 13 => {
                need(if op == 3 { 4 } else { 5 })?;
                Control::Exit {
                    from: pid(&f[1], "FromPid")?,
                    to: pid(&f[2], "ToPid")?,
                    reason: Some(f[f.len() - 1].clone()),
                }
            }
            24 | 25 => {
                need(if op == 24 { 3 } else { 4 })?;
                Control::Exit {
                    from: pid(&f[1], "FromPid")?,
                    to: pid(&f[2], "ToPid")?,
                    reason: None,
                }
            }
            6 | 16 => {
                need(if op == 6 { 4 } else { 5 })?;
                Control::RegSend {
                    from: pid(&f[1], "FromPid")?,
                    to: atom(&f[3], "ToName")?,
                }
            }
            8 | 18 => {
                need(if op == 8 { 4 } else { 5 })?;
                Control::Exit2 {
                    from: pid(&f[1], "FromPid")?,
                    to: pid(&f[2], "ToPid")?,
                    reason: Some(f[f.len() - 1].clone()),
                }
            }
            26 | 27 => {
                need(if op == 26 { 3 } else { 4 })?;
                Control::Exit2 {
                    from: pid(&f[1], "FromPid")?,
                    to: pid(&f[2], "ToPid")?,
                    reason: None,
                }
            }
            19 => {
                need(4)?;
                Control::MonitorP {
                    from: pid(&f[1], "FromPid")?,
                    to: ProcRef::from_term(&f[2], "ToProc")?,
                    reference: reference(&f[3], "Ref")?,
                }
            }
            20 => {
                need(4)?;
                Control::DemonitorP {
                    from: pid(&f[1], "FromPid")?,
                    to: ProcRef::from_term(&f[2], "ToProc")?,
                    reference: reference(&f[3], "Ref")?,
                }
            }
            21 => {
                need(5)?;
                Control::MonitorPExit {
                    from: ProcRef::from_term(&f[1], "FromProc")?,
                    to: pid(&f[2], "ToPid")?,
                    reference: reference(&f[3], "Ref")?,
                    reason: Some(f[4].clone()),
                }
            }
            28 => {
                need(4)?;
                Control::MonitorPExit {
                    from: ProcRef::from_term(&f[1], "FromProc")?,
                    to: pid(&f[2], "ToPid")?,
                    reference: reference(&f[3], "Ref")?,
                    reason: None,
                }
            }
            29 | 30 => {
                need(if op == 29 { 6 } else { 7 })?;
                Control::SpawnRequest {
                    req_id: reference(&f[1], "ReqId")?,
                    from: pid(&f[2], "From")?,
                    mfa: f[4].clone(),
                }
            }
            31 | 32 => {
                need(if op == 31 { 5 } else { 6 })?;
                Control::SpawnReply {
                    req_id: reference(&f[1], "ReqId")?,
                    to: pid(&f[2], "To")?,
                    flags: f[3]
                        .as_int()
                        .ok_or(ControlError::Field("Flags", "an integer"))?,
                    result: f[4].clone(),
                }
            }
            33 | 34 => {
                need(if op == 33 { 3 } else { 4 })?;
                Control::AliasSend {
                    from: pid(&f[1], "FromPid")?,
                    alias: reference(&f[2], "Alias")?,
                }
            }
            35 => {
                need(4)?;
                Control::UnlinkId {
                    id: unlink_id(&f[1])?,
                    from: pid(&f[2], "FromPid")?,
                    to: pid(&f[3], "ToPid")?,
                }
            }
            36 => {
                need(4)?;
                Control::UnlinkIdAck {
                    id: unlink_id(&f[1])?,
                    from: pid(&f[2], "FromPid")?,
                    to: pid(&f[3], "ToPid")?,
                }
            }
            other => Control::Unsupported(other),
        })
    }

    /// The control message as a term. Exits and downs carry their reason in
    /// the tuple when given one, else use the `PAYLOAD_*` form (the reason
    /// follows as the payload). `Unsupported` has no form and gives `None`.
    pub fn to_term(&self) -> Option<Term> {
        let op = |n: i64| Term::Int(n);
        let p = |p: &ErlPid| Term::Pid(p.clone());
        let r = |r: &ErlRef| Term::Ref(r.clone());
        Some(Term::Tuple(match self {
            Control::Link { from, to } => vec![op(1), p(from), p(to)],
            Control::Send { from: None, to } => vec![op(2), Term::atom(""), p(to)],
            Control::Send {
                from: Some(from),
                to,
            } => vec![op(22), p(from), p(to)],
            Control::Exit {
                from,
                to,
                reason: Some(reason),
            } => vec![op(3), p(from), p(to), reason.clone()],
            Control::Exit {
                from,
                to,
                reason: None,
            } => vec![op(24), p(from), p(to)],
            Control::RegSend { from, to } => {
                vec![op(6), p(from), Term::atom(""), Term::Atom(to.clone())]
            }
            Control::Exit2 {
                from,
                to,
                reason: Some(reason),
            } => vec![op(8), p(from), p(to), reason.clone()],
            Control::Exit2 {
                from,
                to,
                reason: None,
            } => vec![op(26), p(from), p(to)],
            Control::MonitorP {
                from,
                to,
                reference,
            } => vec![op(19), p(from), to.to_term(), r(reference)],
            Control::DemonitorP {
                from,
                to,
                reference,
            } => vec![op(20), p(from), to.to_term(), r(reference)],
            Control::MonitorPExit {
                from,
                to,
                reference,
                reason: Some(reason),
            } => vec![op(21), from.to_term(), p(to), r(reference), reason.clone()],
            Control::MonitorPExit {
                from,
                to,
                reference,
                reason: None,
            } => vec![op(28), from.to_term(), p(to), r(reference)],
            Control::SpawnRequest { .. } => return None,
            Control::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => vec![op(31), r(req_id), p(to), Term::Int(*flags), result.clone()],
            Control::AliasSend { from, alias } => vec![op(33), p(from), r(alias)],
            Control::UnlinkId { id, from, to } => vec![op(35), id_term(*id), p(from), p(to)],
            Control::UnlinkIdAck { id, from, to } => {
                vec![op(36), id_term(*id), p(from), p(to)]
            }
            Control::Unsupported(_) => return None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epid(n: u32) -> ErlPid {
        ErlPid {
            node: Atom::new("e@h").unwrap(),
            id: n,
            serial: 0,
            creation: 3,
        }
    }

    fn eref() -> ErlRef {
        ErlRef {
            node: Atom::new("e@h").unwrap(),
            creation: 3,
            ids: vec![1, 2, 3],
        }
    }

    #[test]
    fn every_control_message_round_trips_through_its_term() {
        let all = vec![
            Control::Link {
                from: epid(1),
                to: epid(2),
            },
            Control::Send {
                from: Some(epid(1)),
                to: epid(2),
            },
            Control::Exit {
                from: epid(1),
                to: epid(2),
                reason: Some(Term::atom("boom")),
            },
            Control::Exit {
                from: epid(1),
                to: epid(2),
                reason: None,
            },
            Control::RegSend {
                from: epid(1),
                to: Atom::new("counter").unwrap(),
            },
            Control::Exit2 {
                from: epid(1),
                to: epid(2),
                reason: None,
            },
            Control::MonitorP {
                from: epid(1),
                to: ProcRef::Name(Atom::new("echo").unwrap()),
                reference: eref(),
            },
            Control::DemonitorP {
                from: epid(1),
                to: ProcRef::Pid(epid(2)),
                reference: eref(),
            },
            Control::MonitorPExit {
                from: ProcRef::Pid(epid(2)),
                to: epid(1),
                reference: eref(),
                reason: Some(Term::atom("noproc")),
            },
            Control::MonitorPExit {
                from: ProcRef::Name(Atom::new("echo").unwrap()),
                to: epid(1),
                reference: eref(),
                reason: None,
            },
            Control::SpawnReply {
                req_id: eref(),
                to: epid(1),
                flags: 0,
                result: Term::atom("notsup"),
            },
            Control::AliasSend {
                from: epid(1),
                alias: eref(),
            },
            Control::UnlinkId {
                id: u64::MAX,
                from: epid(1),
                to: epid(2),
            },
            Control::UnlinkIdAck {
                id: 7,
                from: epid(2),
                to: epid(1),
            },
        ];
        for c in all {
            let t = c.to_term().expect("has a form");
            assert_eq!(Control::from_term(&t).unwrap(), c, "{t}");
        }
    }

    #[test]
    fn plain_send_has_no_sender_and_trace_variants_read_as_plain() {
        let t = Term::tuple(vec![Term::Int(2), Term::atom(""), Term::Pid(epid(2))]);
        assert_eq!(
            Control::from_term(&t).unwrap(),
            Control::Send {
                from: None,
                to: epid(2)
            }
        );
        // REG_SEND_TT {16, From, Unused, ToName, Token}.
        let t = Term::tuple(vec![
            Term::Int(16),
            Term::Pid(epid(1)),
            Term::atom(""),
            Term::atom("echo"),
            Term::atom("token"),
        ]);
        assert_eq!(
            Control::from_term(&t).unwrap(),
            Control::RegSend {
                from: epid(1),
                to: Atom::new("echo").unwrap()
            }
        );
    }

    #[test]
    fn malformed_control_messages_are_refused_with_a_reason() {
        for t in [
            Term::atom("x"),
            Term::tuple(vec![]),
            Term::tuple(vec![Term::atom("send")]),
        ] {
            assert_eq!(Control::from_term(&t), Err(ControlError::NotATuple));
        }
        let t = Term::tuple(vec![Term::Int(1), Term::Pid(epid(1))]);
        assert_eq!(
            Control::from_term(&t),
            Err(ControlError::Arity { op: 1, arity: 2 })
        );
        let t = Term::tuple(vec![Term::Int(1), Term::Int(5), Term::Pid(epid(1))]);
        assert!(matches!(
            Control::from_term(&t),
            Err(ControlError::Field("FromPid", _))
        ));
        let t = Term::tuple(vec![Term::Int(7), Term::Pid(epid(1)), Term::Pid(epid(2))]);
        assert_eq!(Control::from_term(&t).unwrap(), Control::Unsupported(7));
        let t = Term::tuple(vec![
            Term::Int(35),
            Term::Int(0),
            Term::Pid(epid(1)),
            Term::Pid(epid(2)),
        ]);
        assert!(
            Control::from_term(&t).is_err(),
            "unlink id 0 is out of range"
        );
    }
}
