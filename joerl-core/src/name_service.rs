//! The seam for cluster-wide addresses: [`Dest::Global`] and [`Dest::Group`]
//! are looked up in the node's [`NameService`], which the cluster layer
//! (joerl-dist's `cluster::global` and `cluster::pg`) installs, as the
//! [`Router`](crate::Router) is the seam for other nodes' Pids.
//!
//! [`Dest::Global`]: crate::Dest::Global
//! [`Dest::Group`]: crate::Dest::Group

use crate::{GroupDest, Message, Pid, SendError};

/// Looks cluster-wide addresses up, without waiting: from a view the
/// cluster layer keeps in memory.
pub trait NameService: Send + Sync + 'static {
    /// The process registered in the whole cluster as `name` now.
    fn whereis_global(&self, name: &str) -> Result<Option<Pid>, SendError>;

    /// The members a message to `dest` goes to now: every member for
    /// [`Pick::All`](crate::Pick::All), else the one picked. Empty when the
    /// group has no member; an error when the scope does not run here.
    fn group_targets(&self, dest: &GroupDest) -> Result<Vec<Pid>, SendError>;

    /// A copy of `msg`, for the second and later members of a group send;
    /// `None` if the message's type cannot be copied.
    fn copy_message(&self, msg: &Message) -> Option<Message>;
}
