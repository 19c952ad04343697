//! The handoff that keeps one activation per identity while membership
//! views differ.
//!
//! An activation starts *claiming*: before its actor starts, it asks the
//! placement server ([`PLACEMENT_SERVER`]) of every other `Active` member in
//! its node's view whether that member runs the identity. A member answers
//! [`ClaimAnswer::Free`] if it runs nothing of it (or only forwards it), or
//! if it runs it and agrees that the claimant owns it: then its activation
//! is first told to hand off (its actor stops, and what reaches it later is
//! forwarded to the claimant), and the answer goes out after that. It
//! answers [`ClaimAnswer::Busy`] if it runs the identity and owns it in its
//! own view, if it is claiming the identity itself, or if the claimant is
//! not an `Active` member in its view. The claimant retries every
//! [`CLAIM_RETRY`] until every member said `Free` (a member without
//! placement, whose server is `noproc`, counts as free), or gives up when
//! its own view no longer makes it the owner: then it forwards what it
//! holds to the owner; without a healthy majority it waits. A member that
//! does not answer is asked again until it answers or its node is `Failed`
//! (left out of the view). Messages that reach a claiming activation wait
//! in its mailbox, in the order they arrived, and are handled once it runs.
//!
//! An activation started on a node that does not own its identity (a
//! sender with a newer view routed a message here early) waits up to
//! [`VIEW_PATIENCE`] for the node's view to make it the owner before it
//! forwards what came; meanwhile it answers `Free` to the member its view
//! says owns the identity. An old owner whose kind implements
//! [`Migrate`](super::Migrate) answers with its state
//! ([`ClaimAnswer::State`]), and keeps a copy for a claim that asks again.
//! A member that has a deduplication window for the identity (exactly-once
//! messages its activation handled) answers [`ClaimAnswer::Handed`] with it
//! (and the state, if any): the claimant adds it to its own window.

use std::sync::Weak;
use std::time::Duration;

use joerl_core::gen_server::{
    CallError, CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef,
};
use joerl_core::{ActorContext, Dest};
use serde::{Deserialize, Serialize};

use super::coordinate::{Command, Delta, GetTable, Snapshot, Version, WantSnapshot};
use super::directives::DirectiveError;
use super::placements::PlacementState;
use super::rendezvous::Identity;

/// The name of the placement server on every node that runs placement.
pub const PLACEMENT_SERVER: &str = "joerl_placement";

/// How long a claimant waits for one member's answer before asking again.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause between two rounds of a claim that some member did not grant.
pub const CLAIM_RETRY: Duration = Duration::from_millis(50);

/// How long an activation whose node does not own its identity waits for
/// the node's view to make it the owner before it forwards what came to
/// the owner (a sender whose view was newer routed it here early).
pub const VIEW_PATIENCE: Duration = Duration::from_secs(2);

/// How long a handed-off activation keeps forwarding after the last message
/// it forwarded (senders with an older view still route to it meanwhile).
pub const FORWARD_LINGER: Duration = Duration::from_secs(5);

/// A member asks whether it may start the identity `(kind, id)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    /// The identity's kind.
    pub kind: String,
    /// The identity's id.
    pub id: String,
    /// The claiming node's name.
    pub claimant: String,
}
impl Request for Claim {
    type Reply = ClaimAnswer;
}

/// The answer to a [`Claim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimAnswer {
    /// Nothing of the identity runs here (any more).
    Free,
    /// Free, and here is the state the activation handed off (its kind
    /// implements [`Migrate`](super::Migrate)): the claimant starts from
    /// it.
    State(HandedState),
    /// It runs or is being claimed here: ask again later.
    Busy,
    /// Free, with what an activation of the identity left here: its state
    /// (if its kind implements [`Migrate`](super::Migrate)) and the
    /// guaranteed messages it handled ([`ExactlyOnce`](super::Guarantee)'s
    /// window), which the claimant adds to its own, so that a copy sent
    /// again after the handoff is not handled twice.
    Handed {
        /// The state, as in [`ClaimAnswer::State`].
        state: Option<HandedState>,
        /// The deduplication window, per sender.
        seen: Vec<super::delivery::SeenBy>,
    },
}

/// The state an activation handed off, with its generation: the number of
/// handoffs with state behind it. A claimant that is given more than one
/// (a copy a forwarder kept, and a newer activation's) starts from the
/// highest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedState {
    /// Handoffs with state before this one.
    pub generation: u64,
    /// The encoded state.
    pub bytes: Vec<u8>,
}

/// A node's placement server tells another's that it runs placement:
/// only members that said hello are placed on (so no identity goes to a
/// member that joined the cluster but has not started placement yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The node that runs placement.
    pub node: String,
    /// An answer to the other's hello (not answered again).
    pub answer: bool,
}
crate::remote_message!(Hello, "joerl::placement::Hello");

/// How often hellos are said again to members that have not answered.
const HELLO_AGAIN: Duration = Duration::from_secs(1);

/// The timer of [`HELLO_AGAIN`] (local only).
struct HelloAgain;

/// Tells an activation to hand off to `to`: its actor stops, and what
/// reaches it afterwards is forwarded there (local only).
pub(crate) struct HandOff {
    /// The new owner.
    pub(crate) to: String,
    /// The claim to answer once handed off.
    pub(crate) reply: Option<ReplyTo<ClaimAnswer>>,
}

/// How a claim ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// Every other member said free: run the actor (from the state handed
    /// off, if one came).
    Owner(Option<HandedState>),
    /// Another member owns the identity now: forward to it (and keep the
    /// state that came for it).
    Moved(String, Option<HandedState>),
    /// Placement or the node stopped: stop.
    Refused(String),
}

/// The placement server: answers claims for this node's activations.
pub(crate) struct ClaimServer {
    pub(crate) state: Weak<PlacementState>,
}

impl GenServer for ClaimServer {
    type Calls = (
        Claim,
        Command,
        GetTable,
        crate::cluster::management::ListActivations,
    );
    type Casts = ();

    async fn init(&mut self, ctx: &mut ActorContext) {
        ctx.send_after(ctx.pid(), HelloAgain, HELLO_AGAIN);
    }

    async fn handle_info(&mut self, msg: joerl_core::Message, ctx: &mut ActorContext) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        if msg.is::<HelloAgain>() {
            state.hello_again();
            state.leader_tick().await;
            ctx.send_after(ctx.pid(), HelloAgain, HELLO_AGAIN);
            return;
        }
        let msg = match msg.downcast::<Hello>() {
            Ok(h) => return state.hello_from(&h.node, h.answer),
            Err(m) => m,
        };
        let msg = match msg.downcast::<Delta>() {
            Ok(d) => return state.on_delta(*d),
            Err(m) => m,
        };
        let msg = match msg.downcast::<Snapshot>() {
            Ok(s) => return state.on_snapshot(*s),
            Err(m) => m,
        };
        let msg = match msg.downcast::<Version>() {
            Ok(v) => return state.on_version(*v),
            Err(m) => m,
        };
        if let Ok(w) = msg.downcast::<WantSnapshot>() {
            state.on_want_snapshot(*w);
        }
    }
}
crate::remote_server!(ClaimServer);

impl ClaimServer {
    /// The activations running on this node now.
    pub(crate) fn activations(&self) -> Vec<super::placements::ActivationInfo> {
        self.state
            .upgrade()
            .map(|s| s.local_activations())
            .unwrap_or_default()
    }
}

impl HandleCall<Claim> for ClaimServer {
    async fn handle_call(
        &mut self,
        claim: Claim,
        from: ReplyTo<ClaimAnswer>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<ClaimAnswer> {
        let Some(state) = self.state.upgrade() else {
            return CallResponse::Reply(ClaimAnswer::Free);
        };
        let identity = Identity::new(claim.kind, claim.id);
        state.answer_claim(&identity, &claim.claimant, from)
    }
}

impl HandleCall<Command> for ClaimServer {
    async fn handle_call(
        &mut self,
        command: Command,
        _from: ReplyTo<Result<u64, DirectiveError>>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Result<u64, DirectiveError>> {
        let Some(state) = self.state.upgrade() else {
            return CallResponse::Reply(Err(DirectiveError::NoLeader));
        };
        CallResponse::Reply(state.command(command.op).await)
    }
}

impl HandleCall<GetTable> for ClaimServer {
    async fn handle_call(
        &mut self,
        _req: GetTable,
        _from: ReplyTo<super::directives::Table>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<super::directives::Table> {
        let table = self.state.upgrade().map(|s| s.table()).unwrap_or_default();
        CallResponse::Reply(table)
    }
}

/// Claims `identity` for this node (see the module's documentation).
pub(crate) async fn claim(state: &Weak<PlacementState>, identity: &Identity) -> Claimed {
    let store = state.upgrade().and_then(|s| s.store_placement().cloned());
    if let Some(store) = store {
        return super::stored::claim(state, &store, identity).await;
    }
    // The state a member handed off, kept across rounds.
    let mut carried: Option<HandedState> = None;
    let patience = tokio::time::Instant::now() + VIEW_PATIENCE;
    loop {
        let (system, others, me) = {
            let Some(s) = state.upgrade() else {
                return Claimed::Refused("placement stopped".into());
            };
            match s.owner_of(identity) {
                Ok(o) if o == s.me() => {}
                // Another member owns it in this view: wait a moment for
                // the view to change (the message came early), then
                // forward.
                Ok(_) if tokio::time::Instant::now() < patience => {
                    drop(s);
                    tokio::time::sleep(CLAIM_RETRY).await;
                    continue;
                }
                Ok(o) => return Claimed::Moved(o, carried),
                // No majority for now: wait (what came waits too) until
                // there is one, or the activation is stopped.
                Err(_) => {
                    drop(s);
                    tokio::time::sleep(CLAIM_RETRY).await;
                    continue;
                }
            }
            let Some(system) = s.system() else {
                return Claimed::Refused("the node stopped".into());
            };
            (system, s.others(), s.me().to_string())
        };
        if others.is_empty() {
            return Claimed::Owner(carried);
        }
        let mut calls = tokio::task::JoinSet::new();
        for node in others {
            let system = system.clone();
            let claim = Claim {
                kind: identity.kind.clone(),
                id: identity.id.clone(),
                claimant: me.clone(),
            };
            calls.spawn(async move {
                let server: ServerRef<ClaimServer> = ServerRef::new(Dest::Remote {
                    name: PLACEMENT_SERVER.to_string(),
                    node,
                });
                system.call_timeout(&server, claim, CLAIM_TIMEOUT).await
            });
        }
        let mut granted = true;
        while let Some(r) = calls.join_next().await {
            match r {
                Ok(Ok(ClaimAnswer::Free)) => {}
                Ok(Ok(ClaimAnswer::State(s))) => {
                    if carried.as_ref().is_none_or(|c| c.generation < s.generation) {
                        carried = Some(s);
                    }
                }
                Ok(Ok(ClaimAnswer::Handed { state: s, seen })) => {
                    // Taken now, whatever this round's outcome: those
                    // messages were handled.
                    if let Some(st) = state.upgrade() {
                        st.merge_seen(identity, &seen);
                    }
                    if let Some(s) = s {
                        if carried.as_ref().is_none_or(|c| c.generation < s.generation) {
                            carried = Some(s);
                        }
                    }
                }
                // A member without placement runs nothing placed.
                Ok(Err(CallError::NoProc)) => {}
                _ => granted = false,
            }
        }
        if granted {
            // Every member said free after this claim began; the view may
            // have changed during the round.
            let Some(s) = state.upgrade() else {
                return Claimed::Refused("placement stopped".into());
            };
            return match s.owner_of(identity) {
                Ok(o) if o == s.me() => Claimed::Owner(carried),
                Ok(o) => Claimed::Moved(o, carried),
                Err(_) => continue,
            };
        }
        if let Some(s) = state.upgrade() {
            s.count_claim_retry();
        }
        tokio::time::sleep(CLAIM_RETRY).await;
    }
}
