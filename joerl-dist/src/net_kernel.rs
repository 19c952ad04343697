//! The net kernel: a small gen_server every node runs, registered as
//! [`NET_KERNEL_NAME`], answering name look-ups for other nodes
//! (`whereis_remote`), which reach it by name like any named server.

use joerl_core::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request};
use joerl_core::{ActorContext, Pid};
use serde::{Deserialize, Serialize};

/// The name the net kernel is registered under.
pub const NET_KERNEL_NAME: &str = "net_kernel";

/// Asks a node's net kernel for the Pid registered under a name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhereIs(pub String);
crate::remote_message!(WhereIs, "joerl::WhereIs");

/// The net kernel's answer to [`WhereIs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhereIsReply(pub Option<Pid>);
crate::remote_message!(WhereIsReply, "joerl::WhereIsReply");

/// The net kernel server.
pub(crate) struct NetKernel;

impl GenServer for NetKernel {
    type Calls = (WhereIs,);
    type Casts = ();
}

impl Request for WhereIs {
    type Reply = WhereIsReply;
}

impl HandleCall<WhereIs> for NetKernel {
    async fn handle_call(
        &mut self,
        req: WhereIs,
        _from: ReplyTo<WhereIsReply>,
        ctx: &mut ActorContext,
    ) -> CallResponse<WhereIsReply> {
        CallResponse::Reply(WhereIsReply(ctx.system().whereis(&req.0)))
    }
}
