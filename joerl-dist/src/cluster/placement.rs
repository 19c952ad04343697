//! Cluster placement (Cajun's cluster mode, Orleans' and Akka Cluster
//! Sharding's idea): actors addressed by identity `(kind, id)`, placed on
//! one member by [`rendezvous`] hashing, with a [`leader`] that coordinates
//! moves and [`breaker`]s for the sends to placed actors.
//!
//! Built so far: placed kinds registered at compile time ([`kinds`],
//! [`placed!`](crate::placed)), routing and activation on the owner with
//! idle passivation ([`placements`]: [`start`], [`Placements`],
//! [`PlacedRef`] is a `Dest`), the placement function and its seam, the
//! leader election as a state machine and its seam, circuit breakers and
//! retries, the [`handoff`] that keeps one activation per identity while
//! views differ (with the state of [`Migrate`] kinds), and the leader's
//! [`directives`] (drain, migrate, registered identities) replicated to
//! every member by [`coordinate`], [`delivery`] guarantees
//! (at-least-once, exactly-once) driven by each node's [`outbox`], and the
//! [`locator`] that lets sends by identity go by the activation's Pid.

pub mod breaker;
pub mod coordinate;
pub mod delivery;
pub mod directives;
pub mod elector;
pub mod handoff;
pub mod kinds;
pub mod leader;
pub mod locator;
pub mod outbox;
pub mod placements;
pub mod rendezvous;
pub mod stored;
pub mod view;

pub use breaker::{
    BreakerConfig, BreakerError, BreakerState, Breakers, CircuitBreaker, CircuitOpen, RetryPolicy,
};
pub use delivery::{DeliveryError, Guarantee};
pub use directives::{DirectiveError, Table};
pub use elector::{EmbeddedLeader, LEADER_SERVER};
pub use kinds::{Migrate, PlacedActor, PlacedServer};
pub use leader::{Election, ElectionEffect, Leader, LeaderElection};
pub use outbox::OutboxStats;
pub use placements::{
    CommandError, PlacedRef, PlacementError, PlacementOptions, Placements, start, start_configured,
    start_with, start_with_options, start_with_store,
};
pub use rendezvous::{Candidate, Identity, LeastLoaded, Placement, PreferLocal, Rendezvous};
pub use stored::{StorePlacement, StorePlacementError, StorePlacementOptions, StorePlacementStats};
