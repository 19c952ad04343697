//! Actor kinds that may be placed in the cluster, registered at compile
//! time next to the type:
//!
//! ```
//! use joerl_dist::{Actor, ActorContext, Message, placed};
//! use joerl_dist::cluster::placement::PlacedActor;
//!
//! struct Counter { id: String, n: u64 }
//! impl Actor for Counter {
//!     async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) { self.n += 1; }
//! }
//! impl PlacedActor for Counter {
//!     fn activate(id: &str) -> Self { Counter { id: id.to_string(), n: 0 } }
//! }
//! placed!(Counter, "app::Counter");
//! ```
//!
//! An activation runs inside a small wrapper that claims its identity
//! before the actor starts (see [`handoff`](super::handoff)), hands it off
//! (stops the actor and forwards what comes later) when another member
//! owns it, and passivates it (stops it normally) after the kind's idle
//! time without a message.

use std::sync::{Arc, Weak};
use std::time::Duration;

use joerl_core::gen_server::{GenServer, GenServerActor};
use joerl_core::{
    Actor, ActorContext, ActorSystem, Dest, ExitReason, Message, Pid, SpawnError, SpawnOptions,
};

use super::delivery::{Ack, Guarantee, Reliable};
use super::handoff::{ClaimAnswer, Claimed, FORWARD_LINGER, HandOff, HandedState, claim};
use super::placements::{Phase, PlacementState, Reclaim};
use super::rendezvous::Identity;

/// An actor kind the cluster places by identity: made from its id when its
/// first message arrives on its owner. Register it with
/// [`placed!`](crate::placed).
pub trait PlacedActor: Actor + Sized {
    /// The activation of identity `id`.
    fn activate(id: &str) -> Self;

    /// How long an activation may go without a message before it is
    /// passivated (stopped normally, started again by the next message).
    /// `None`: never (the default is 10 minutes).
    fn idle_timeout() -> Option<Duration> {
        Some(Duration::from_secs(600))
    }

    /// The guarantee [`Placements::tell`](super::Placements::tell) sends
    /// this kind's messages with (at-most-once unless overridden).
    fn guarantee() -> Guarantee {
        Guarantee::AtMostOnce
    }
}

/// A gen_server kind the cluster places by identity, so typed calls reach
/// it: `node.call(&ServerRef::<K>::new(placements.actor::<K>(id)), req)`.
/// Register it with [`placed!`](crate::placed) as any kind.
pub trait PlacedServer: GenServer + Sized {
    /// The activation of identity `id`.
    fn activate(id: &str) -> Self;

    /// As [`PlacedActor::idle_timeout`].
    fn idle_timeout() -> Option<Duration> {
        Some(Duration::from_secs(600))
    }

    /// As [`PlacedActor::guarantee`].
    fn guarantee() -> Guarantee {
        Guarantee::AtMostOnce
    }
}

/// A placed kind whose state moves with it: when an activation is handed
/// off (a migration, a drain, a member joining), its state is exported,
/// travels to the new owner with the claim's answer, and the new
/// activation is made from it instead of from its id. Register the kind
/// with `placed!(migrate Type, "name")` (or `placed!(server migrate ...)`).
/// A kind without it starts fresh on its new owner. A state is not kept
/// across a failure: a member that fails takes its activations' states
/// with it (persist what must survive one).
pub trait Migrate: Sized {
    /// The state that travels.
    type State: serde::Serialize + serde::de::DeserializeOwned;

    /// The state to hand off, taken after the last message the old
    /// activation handled and before its `stopped`.
    fn export(&self) -> Self::State;

    /// The activation of identity `id` on its new owner, made from the
    /// state its old owner handed off.
    fn import(id: &str, state: Self::State) -> Self;
}

impl<G: Migrate> Migrate for GenServerActor<G> {
    type State = G::State;

    fn export(&self) -> Self::State {
        self.0.export()
    }

    fn import(id: &str, state: Self::State) -> Self {
        GenServerActor(G::import(id, state))
    }
}

/// Most bytes a handed-off state may take once decoded.
pub const MAX_STATE_MEMORY: usize = 64 * 1024 * 1024;

impl<G: PlacedServer> PlacedActor for GenServerActor<G> {
    fn activate(id: &str) -> Self {
        GenServerActor(G::activate(id))
    }

    fn idle_timeout() -> Option<Duration> {
        G::idle_timeout()
    }

    fn guarantee() -> Guarantee {
        G::guarantee()
    }
}

/// A registered kind (made by [`placed!`](crate::placed); not for direct
/// use).
#[doc(hidden)]
pub struct PlacedKind {
    /// The kind's name in identities.
    pub name: &'static str,
    /// The Rust type, for conflict messages.
    pub type_name: fn() -> &'static str,
    /// Starts an activation of the given id with these options (claimed
    /// through the hooks, if any, before its actor starts).
    pub spawn: fn(&ActorSystem, &str, SpawnOptions, Option<Hooks>) -> Result<Pid, SpawnError>,
    /// The kind's [`PlacedActor::guarantee`].
    pub guarantee: fn() -> Guarantee,
}

/// What an activation needs of its node's placement (made by placement;
/// not for direct use).
#[doc(hidden)]
pub struct Hooks {
    pub(crate) state: Weak<PlacementState>,
    pub(crate) identity: Identity,
}

inventory::collect!(PlacedKind);

/// The registered kind named `name`.
pub fn kind(name: &str) -> Option<&'static PlacedKind> {
    inventory::iter::<PlacedKind>
        .into_iter()
        .find(|k| k.name == name)
}

/// The names of every registered kind, sorted, each once.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = inventory::iter::<PlacedKind>
        .into_iter()
        .map(|k| k.name)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Kinds registered under one name by two types: `(name, type, type)`.
pub fn conflicts() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut seen: Vec<&PlacedKind> = Vec::new();
    let mut out = Vec::new();
    for k in inventory::iter::<PlacedKind> {
        if let Some(o) = seen.iter().find(|o| o.name == k.name) {
            out.push((k.name, (o.type_name)(), (k.type_name)()));
        } else {
            seen.push(k);
        }
    }
    out
}

/// Registers a [`PlacedActor`] kind (or, with `server`, a
/// [`PlacedServer`]) under a name every node uses:
/// `placed!(Counter, "app::Counter")`, `placed!(server Account, "app::Account")`;
/// with `migrate`, a kind that also implements [`Migrate`]:
/// `placed!(migrate Counter, "app::Counter")`, `placed!(server migrate Account, "app::Account")`.
#[macro_export]
macro_rules! placed {
    (server migrate $ty:ty, $name:expr) => {
        $crate::inventory::submit! {
            $crate::cluster::placement::kinds::PlacedKind {
                name: $name,
                type_name: ::std::any::type_name::<$ty>,
                spawn: $crate::cluster::placement::kinds::spawn_migrating::<
                    $crate::gen_server::GenServerActor<$ty>,
                >,
                guarantee: <$ty as $crate::cluster::placement::PlacedServer>::guarantee,
            }
        }
        impl $crate::cluster::placement::kinds::NamedKind for $ty {
            const KIND: &'static str = $name;
        }
    };
    (migrate $ty:ty, $name:expr) => {
        $crate::inventory::submit! {
            $crate::cluster::placement::kinds::PlacedKind {
                name: $name,
                type_name: ::std::any::type_name::<$ty>,
                spawn: $crate::cluster::placement::kinds::spawn_migrating::<$ty>,
                guarantee: <$ty as $crate::cluster::placement::PlacedActor>::guarantee,
            }
        }
        impl $crate::cluster::placement::kinds::NamedKind for $ty {
            const KIND: &'static str = $name;
        }
    };
    (server $ty:ty, $name:expr) => {
        $crate::inventory::submit! {
            $crate::cluster::placement::kinds::PlacedKind {
                name: $name,
                type_name: ::std::any::type_name::<$ty>,
                spawn: $crate::cluster::placement::kinds::spawn_as::<
                    $crate::gen_server::GenServerActor<$ty>,
                >,
                guarantee: <$ty as $crate::cluster::placement::PlacedServer>::guarantee,
            }
        }
        impl $crate::cluster::placement::kinds::NamedKind for $ty {
            const KIND: &'static str = $name;
        }
    };
    ($ty:ty, $name:expr) => {
        $crate::inventory::submit! {
            $crate::cluster::placement::kinds::PlacedKind {
                name: $name,
                type_name: ::std::any::type_name::<$ty>,
                spawn: $crate::cluster::placement::kinds::spawn_as::<$ty>,
                guarantee: <$ty as $crate::cluster::placement::PlacedActor>::guarantee,
            }
        }
        impl $crate::cluster::placement::kinds::NamedKind for $ty {
            const KIND: &'static str = $name;
        }
    };
}

/// A kind's registered name, known from its type (implemented by
/// [`placed!`](crate::placed)).
pub trait NamedKind {
    /// The name.
    const KIND: &'static str;
}

/// Starts an activation of `K` (used by [`placed!`](crate::placed)).
#[doc(hidden)]
pub fn spawn_as<K: PlacedActor>(
    system: &ActorSystem,
    id: &str,
    options: SpawnOptions,
    hooks: Option<Hooks>,
) -> Result<Pid, SpawnError> {
    system.spawn_with(Activation::new(K::activate(id), id, hooks, None), options)
}

/// Starts an activation of `K`, whose state moves with it (used by
/// [`placed!`](crate::placed)).
#[doc(hidden)]
pub fn spawn_migrating<K: PlacedActor + Migrate>(
    system: &ActorSystem,
    id: &str,
    options: SpawnOptions,
    hooks: Option<Hooks>,
) -> Result<Pid, SpawnError> {
    let codec = StateCodec {
        export: |k: &K| {
            let mut out = Vec::new();
            crate::codec::encode_into(&k.export(), &mut out).map_err(|e| e.to_string())?;
            Ok(out)
        },
        import: |id: &str, bytes: &[u8]| {
            crate::codec::decode_exact::<K::State>(bytes, MAX_STATE_MEMORY)
                .map(|state| K::import(id, state))
                .map_err(|e| e.to_string())
        },
    };
    system.spawn_with(
        Activation::new(K::activate(id), id, hooks, Some(codec)),
        options,
    )
}

/// How a [`Migrate`] kind's state is written and read.
struct StateCodec<K> {
    export: fn(&K) -> Result<Vec<u8>, String>,
    import: fn(&str, &[u8]) -> Result<K, String>,
}

/// Where an activation is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Not started: claiming its identity.
    Claiming,
    /// Its actor runs.
    Active,
    /// Handed off: forwarding to the new owner.
    Forwarding(String),
}

/// The wrapper every activation runs in: claim, handoff, passivation on
/// idle.
struct Activation<K> {
    inner: K,
    idle: Option<Duration>,
    /// A message came since the last idle check.
    busy: bool,
    mode: Mode,
    hooks: Option<Hooks>,
    /// The idle check that counts (older ones, from before a handoff or a
    /// second one, are ignored).
    check: u64,
    /// The identity's id.
    id: String,
    /// For a kind whose state moves with it.
    codec: Option<StateCodec<K>>,
    /// Linger periods a forwarder waited for a claim to take its state.
    lingered: u32,
    /// Handoffs with state behind this activation (see [`HandedState`]).
    generation: u64,
    /// Its actor stopped at a handoff (a claim back makes a fresh one).
    handed_off: bool,
}

/// Most linger periods a forwarder waits for a claim to take the state it
/// keeps (then the state is dropped, logged).
const MAX_STATE_LINGERS: u32 = 12;

impl<K: PlacedActor> Activation<K> {
    fn new(inner: K, id: &str, hooks: Option<Hooks>, codec: Option<StateCodec<K>>) -> Self {
        Activation {
            inner,
            idle: K::idle_timeout(),
            busy: false,
            mode: Mode::Claiming,
            hooks,
            check: 0,
            id: id.to_string(),
            codec,
            lingered: 0,
            generation: 0,
            handed_off: false,
        }
    }

    /// The state to hand off, if the kind moves its state.
    fn export(&self) -> Option<HandedState> {
        let codec = self.codec.as_ref()?;
        match (codec.export)(&self.inner) {
            Ok(bytes) => Some(HandedState {
                generation: self.generation,
                bytes,
            }),
            Err(e) => {
                tracing::warn!(id = %self.id, error = %e, "placement: state not exported; the next owner starts fresh");
                None
            }
        }
    }

    /// Wakes the new owner `to` so that it claims the state this
    /// activation keeps soon.
    fn wake(&self, to: &str, ctx: &ActorContext) {
        let Some(h) = &self.hooks else {
            return;
        };
        let wake = Dest::Remote {
            name: super::placements::placed_name(&h.identity),
            node: to.to_string(),
        };
        if let Err(e) = ctx.try_send(wake, super::placements::Wake) {
            tracing::debug!(identity = %h.identity, %to, error = %e, "placement: new owner not woken");
        }
    }

    fn state(&self) -> Option<Arc<PlacementState>> {
        self.hooks.as_ref().and_then(|h| h.state.upgrade())
    }

    fn set_phase(&self, ctx: &ActorContext, phase: Phase) {
        if let (Some(h), Some(s)) = (&self.hooks, self.state()) {
            s.set_phase(&h.identity, ctx.pid(), phase);
        }
    }

    /// Switches to forwarding: what arrives from now on goes to `to`, and
    /// the wrapper leaves once nothing came for [`FORWARD_LINGER`]; keeps
    /// `carried` (the state, and whether a claim has it already) for the
    /// next owner's claim, and wakes it if none has.
    fn forward_to(
        &mut self,
        to: String,
        carried: Option<(HandedState, bool)>,
        ctx: &mut ActorContext,
    ) {
        let wake = carried.as_ref().is_some_and(|(_, taken)| !taken);
        if let (Some(h), Some(s)) = (&self.hooks, self.state()) {
            s.set_forwarding(&h.identity, ctx.pid(), carried);
        }
        if wake {
            self.wake(&to, ctx);
        }
        self.mode = Mode::Forwarding(to);
        self.busy = false;
        self.lingered = 0;
        self.check_after(FORWARD_LINGER, ctx);
    }

    /// Claims the identity, then runs the actor (from the state handed
    /// off, if one came), or forwards to the member that owns it now.
    async fn claim_and_run(&mut self, ctx: &mut ActorContext) {
        let Some(h) = &self.hooks else {
            return self.run(ctx).await;
        };
        let (weak, identity) = (h.state.clone(), h.identity.clone());
        loop {
            match claim(&weak, &identity).await {
                Claimed::Owner(handed) => {
                    let Some(s) = self.state() else {
                        return ctx.stop(ExitReason::custom("placement stopped"));
                    };
                    // This node answered `Free` to another claim meanwhile:
                    // ask again.
                    if !s.begin_active(&identity, ctx.pid()) {
                        continue;
                    }
                    // A forwarder claiming back may keep a state itself.
                    let own = s.take_own_carried(&identity, ctx.pid());
                    let handed = match (handed, own) {
                        (Some(a), Some(b)) => {
                            Some(if a.generation >= b.generation { a } else { b })
                        }
                        (a, b) => a.or(b),
                    };
                    match (handed, &self.codec) {
                        (Some(handed), Some(codec)) => {
                            let decoded = (codec.import)(&self.id, &handed.bytes);
                            s.count_state(decoded.is_ok());
                            self.generation = handed.generation + 1;
                            match decoded {
                                Ok(inner) => self.inner = inner,
                                Err(e) => {
                                    tracing::warn!(%identity, error = %e, "placement: handed-off state undecodable; started fresh");
                                    self.inner = K::activate(&self.id);
                                }
                            }
                        }
                        // The actor of a handoff stopped: a fresh one.
                        _ if self.handed_off => self.inner = K::activate(&self.id),
                        _ => {}
                    }
                    return self.run(ctx).await;
                }
                Claimed::Moved(to, carried) => {
                    return self.forward_to(to, carried.map(|c| (c, false)), ctx);
                }
                Claimed::Refused(reason) => {
                    tracing::debug!(%identity, %reason, "placement: not activated");
                    return ctx.stop(ExitReason::custom(reason));
                }
            }
        }
    }

    /// Runs the actor.
    async fn run(&mut self, ctx: &mut ActorContext) {
        self.mode = Mode::Active;
        self.handed_off = false;
        if let Some(idle) = self.idle {
            self.check_after(idle, ctx);
        }
        self.inner.started(ctx).await;
    }

    /// Schedules the idle check that counts, after `after`.
    fn check_after(&mut self, after: Duration, ctx: &mut ActorContext) {
        self.check += 1;
        ctx.send_after(ctx.pid(), IdleCheck(self.check), after);
    }

    /// Passes `msg` on to the new owner `to`, from its sender.
    fn forward(
        &self,
        to: &str,
        msg: Message,
        ctx: &ActorContext,
    ) -> impl Future<Output = ()> + Send + 'static {
        let target = self.hooks.as_ref().map(|h| {
            (
                h.identity.clone(),
                Dest::Remote {
                    name: super::placements::placed_name(&h.identity),
                    node: to.to_string(),
                },
            )
        });
        if let Some(s) = self.state() {
            s.count_forwarded();
        }
        let (system, from, to) = (ctx.system().clone(), ctx.sender(), to.to_string());
        async move {
            let Some((identity, dest)) = target else {
                return;
            };
            if let Err(e) = system.send_from(from, dest, msg).await {
                tracing::debug!(%identity, %to, error = %e, "placement: forward failed");
            }
        }
    }
}

/// The idle check (local only).
struct IdleCheck(u64);

impl<K: PlacedActor> Actor for Activation<K> {
    async fn started(&mut self, ctx: &mut ActorContext) {
        // Messages that arrive meanwhile wait in the mailbox, in order.
        self.claim_and_run(ctx).await;
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if msg.is::<Reclaim>() {
            if matches!(self.mode, Mode::Forwarding(_)) {
                self.mode = Mode::Claiming;
                self.set_phase(ctx, Phase::Claiming);
                self.claim_and_run(ctx).await;
            }
            return;
        }
        self.handle(msg, ctx).await;
    }

    async fn stopped(&mut self, reason: &ExitReason, ctx: &mut ActorContext) {
        // The actor stops before the entry goes: until then a claim is
        // answered as for a running activation.
        if self.mode == Mode::Active {
            self.inner.stopped(reason, ctx).await;
        }
        if let (Some(h), Some(s)) = (&self.hooks, self.state()) {
            s.forget(&h.identity, ctx.pid());
        }
    }
}

impl<K: PlacedActor> Activation<K> {
    /// A message other than `Reclaim`.
    async fn handle(&mut self, msg: Message, ctx: &mut ActorContext) {
        let msg = match msg.downcast::<IdleCheck>() {
            Ok(c) if c.0 != self.check => return,
            Ok(c) => Box::new(*c) as Message,
            Err(m) => m,
        };
        let msg = match msg.downcast::<HandOff>() {
            Ok(h) => return self.hand_off(*h, ctx).await,
            Err(m) => m,
        };
        if let Mode::Forwarding(to) = &self.mode {
            if msg.is::<IdleCheck>() {
                let carries = self
                    .hooks
                    .as_ref()
                    .zip(self.state())
                    .is_some_and(|(h, s)| s.carries(&h.identity));
                if self.busy || (carries && self.lingered < MAX_STATE_LINGERS) {
                    if !self.busy {
                        self.lingered += 1;
                    }
                    self.busy = false;
                    self.check_after(FORWARD_LINGER, ctx);
                } else {
                    if carries {
                        tracing::warn!(id = %self.id, %to, "placement: no claim took the handed-off state; dropped");
                    }
                    ctx.stop(ExitReason::Normal);
                }
                return;
            }
            self.busy = true;
            let to = to.clone();
            return self.forward(&to, msg, ctx).await;
        }
        if msg.is::<super::placements::Wake>() {
            // An eager activation's wake-up: started, nothing to pass on.
            self.busy = true;
            return;
        }
        if msg.is::<IdleCheck>() {
            // A registered identity is not passivated.
            let registered = self
                .hooks
                .as_ref()
                .zip(self.state())
                .is_some_and(|(h, s)| s.is_registered(&h.identity));
            if self.busy || registered {
                self.busy = false;
                if let Some(idle) = self.idle {
                    self.check_after(idle, ctx);
                }
            } else {
                ctx.stop(ExitReason::Normal);
            }
            return;
        }
        self.busy = true;
        let msg = match msg.downcast::<Reliable>() {
            Ok(r) => return self.handle_reliable(*r, ctx).await,
            Err(m) => m,
        };
        self.inner.handle_message(msg, ctx).await;
    }

    /// A message with a guarantee: handled (unless it is a duplicate the
    /// window knows), then acknowledged to its sender. One that does not
    /// decode is acknowledged too (sending it again would not help),
    /// logged and counted.
    async fn handle_reliable(&mut self, r: Reliable, ctx: &mut ActorContext) {
        let state = self.state();
        let identity = self.hooks.as_ref().map(|h| h.identity.clone());
        let duplicate = r.dedup
            && state
                .as_ref()
                .zip(identity.as_ref())
                .is_some_and(|(s, i)| s.seen(i, &r.sender, r.seq));
        if duplicate {
            if let Some(s) = &state {
                s.count_duplicate();
            }
        } else {
            let decoded = crate::registry::tables()
                .by_wire(r.wire)
                .ok_or_else(|| format!("wire type {:#x} not registered here", r.wire))
                .and_then(|ty| {
                    // Within the node's limit, as the frame that brought it.
                    let max = state
                        .as_ref()
                        .map_or(crate::config::DEFAULT_MAX_MESSAGE_MEMORY, |s| {
                            s.max_message_memory()
                        });
                    (ty.decode)(&r.bytes, max).map_err(|e| e.to_string())
                });
            match decoded {
                Ok(msg) => self.inner.handle_message(msg, ctx).await,
                Err(e) => {
                    if let Some(s) = &state {
                        s.count_undecodable();
                    }
                    tracing::warn!(id = %self.id, error = %e, "placement: a guaranteed message did not decode; acknowledged and dropped");
                }
            }
            if r.dedup {
                if let (Some(s), Some(i)) = (&state, &identity) {
                    s.mark_seen(i, &r.sender, r.seq);
                }
            }
        }
        let ack = Ack {
            session: r.sender.session,
            seq: r.seq,
            by: ctx.node().unwrap_or("").to_string(),
        };
        let to = Dest::Remote {
            name: super::outbox::ACK_SERVER.to_string(),
            node: r.sender.node,
        };
        if let Err(e) = ctx.try_send(to, ack) {
            tracing::debug!(id = %self.id, error = %e, "placement: acknowledgement not sent; the sender sends again");
        }
    }

    /// Hands off to the member that owns the identity now (the one the
    /// `HandOff` names may be stale: it waited in the mailbox while the
    /// view changed); ignored if this node owns it again.
    async fn hand_off(&mut self, h: HandOff, ctx: &mut ActorContext) {
        let HandOff { to, reply } = h;
        let current = match (&self.hooks, self.state()) {
            (Some(hk), Some(s)) => s.owner_of(&hk.identity).ok(),
            _ => Some(to),
        };
        let me = ctx.node().unwrap_or("").to_string();
        let Some(to) = current.filter(|o| *o != me) else {
            if let Some(r) = reply {
                r.reply(ctx.system(), ClaimAnswer::Busy);
            }
            return;
        };
        match self.mode.clone() {
            Mode::Active => {
                let state = self.export();
                let reason = ExitReason::custom(format!("handed off to {to}"));
                self.inner.stopped(&reason, ctx).await;
                self.handed_off = true;
                // A copy is kept also when the answer carries it (it is
                // taken then: no need to wake the new owner).
                let answered = reply.is_some();
                self.forward_to(to, state.clone().map(|s| (s, answered)), ctx);
                if let Some(r) = reply {
                    let answer = match (&self.hooks, self.state()) {
                        (Some(h), Some(s)) => s.handed_answer(&h.identity, state),
                        _ => state.map_or(ClaimAnswer::Free, ClaimAnswer::State),
                    };
                    r.reply(ctx.system(), answer);
                }
            }
            Mode::Forwarding(_) => {
                // Pointed at the newest owner; a claim gets the state kept.
                self.mode = Mode::Forwarding(to);
                if let Some(r) = reply {
                    let answer = match (&self.hooks, self.state()) {
                        (Some(h), Some(s)) => {
                            let kept = s.take_carried(&h.identity, ctx.pid());
                            s.handed_answer(&h.identity, kept)
                        }
                        _ => ClaimAnswer::Free,
                    };
                    r.reply(ctx.system(), answer);
                }
            }
            // A claim under way finds the owner itself.
            Mode::Claiming => {
                if let Some(r) = reply {
                    r.reply(ctx.system(), ClaimAnswer::Busy);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quick;
    impl Actor for Quick {
        async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
    }
    impl PlacedActor for Quick {
        fn activate(_id: &str) -> Self {
            Quick
        }
        fn idle_timeout() -> Option<Duration> {
            Some(Duration::from_millis(100))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_activation_passivates_after_its_idle_time_without_a_message() {
        let system = ActorSystem::new();
        let pid = spawn_as::<Quick>(&system, "q1", SpawnOptions::new(), None).unwrap();
        // Busy: a message every 60 ms keeps it for a second.
        for _ in 0..16 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            system.send(pid, "hit").await.unwrap();
        }
        assert!(system.is_alive(pid));
        // Idle: gone within two idle periods.
        tokio::time::sleep(Duration::from_millis(250)).await;
        for _ in 0..100 {
            if !system.is_alive(pid) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!system.is_alive(pid));
        system.shutdown().await;
    }
}
